// Server-Sent Events over fetch(): unlike EventSource it can send `Authorization: Bearer`, so a
// token never has to go in the URL. The parser follows the WHATWG event-stream interpretation
// rules (any line ending, BOM, comments, `data` joined with LF, `id` without NUL, digit-only
// `retry`).

/** Incremental event-stream parser: feed it decoded text, get events through `onEvent`. */
export class SseParser {
  constructor(onEvent, onRetry = () => {}, onComment = () => {}) {
    this.onEvent = onEvent;
    this.onRetry = onRetry;
    this.onComment = onComment;
    this.buf = "";
    this.first = true;
    this.skipLf = false;
    this.data = [];
    this.type = "";
    this.lastId = "";
  }

  /** Parses a chunk of text; an incomplete last line waits for the next chunk. */
  feed(text) {
    if (this.first && text.length > 0) {
      this.first = false;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    let s = this.buf + text;
    let start = 0;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c === 10 && this.skipLf && i === start) {
        // The LF of a CRLF split across chunks.
        this.skipLf = false;
        start = i + 1;
        continue;
      }
      this.skipLf = false;
      if (c === 10 || c === 13) {
        this.line(s.slice(start, i));
        if (c === 13) {
          if (i + 1 < s.length) {
            if (s.charCodeAt(i + 1) === 10) i++;
          } else {
            this.skipLf = true;
          }
        }
        start = i + 1;
      }
    }
    this.buf = s.slice(start);
  }

  line(line) {
    if (line === "") return this.dispatch();
    if (line.charCodeAt(0) === 58) return this.onComment(line.slice(1));
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    switch (field) {
      case "event": this.type = value; break;
      case "data": this.data.push(value); break;
      case "id": if (!value.includes("\0")) this.lastId = value; break;
      case "retry": if (/^[0-9]+$/.test(value)) this.onRetry(Number(value)); break;
      default: break;
    }
  }

  dispatch() {
    if (this.data.length === 0) {
      this.type = "";
      return;
    }
    const event = { type: this.type || "message", data: this.data.join("\n"), id: this.lastId };
    this.data = [];
    this.type = "";
    this.onEvent(event);
  }
}

/**
 * Keeps one subscription open, reconnecting after the server's `retry:` delay with
 * `Last-Event-ID`, as EventSource would. An HTTP error status ends it (no retry), like
 * EventSource's "fail the connection".
 */
export class Subscription {
  /**
   * @param {object} o
   * @param {string} o.url           `../events?topic=…`
   * @param {() => string} o.token   the bearer token to send ("" for none)
   * @param {string} o.lastEventId   resume point for the first request ("" for none)
   * @param {(e: object) => void} o.onEvent
   * @param {(state: string, detail?: string) => void} o.onState
   */
  constructor(o) {
    this.o = o;
    this.lastId = o.lastEventId || "";
    this.retryMs = 3000;
    this.stopped = false;
    this.abort = null;
    this.timer = 0;
    this.run();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.abort) this.abort.abort();
    this.o.onState("stopped");
  }

  async run() {
    const o = this.o;
    this.abort = new AbortController();
    const headers = { Accept: "text/event-stream" };
    const token = o.token();
    if (token) headers.Authorization = "Bearer " + token;
    if (this.lastId) headers["Last-Event-ID"] = this.lastId;
    o.onState("connecting");
    let res;
    try {
      res = await fetch(o.url, { headers, signal: this.abort.signal, cache: "no-store" });
    } catch (err) {
      return this.retryLater(err);
    }
    if (!res.ok) {
      this.stopped = true;
      o.onState("failed", await errorText(res));
      return;
    }
    o.onState("open");
    const parser = new SseParser(
      (e) => {
        // As EventSource: the last id seen (possibly "") is what a reconnect resumes from.
        this.lastId = e.id;
        o.onEvent(e);
      },
      (ms) => { this.retryMs = ms; },
    );
    const reader = res.body.getReader();
    const decoder = new TextDecoder("utf-8");
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.feed(decoder.decode(value, { stream: true }));
      }
      parser.feed(decoder.decode());
    } catch (err) {
      return this.retryLater(err);
    }
    this.retryLater(null);
  }

  retryLater(err) {
    if (this.stopped) return;
    const why = err ? String(err.message || err) : "stream ended";
    this.o.onState("reconnecting", `${why}; retrying in ${this.retryMs} ms`);
    this.timer = setTimeout(() => this.run(), this.retryMs);
  }
}

/** "401 Unauthorized: missing or invalid bearer token" from an error response. */
export async function errorText(res) {
  let message = "";
  try {
    const body = await res.json();
    message = body && body.error ? String(body.error) : "";
  } catch {
    // Not JSON: the status says enough.
  }
  const head = `${res.status} ${res.statusText}`.trim();
  return message ? `${head}: ${message}` : head;
}
