// The Server section: polls ../stats once a second, turns counter deltas into per-second rates
// (over the server's own uptime clock), and fills the charts and tables. Nothing is pushed by
// the server, so a closed console costs it nothing.

import { Chart, seriesColor } from "./chart.js";
import { errorText } from "./sse.js";

const POLL_MS = 1000;
const KINDS = ["http", "sse", "frames"];

export function formatCount(v) {
  if (v >= 1e9) return (v / 1e9).toFixed(v >= 1e10 ? 0 : 1) + " G";
  if (v >= 1e6) return (v / 1e6).toFixed(v >= 1e7 ? 0 : 1) + " M";
  if (v >= 1e4) return (v / 1e3).toFixed(0) + " k";
  if (v >= 100 || Number.isInteger(v)) return String(Math.round(v));
  return v.toFixed(1);
}

export function formatBytes(v) {
  // Decimal units, so that the charts' round axis values read as round numbers.
  const units = ["B", "kB", "MB", "GB"];
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return (i === 0 || v >= 100 ? Math.round(v) : v.toFixed(1)) + " " + units[i];
}

export function formatUptime(ms) {
  let s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  const parts = [];
  if (d) parts.push(d + " d");
  if (d || h) parts.push(h + " h");
  if (d || h || m) parts.push(m + " min");
  parts.push(s + " s");
  return parts.join(" ");
}

function setText(id, text) {
  document.getElementById(id).textContent = text;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.append(td);
}

/** Fills a table body with one row per item, or one "empty" row. */
function fillTable(selector, items, columns, emptyText, fill) {
  const body = document.querySelector(selector);
  const rows = items.map((item) => {
    const tr = document.createElement("tr");
    tr.dataset.topic = item.name;
    fill(tr, item);
    return tr;
  });
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = columns;
    td.className = "empty";
    td.textContent = emptyText;
    tr.append(td);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}

/** A configuration value for people: sizes in binary units, durations in their unit. */
export function configValue(key, value) {
  if (typeof value === "number") {
    if (key.endsWith("_bytes") || key === "max_body" || key === "max_frame") {
      return formatBinaryBytes(value);
    }
    if (key.endsWith("_ms")) return value >= 1000 ? `${value / 1000} s` : `${value} ms`;
    return formatCount(value);
  }
  return String(value);
}

/** Bytes in binary units (KiB, MiB, GiB), as the options take them. */
export function formatBinaryBytes(v) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return (i === 0 || Number.isInteger(v) ? String(v) : v.toFixed(1)) + " " + units[i];
}

/** One chart card: the chart plus its value label. */
class Card {
  constructor(id, series, format, unit) {
    this.fig = document.getElementById(id);
    this.value = this.fig.querySelector(".value");
    this.chart = new Chart(this.fig.querySelector("canvas"), series, format);
    this.format = format;
    this.unit = unit;
    const legend = this.fig.querySelector(".legend");
    if (legend) {
      series.forEach((name, i) => {
        const li = document.createElement("li");
        li.className = "s" + i;
        li.textContent = name;
        li.title = seriesColor(i);
        legend.append(li);
      });
    }
  }

  push(t, values, label) {
    this.chart.push(t, values);
    this.value.textContent = label;
    this.value.dataset.value = String(values.reduce((a, b) => a + b, 0));
  }

  reset() {
    this.chart.reset();
    this.value.textContent = "—";
    delete this.value.dataset.value;
  }
}

export class ServerView {
  /**
   * @param {() => string} token   bearer token for ../stats ("" for none)
   * @param {(state: string, detail?: string, status?: number) => void} onState
   *        live | locked | offline; locked comes with the refusal's text and status (401, 403)
   */
  constructor(token, onState) {
    this.token = token;
    this.onState = onState;
    this.prev = null;
    this.timer = 0;
    this.polling = false;
    const rate = (v) => formatCount(v);
    this.cards = {
      connections: new Card("chart-connections", KINDS, formatCount),
      deliveries: new Card("chart-deliveries", ["deliveries/s"], rate),
      publishes: new Card("chart-publishes", ["publishes/s"], rate),
      bytes: new Card("chart-bytes", ["bytes/s"], formatBytes),
      slow: new Card("chart-slow", ["slow-consumer closes/s"], rate),
      resets: new Card("chart-resets", ["resume resets/s"], rate),
    };
  }

  /** Starts (or restarts, after a token change) polling. */
  start() {
    clearTimeout(this.timer);
    this.polling = true;
    // An answer to a request made with the previous token must not overwrite the new state.
    this.generation = (this.generation || 0) + 1;
    this.poll();
  }

