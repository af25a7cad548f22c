// The console's entry point: tokens (kept in sessionStorage, never in a URL), the server view,
// the subscription panels and the publish form.

import { ServerView } from "./server.js";
import { ConnectionsView, TopicView } from "./admin.js";
import { initStreams, parseTopics } from "./streams.js";
import { errorText } from "./sse.js";

const TOKEN_KEY = "sseloop.token";
const PUBLISH_TOKEN_KEY = "sseloop.publishToken";

function stored(key) {
  try {
    return sessionStorage.getItem(key) || "";
  } catch {
    return ""; // storage disabled: the fields still work for this page's life
  }
}

function store(key, value) {
  try {
    if (value) sessionStorage.setItem(key, value);
    else sessionStorage.removeItem(key);
  } catch {
    // as above
  }
}

const tokenInput = document.getElementById("token");
const notice = document.getElementById("notice");
tokenInput.value = stored(TOKEN_KEY);
const token = () => tokenInput.value.trim();

function showState(state, detail, httpStatus) {
  document.body.dataset.state = state;
  const status = document.getElementById("status");
  status.textContent = state;
  status.dataset.state = state;
  if (state === "locked") {
    if (httpStatus === 403) {
      notice.textContent = `The server accepted this token but it does not grant the server's ` +
        `figures (${detail}). With JWT they need a token whose claims include ` +
        `"sseloop": {"admin": true}.`;
    } else {
      notice.textContent = token()
        ? `The server refused this token (${detail}). Enter the subscribe token, or with JWT ` +
          `an admin token, above.`
        : "This server needs a token to show its data. Enter the subscribe token, or with " +
          "JWT an admin token, above.";
    }
    notice.hidden = false;
    tokenInput.focus();
  } else if (state === "offline") {
    notice.textContent = `Cannot read the server's stats (${detail}); retrying.`;
    notice.hidden = false;
  } else {
    notice.hidden = true;
  }
}

const server = new ServerView(token, showState);
new ConnectionsView(token);
new TopicView(token);
const streams = initStreams(token);

document.getElementById("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  store(TOKEN_KEY, token());
  server.start();
  streams.restartAll();
});
document.getElementById("token-forget").addEventListener("click", () => {
  tokenInput.value = "";
  store(TOKEN_KEY, "");
  server.start();
});

// ----- publish ----------------------------------------------------------------------------------

const form = document.getElementById("publish-form");
const result = document.getElementById("publish-result");
form.elements["publish-token"].value = stored(PUBLISH_TOKEN_KEY);

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const topics = parseTopics(form.elements.topics.value);
  const params = topics.map((t) => "topic=" + encodeURIComponent(t));
  const type = form.elements.event.value.trim();
  if (type) params.push("event=" + encodeURIComponent(type));
  const publishToken = form.elements["publish-token"].value.trim();
  store(PUBLISH_TOKEN_KEY, publishToken);
  const headers = { "Content-Type": "text/plain; charset=utf-8" };
  if (publishToken) headers.Authorization = "Bearer " + publishToken;
  result.className = "pending";
  result.textContent = "publishing…";
  delete result.dataset.id;
  try {
    const res = await fetch("../publish?" + params.join("&"), {
      method: "POST",
      headers,
      body: form.elements.data.value,
      cache: "no-store",
    });
    if (res.ok) {
      const body = await res.json();
      result.className = "ok";
      result.textContent = `published: id ${body.id}`;
      result.dataset.id = body.id;
    } else {
      result.className = "error";
      result.textContent = await errorText(res);
    }
  } catch (err) {
    result.className = "error";
    result.textContent = "request failed: " + (err.message || err);
  }
});

server.start();
