// Browser test of the console's server-API pages, run by tests/console.rs against a real sseloop
// process: Debian's chromium driven by playwright-core. The first failed check ends the run with
// a non-zero status.
//
// 1. The Connections page lists the streams of a topic with the admin token, and its Disconnect
//    button closes one: that stream gets its sseloop-disconnect notice, the others stay.
// 2. The Topic page shows the topic's retained events and its live subscriber count.
// 3. The fixes: pattern subscriptions are listed apart from topics, sizes read in units, and
//    a page opened late asks the server for its recent samples.
//
// Environment (set by tests/console.rs):
//   SSELOOP_URL     a server with --ui --admin-token $SSELOOP_ADMIN
//   SSELOOP_ADMIN   that token
//   CHROMIUM        the browser binary (/usr/bin/chromium)

import net from "node:net";
import assert from "node:assert/strict";
import { ok, runChecks } from "./run.mjs";

const BASE = process.env.SSELOOP_URL;
const ADMIN = process.env.SSELOOP_ADMIN;
const TIMEOUT = 15_000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, check, timeout = TIMEOUT) {
  const end = Date.now() + timeout;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** A raw-socket SSE subscriber that keeps what it reads. */
function subscriber(query) {
  const url = new URL(BASE);
  const sock = net.connect(Number(url.port), url.hostname);
  sock.write(`GET /events?${query} HTTP/1.1\r\nHost: t\r\n\r\n`);
  const s = { sock, text: "", closed: false };
  sock.on("data", (d) => { s.text += d.toString("utf8"); });
  sock.on("error", () => {});
  sock.on("close", () => { s.closed = true; });
  return s;
}

async function apiGet(path) {
  const res = await fetch(`${BASE}/api/v1/${path}`, { headers: { Authorization: `Bearer ${ADMIN}` } });
  assert.equal(res.status, 200, `${path}: ${res.status}`);
  return res.json();
}

async function publish(topic, data) {
  const res = await fetch(`${BASE}/publish?topic=${topic}`, { method: "POST", body: data });
  assert.equal(res.status, 200);
  return (await res.json()).id;
}

async function checks(browser) {
  const streams = [subscriber("topic=ops"), subscriber("topic=ops"), subscriber("topic=ops")];
  const pattern = subscriber("topic=ops/*");
  await until("three streams on ops", async () =>
    (await apiGet("connections?topic=ops")).connections.length === 3);
  await sleep(2200); // two samples on the server's clock before the page opens

  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  const requests = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("request", (r) => requests.push(r.url()));
  await page.goto(`${BASE}/ui/`);
  // The admin token guards /stats too: locked until it is entered.
  await page.waitForSelector("body[data-state=locked]", { timeout: TIMEOUT });
  await page.fill("#token", ADMIN);
  await page.click("#token-form button[type=submit]");
  await page.waitForSelector("body[data-state=live]", { timeout: TIMEOUT });

  // --- the fixes -----------------------------------------------------------------------------
  const statsUrls = requests.filter((u) => new URL(u).pathname === "/stats");
  assert.ok(statsUrls.slice(0, 2).every((u) => /samples=1/.test(u)),
    "a page that starts (or restarts with a new token) asks for the recent samples");
  const doc = await (await fetch(`${BASE}/stats?samples=1`, { headers: { Authorization: `Bearer ${ADMIN}` } })).json();
  assert.ok(doc.samples.length >= 2, `the server kept samples: ${doc.samples.length}`);
  await until("the pattern table lists ops/*", async () =>
    (await page.locator('#patterns tr[data-topic="ops/*"]').count()) === 1);
  assert.equal(await page.locator('#topics tr[data-topic="ops/*"]').count(), 0, "no pattern among topics");
  assert.equal(await page.locator('#topics tr[data-topic="ops"]').count(), 1);
  const queue = await page.locator("#config div", { hasText: "max_queue_bytes" }).locator("dd").textContent();
  assert.match(queue, /^\d+(\.\d)? (KiB|MiB|GiB)$/, `max_queue_bytes reads in units: ${queue}`);
  ok(`patterns are listed apart, sizes read in units (${queue}), a new page asks for the last samples (${doc.samples.length})`);

  // --- connections: list, then disconnect one ------------------------------------------------
  await page.fill("#conn-filter input[name=topic]", "ops");
  await page.click("#conn-filter button[type=submit]");
  const rows = page.locator("#conn-table tbody tr");
  await until("three rows", async () => (await rows.count()) === 3);
  assert.equal((await rows.first().locator("td").nth(1).textContent()), "sse");
  const victim = await rows.first().getAttribute("data-id");
  await rows.first().locator("button.disconnect").click();
  await until("the row goes", async () => (await rows.count()) === 2);
  assert.match(await page.textContent("#conn-state"), new RegExp(`connection ${victim} disconnected`));
  await until("one stream got its notice and ended", async () =>
    streams.filter((s) => s.closed && /event: sseloop-disconnect\ndata: \{"reason":"closed from the console"\}/.test(s.text)).length === 1);
  const left = (await apiGet("connections?topic=ops")).connections.map((c) => String(c.id));
  assert.equal(left.length, 2);
  assert.ok(!left.includes(victim), "the disconnected one is gone");
  ok(`the connections page lists the 3 streams of "ops" and disconnects #${victim}; 2 remain`);

  // --- topic: history and presence -------------------------------------------------------------
  const ids = [await publish("ops", "first"), await publish("ops", "second")];
  await page.fill("#topic-form input[name=topic]", "ops");
  await page.click("#topic-form button[type=submit]");
  const history = page.locator("#history tbody tr");
  await until("two retained events", async () => (await history.count()) === 2);
  assert.deepEqual(await history.locator("td:first-child").allTextContents(), ids);
  await until("presence shows 2 subscribers", async () =>
    (await page.locator('#presence dd[data-key=subscribers]').textContent().catch(() => "")) === "2");
  streams[1].sock.destroy();
  await until("presence follows a leaving subscriber", async () =>
    (await page.locator('#presence dd[data-key=subscribers]').textContent()) === "1");
  ok("the topic page shows the retained events and a live subscriber count");

  // The locked page's first stats request is logged by the browser as a failed load (expected).
  const unexpected = errors.filter((e) => !/Failed to load resource: .* status of 401/.test(e));
  assert.deepEqual(unexpected, [], "no console or page errors");
  for (const s of [...streams, pattern]) s.sock.destroy();
  await context.close();
}

await runChecks(checks);