  async poll() {
    const generation = this.generation;
    const headers = {};
    const token = this.token();
    if (token) headers.Authorization = "Bearer " + token;
    let res;
    try {
      // The first document after a (re)start carries the server's last minutes of samples, so
      // the charts are not empty when the page opens mid-incident.
      const samples = this.prev ? "" : "&samples=1";
      res = await fetch("../stats?topics=20" + samples, { headers, cache: "no-store" });
    } catch (err) {
      if (generation !== this.generation) return;
      this.onState("offline", String(err.message || err));
      return this.next();
    }
    if (generation !== this.generation) return;
    if (res.status === 401 || res.status === 403) {
      // Show nothing and stop asking until a token is entered (one refusal, not one a second).
      // 403: a valid token that does not grant the figures (a JWT without the admin claim).
      this.clear();
      this.polling = false;
      this.onState("locked", await errorText(res), res.status);
      return;
    }
    if (!res.ok) {
      this.onState("offline", await errorText(res));
      return this.next();
    }
    let doc;
    try {
      doc = await res.json();
    } catch (err) {
      this.onState("offline", "bad stats document: " + (err.message || err));
      return this.next();
    }
    this.update(doc);
    this.onState("live");
    this.next();
  }

  next() {
    if (!this.polling) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.poll(), POLL_MS);
  }

  update(doc) {
    const prev = this.prev;
    if (prev && (prev.run !== doc.run || doc.uptime_ms < prev.uptime_ms)) {
      // Another run of the server: its counters started again from zero.
      for (const card of Object.values(this.cards)) card.reset();
      this.prev = null;
    }
    if (!this.prev && Array.isArray(doc.samples)) this.replay(doc.samples);
    setText("version", doc.version);
    setText("run", doc.run);
    setText("uptime", formatUptime(doc.uptime_ms));
    const t = doc.uptime_ms / 1000;
    const conns = KINDS.map((k) => doc.connections[k] || 0);
    this.cards.connections.push(
      t,
      conns,
      KINDS.map((k, i) => `${k} ${conns[i]}`).join(" · "),
    );
    if (this.prev) {
      const p = this.prev;
      const dt = (doc.uptime_ms - p.uptime_ms) / 1000;
      if (dt > 0) {
        const r = (name) => Math.max(0, (doc.counters[name] - p.counters[name]) / dt);
        const c = this.cards;
        const d = r("deliveries");
        const pub = r("published");
        const b = r("bytes_written");
        const slow = r("slow_consumer_closes");
        const resets = r("resume_resets");
        c.deliveries.push(t, [d], formatCount(d) + "/s");
        c.publishes.push(t, [pub], formatCount(pub) + "/s");
        c.bytes.push(t, [b], formatBytes(b) + "/s");
        c.slow.push(t, [slow], `${formatCount(slow)}/s · ${doc.counters.slow_consumer_closes} total`);
        c.resets.push(t, [resets], `${formatCount(resets)}/s · ${doc.counters.resume_resets} total`);
      }
    }
    this.prev = doc;
    this.fillTopics(doc.topics);
    this.fillConfig(doc.config);
  }

  /**
   * Draws the server's recent samples ([uptime_ms, http, sse, frames, deliveries, published,
   * bytes_written, slow_consumer_closes, resume_resets], oldest first) as if they had been polled.
   */
  replay(samples) {
    let p = null;
    for (const s of samples) {
      const t = s[0] / 1000;
      this.cards.connections.push(t, [s[1], s[2], s[3]], "");
      if (p) {
        const dt = (s[0] - p[0]) / 1000;
        if (dt > 0) {
          const r = (i) => Math.max(0, (s[i] - p[i]) / dt);
          this.cards.deliveries.push(t, [r(4)], "");
          this.cards.publishes.push(t, [r(5)], "");
          this.cards.bytes.push(t, [r(6)], "");
          this.cards.slow.push(t, [r(7)], "");
          this.cards.resets.push(t, [r(8)], "");
        }
      }
      p = s;
    }
  }

  fillTopics(all) {
    // Patterns keep no history of their own (they replay their topics'): they are listed apart,
    // with their subscribers only, so that nothing is counted twice.
    const topics = all.filter((t) => !t.name.endsWith("*")).slice(0, 10);
    const patterns = all.filter((t) => t.name.endsWith("*"));
    fillTable("#topics tbody", topics, 4, "no topics yet", (tr, t) => {
      cell(tr, t.name, "name");
      cell(tr, formatCount(t.subscribers), "num subscribers");
      cell(tr, formatCount(t.retained_events), "num");
      cell(tr, formatBytes(t.retained_bytes), "num");
    });
    fillTable("#patterns tbody", patterns, 2, "no pattern subscriptions", (tr, t) => {
      cell(tr, t.name, "name");
      cell(tr, formatCount(t.subscribers), "num subscribers");
    });
  }

  fillConfig(config) {
    const items = Object.entries(config).map(([key, value]) => {
      const div = document.createElement("div");
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = key;
      dd.textContent = value === null ? "not set" : configValue(key, value);
      dd.title = dd.textContent;
      div.append(dt, dd);
      return div;
    });
    document.getElementById("config").replaceChildren(...items);
  }

  /** Hides every figure (no token yet, or a wrong one). */
  clear() {
    for (const card of Object.values(this.cards)) card.reset();
    this.prev = null;
    for (const id of ["version", "run", "uptime"]) setText(id, "—");
    document.querySelector("#topics tbody").replaceChildren();
    document.querySelector("#patterns tbody").replaceChildren();
    document.getElementById("config").replaceChildren();
  }
}
