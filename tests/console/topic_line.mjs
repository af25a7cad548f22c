// Browser test of the SSE topic line (`GET /events?…&topic_line=1`), run by tests/console.rs
// against a real sseloop process: a plain `EventSource` in Debian's chromium (playwright-core),
// no library. The page splits `e.data` at its first line break and reports each event's topic.
//
// Environment (set by tests/console.rs):
//   SSELOOP_URL   a server with default options
//   CHROMIUM      the browser binary (/usr/bin/chromium)

import assert from "node:assert/strict";
import { ok, runChecks } from "./run.mjs";

const BASE = process.env.SSELOOP_URL;
const TIMEOUT = 15_000;

/** Opens named EventSources in the page; each collects what a page would read of its events. */
function openStreams(page, streams) {
  return page.evaluate(
    (streams) =>
      Promise.all(
        Object.entries(streams).map(
          ([name, url]) =>
            new Promise((resolve, reject) => {
              window.got = window.got || {};
              const got = (window.got[name] = []);
              const source = new EventSource(url);
              const take = (e) => {
                const at = e.data.indexOf("\n");
                got.push({
                  type: e.type,
                  id: e.lastEventId,
                  topic: at < 0 ? null : e.data.slice(0, at),
                  data: at < 0 ? e.data : e.data.slice(at + 1),
                  raw: e.data,
                });
              };
              source.onmessage = take;
              source.addEventListener("kind", take);
              source.addEventListener("sseloop-reset", take);
              source.onopen = () => resolve();
              source.onerror = () => reject(new Error(`EventSource ${url} failed`));
            }),
        ),
      ),
    streams,
  );
}

/** Publishes from the page (same origin); returns the id. */
function publish(page, query, data) {
  return page.evaluate(
    async ([query, data]) => {
      const res = await fetch(`/publish?${query}`, { method: "POST", body: data });
      return (await res.json()).id;
    },
    [query, data],
  );
}

/** Waits until stream `name` has `n` events; returns them. */
async function events(page, name, n) {
  await page.waitForFunction(([name, n]) => (window.got[name] || []).length >= n, [name, n], {
    timeout: TIMEOUT,
  });
  return page.evaluate((name) => window.got[name], name);
}

async function topicLineChecks(browser) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${BASE}/healthz`);
  await openStreams(page, {
    pattern: "/events?topic=news/*&topic_line=1",
    several: "/events?topic=news/a&topic=news/b&topic_line=1",
    plain: "/events?topic=news/*",
  });
  const a = await publish(page, "topic=news/a", "one");
  const b = await publish(page, "topic=news/b&event=kind", "two\nlines");
  await publish(page, "topic=sport", "not for them");
  const both = await publish(page, "topic=news/a&topic=news/b", "both");
  const want = [
    { id: a, topic: "news/a", data: "one" },
    { id: b, topic: "news/b", data: "two\nlines" },
    { id: both, topic: "news/a news/b", data: "both" },
  ];
  const shape = (list) => list.map(({ id, topic, data }) => ({ id, topic, data }));
  assert.deepEqual(shape(await events(page, "pattern", 3)), want, "topic=news/* with topic_line");
  ok("an EventSource on a pattern with topic_line=1 reads each event's topic from its first data line");
  assert.deepEqual(shape(await events(page, "several", 3)), want, "two topics with topic_line");
  ok("a multi-topic EventSource reads the topics the same way");
  const plain = await events(page, "plain", 3);
  assert.deepEqual(
    plain.map((e) => e.raw),
    ["one", "two\nlines", "both"],
    "without topic_line the data is the payload alone",
  );
  ok("an EventSource without topic_line gets the payload alone, as before");

  // Resume from the first id (query parameter: EventSource cannot set headers), then a reset.
  await openStreams(page, {
    resumed: `/events?topic=news/*&topic_line=1&lastEventId=${encodeURIComponent(a)}`,
    foreign: "/events?topic=news/*&topic_line=1&lastEventId=elsewhere-1",
  });
  assert.deepEqual(shape(await events(page, "resumed", 2)), want.slice(1), "resume replays with topics");
  const foreign = await events(page, "foreign", 4);
  assert.equal(foreign[0].type, "sseloop-reset");
  assert.equal(JSON.parse(foreign[0].raw).reason, "unknown", "the reset notice's data is unchanged");
  assert.deepEqual(shape(foreign.slice(1)), want, "replay after the reset names topics");
  ok("a resumed EventSource replays with topic lines; the reset notice keeps its JSON data");
  await context.close();
}

await runChecks(topicLineChecks);
