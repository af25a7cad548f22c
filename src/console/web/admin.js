// The Connections and Topic sections: the server API (../api/v1/, docs/API.md) with the page's
// token. Nothing is polled until a section is used; the topic's presence is then polled every
// two seconds while it is shown.

import { formatBinaryBytes } from "./server.js";
import { errorText } from "./sse.js";

const PRESENCE_MS = 2000;

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.append(td);
  return td;
}

function formatAge(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

/** A fetch of the API with the page's token; resolves to [status, body or error text]. */
async function api(token, method, path) {
  const headers = {};
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  let res;
  try {
    res = await fetch("../api/v1/" + path, { method, headers, cache: "no-store" });
  } catch (err) {
    return [0, "request failed: " + (err.message || err)];
  }
  if (!res.ok) return [res.status, await errorText(res)];
  return [res.status, await res.json()];
}

function query(params) {
  return Object.entries(params)
    .filter(([, v]) => v !== "" && v !== null && v !== undefined)
    .map(([k, v]) => k + "=" + encodeURIComponent(v))
    .join("&");
}

export class ConnectionsView {
  constructor(token) {
    this.token = token;
    this.form = document.getElementById("conn-filter");
    this.body = document.querySelector("#conn-table tbody");
    this.state = document.getElementById("conn-state");
    this.more = document.getElementById("conn-more");
    this.cursor = null;
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.load(true);
    });
    this.more.addEventListener("click", () => this.load(false));
  }

  /** Loads the first page (`fresh`) or the next one, appended. */
  async load(fresh) {
    const f = this.form.elements;
    const cursor = fresh ? 0 : this.cursor;
    const path = "connections?" + query({
      topic: f.topic.value.trim(),
      sub: f.sub.value.trim(),
      limit: 100,
      cursor,
    });
    const [status, doc] = await api(this.token, "GET", path);
    if (status !== 200) {
      this.state.textContent = doc;
      this.state.className = "api-state error";
      return;
    }
    if (fresh) this.body.replaceChildren();
    for (const c of doc.connections) this.body.append(this.row(c));
    this.cursor = doc.next_cursor;
    this.more.hidden = doc.next_cursor === null;
    const shown = this.body.querySelectorAll("tr").length;
    this.state.textContent = `${shown} connection${shown === 1 ? "" : "s"} shown` +
      (doc.next_cursor === null ? "" : " (more on the next page)");
    this.state.className = "api-state";
  }

  row(c) {
    const tr = document.createElement("tr");
    tr.dataset.id = String(c.id);
    cell(tr, String(c.id), "num");
    cell(tr, c.kind);
    cell(tr, c.peer);
    cell(tr, c.topics.join(", "), "name");
    cell(tr, c.sub === null ? "—" : c.sub);
    cell(tr, formatAge(c.age_ms), "num");
    cell(tr, formatBinaryBytes(c.bytes_written), "num");
    cell(tr, formatBinaryBytes(c.bytes_queued), "num");
    cell(tr, String(c.events_behind), "num");
    const td = cell(tr, "");
    if (c.kind !== "http") {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "small disconnect";
      button.textContent = "Disconnect";
      button.addEventListener("click", () => this.disconnect(c.id, tr));
      td.append(button);
    }
    return tr;
  }

  async disconnect(id, tr) {
    const reason = encodeURIComponent("closed from the console");
    const [status, doc] = await api(this.token, "DELETE", `connections/${id}?reason=${reason}`);
    if (status === 200) {
      tr.remove();
      this.state.textContent = `connection ${id} disconnected`;
      this.state.className = "api-state ok";
    } else {
      this.state.textContent = `connection ${id}: ${doc}`;
      this.state.className = "api-state error";
    }
  }
}

export class TopicView {
  constructor(token) {
    this.token = token;
    this.form = document.getElementById("topic-form");
    this.presence = document.getElementById("presence");
    this.history = document.querySelector("#history tbody");
    this.state = document.getElementById("topic-state");
    this.timer = 0;
    this.topic = "";
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.show(this.form.elements.topic.value.trim());
    });
  }

  async show(topic) {
    clearTimeout(this.timer);
    this.topic = topic;
    if (!topic) return;
    const [status, doc] = await api(this.token, "GET", "history?" + query({ topic, limit: 50 }));
    if (status !== 200) {
      this.state.textContent = doc;
      this.state.className = "api-state error";
      this.history.replaceChildren();
    } else {
      this.state.textContent = `${doc.events.length} retained event` +
        `${doc.events.length === 1 ? "" : "s"}${doc.more ? " (the oldest 50 shown)" : ""}`;
      this.state.className = "api-state";
      this.history.replaceChildren(...doc.events.map((e) => {
        const tr = document.createElement("tr");
        cell(tr, e.id, "name");
        cell(tr, e.event === null ? "message" : e.event);
        cell(tr, e.topics.join(", "));
        cell(tr, e.data, "data");
        return tr;
      }));
    }
    this.pollPresence();
  }

  async pollPresence() {
    const topic = this.topic;
    const [status, doc] = await api(this.token, "GET", "presence?" + query({ topic, limit: 100 }));
    if (topic !== this.topic) return;
    const items = status === 200
      ? [
        ["subscribers", String(doc.subscribers)],
        ["subjects", doc.subjects === null
          ? "hidden (needs the presence grant)"
          : doc.subjects.join(", ") || "none"],
      ]
      : [["presence", doc]];
    this.presence.replaceChildren(...items.map(([k, v]) => {
      const div = document.createElement("div");
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = k;
      dd.textContent = v;
      dd.dataset.key = k;
      div.append(dt, dd);
      return div;
    }));
    this.timer = setTimeout(() => this.pollPresence(), PRESENCE_MS);
  }
}
