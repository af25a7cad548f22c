// The console's event-stream parser (src/console/web/sse.js), fed every way a network can split
// a stream. Run by tests/console.rs with `node --test` (no browser needed).

import test from "node:test";
import assert from "node:assert/strict";
import { SseParser } from "../../src/console/web/sse.js";

function parse(chunks) {
  const events = [];
  const retries = [];
  const comments = [];
  const p = new SseParser((e) => events.push(e), (ms) => retries.push(ms), (c) => comments.push(c));
  for (const c of chunks) p.feed(c);
  return { events, retries, comments };
}

/** Every split of `text` into two chunks gives the same result as the whole. */
function splitsAgree(text) {
  const whole = parse([text]);
  for (let i = 0; i <= text.length; i++) {
    assert.deepEqual(parse([text.slice(0, i), text.slice(i)]), whole, `split at ${i}`);
  }
  return whole;
}

test("fields, multi-line data, default type, comments, retry", () => {
  const { events, retries, comments } = splitsAgree(
    "retry: 3000\n\n: heartbeat\nid: r-1\nevent: headline\ndata: one\ndata:two\ndata:  three\n\n" +
      "id: r-2\ndata: plain\n\n",
  );
  assert.deepEqual(retries, [3000]);
  assert.deepEqual(comments, [" heartbeat"]);
  assert.deepEqual(events, [
    { type: "headline", data: "one\ntwo\n three", id: "r-1" },
    { type: "message", data: "plain", id: "r-2" },
  ]);
});

test("CRLF and CR line endings, also split between chunks", () => {
  const crlf = splitsAgree("id: a\r\ndata: x\r\ndata: y\r\n\r\n");
  assert.deepEqual(crlf.events, [{ type: "message", data: "x\ny", id: "a" }]);
  const cr = splitsAgree("data: x\rdata: y\r\r");
  assert.deepEqual(cr.events, [{ type: "message", data: "x\ny", id: "" }]);
});

test("the id persists to later events; an id with NUL is ignored; empty data dispatches", () => {
  const { events } = parse(["id: 7\ndata: a\n\ndata: b\n\nid: 8\0\ndata: c\n\ndata\n\n"]);
  assert.deepEqual(events.map((e) => e.id), ["7", "7", "7", "7"]);
  assert.equal(events[3].data, "");
});

test("a leading BOM is dropped; an event without its blank line is not dispatched", () => {
  const { events } = parse(["\ufeffdata: a\n\n", "data: unfinished\n"]);
  assert.deepEqual(events, [{ type: "message", data: "a", id: "" }]);
});

test("non-digit retry is ignored; unknown fields are ignored", () => {
  const { events, retries } = parse(["retry: 3s\nretry: -1\nfoo: bar\ndata: z\n\n"]);
  assert.deepEqual(retries, []);
  assert.equal(events.length, 1);
});

test("reset notices arrive as their own event type", () => {
  const { events } = parse(['id: run-4\nevent: sseloop-reset\ndata: {"reason":"expired"}\n\n']);
  assert.equal(events[0].type, "sseloop-reset");
  assert.equal(JSON.parse(events[0].data).reason, "expired");
});
