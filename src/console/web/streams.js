// Subscription panels: each one is an independent stream with its own log, side by side.

import { Subscription } from "./sse.js";

/** Entries kept in a panel's log (older ones are dropped from view, still counted). */
const MAX_ROWS = 500;
/** Events held while a panel is paused; past it the oldest held are dropped (and said so). */
const MAX_HELD = 5000;
/** Data longer than this, or with more lines, is folded behind its first line. */
const FOLD_CHARS = 400;
const FOLD_LINES = 8;

/** Splits "a, b c" into topic names. */
export function parseTopics(text) {
  return text.split(/[\s,]+/).filter((t) => t.length > 0);
}

function clock(date) {
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The rendered data of one event: intact, folded when long. */
function dataNode(data) {
  const lines = data.split("\n");
  if (data.length <= FOLD_CHARS && lines.length <= FOLD_LINES) {
    return el("pre", "data", data);
  }
  const details = el("details", "data folded");
  const first = lines[0].length > 200 ? lines[0].slice(0, 200) : lines[0];
  const summary = el("summary");
  const shape = lines.length === 1 ? `${data.length} chars` : `${lines.length} lines, ${data.length} chars`;
  summary.append(el("span", "preview", first), el("span", "size", `folded: ${shape}`));
  details.append(summary, el("pre", "data", data));
  return details;
}

/**
 * An event of a `topic_line=1` stream: its first data line names its topics (space-separated),
 * the rest is the payload as published.
 */
function splitTopics(data) {
  const at = data.indexOf("\n");
  return at < 0 ? { topics: data, data: "" } : { topics: data.slice(0, at), data: data.slice(at + 1) };
}

function resetReason(data) {
  try {
    return JSON.parse(data).reason || "unknown";
  } catch {
    return "unknown";
  }
}

class Panel {
  constructor(root, token, onClose) {
    this.root = root;
    this.token = token;
    this.onClose = onClose;
    this.sub = null;
    this.count = 0;
    this.paused = false;
    this.held = [];
    this.dropped = 0;
    this.form = root.querySelector(".sub-form");
    this.log = root.querySelector(".log");
    this.state = root.querySelector(".state");
    this.countEl = root.querySelector(".count");
    this.pauseBtn = root.querySelector(".pause");
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (this.sub) this.stop();
      else this.start();
    });
    this.pauseBtn.addEventListener("click", () => this.togglePause());
    root.querySelector(".clear").addEventListener("click", () => this.clear());
    root.querySelector(".close").addEventListener("click", () => {
      this.stop();
      this.root.remove();
      this.onClose(this);
    });
  }

  start() {
    const topics = parseTopics(this.form.elements.topics.value);
    if (topics.length === 0) return this.setState("failed", "name at least one topic");
    // topic_line=1: each event names its topic, which a pattern or several topics need.
    const query = topics.map((t) => "topic=" + encodeURIComponent(t)).join("&") + "&topic_line=1";
    this.form.elements.topics.disabled = true;
    this.form.elements["last-event-id"].disabled = true;
    this.form.querySelector(".subscribe").textContent = "Stop";
    this.pauseBtn.disabled = false;
    this.sub = new Subscription({
      url: "../events?" + query,
      token: this.token,
      lastEventId: this.form.elements["last-event-id"].value.trim(),
      onEvent: (e) => this.receive(e),
      onState: (state, detail) => {
        this.setState(state, detail);
        if (state === "failed") this.stopped();
      },
    });
  }

  stop() {
    if (this.sub) this.sub.stop();
    this.stopped();
  }

  /** Back to an editable form (after Stop, or when the server refused the stream). */
  stopped() {
    this.sub = null;
    this.form.elements.topics.disabled = false;
    this.form.elements["last-event-id"].disabled = false;
    this.form.querySelector(".subscribe").textContent = "Subscribe";
  }

  setState(state, detail) {
    this.state.textContent = detail ? `${state}: ${detail}` : state;
    this.state.dataset.state = state;
  }

  receive(event) {
    const entry = { at: new Date(), event };
    this.count++;
    this.showCount();
    if (this.paused) {
      this.held.push(entry);
      if (this.held.length > MAX_HELD) {
        this.held.shift();
        this.dropped++;
      }
      return;
    }
    this.render(entry);
  }

  render({ at, event }) {
    const row = el("li");
    const meta = el("div", "meta");
    meta.append(el("time", "at", clock(at)), el("span", "id", event.id || "(no id)"));
    if (event.type === "sseloop-reset") {
      // The server's notice that events were missed before the replay that follows.
      const reason = resetReason(event.data);
      row.className = "reset";
      meta.append(el("span", "type", "reset"));
      row.append(meta, el("p", "reset-text", `Events were missed (${reason}): the retained events follow.`));
    } else {
      row.className = "event";
      const { topics, data } = splitTopics(event.data);
      meta.append(el("span", "topic", topics), el("span", "type", event.type));
      row.append(meta, dataNode(data));
    }
    this.log.prepend(row);
    while (this.log.childElementCount > MAX_ROWS) this.log.lastElementChild.remove();
  }

  togglePause() {
    this.paused = !this.paused;
    this.pauseBtn.textContent = this.paused ? "Resume" : "Pause";
    this.root.classList.toggle("paused", this.paused);
    if (!this.paused) {
      if (this.dropped > 0) {
        this.log.prepend(el("li", "gap", `${this.dropped} events received while paused are not shown`));
      }
      for (const entry of this.held) this.render(entry);
      this.held = [];
      this.dropped = 0;
    }
    this.showCount();
  }

  clear() {
    this.log.replaceChildren();
    this.count = 0;
    this.held = [];
    this.dropped = 0;
    this.showCount();
  }

  showCount() {
    const held = this.paused ? ` (${this.held.length + this.dropped} held)` : "";
    this.countEl.textContent = `${this.count} event${this.count === 1 ? "" : "s"}${held}`;
    this.countEl.dataset.count = String(this.count);
  }
}

/** Sets up the "add subscription" button and the first panel. */
export function initStreams(token) {
  const container = document.getElementById("panels");
  const template = document.getElementById("panel-template");
  const panels = new Set();
  const add = () => {
    const root = template.content.firstElementChild.cloneNode(true);
    container.append(root);
    panels.add(new Panel(root, token, (p) => panels.delete(p)));
    root.querySelector("input[name=topics]").focus();
  };
  document.getElementById("add-panel").addEventListener("click", add);
  add();
  return {
    /** Restarts every open stream (the token changed). */
    restartAll() {
      for (const p of panels) {
        if (p.sub) {
          p.stop();
          p.start();
        }
      }
    },
  };
}
