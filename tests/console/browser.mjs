// Browser test of the web console, run by tests/console.rs against real sseloop processes:
// Debian's chromium driven by playwright-core (no browser download). Every check of the issue's
// "Done when" list is here; the first failed one ends the run with a non-zero status.
//
// Environment (set by tests/console.rs):
//   SSELOOP_URL          base URL of a server started with --ui --max-queue-bytes 64k
//   SSELOOP_TOKEN_URL    base URL of a server started with --ui --subscribe-token $SSELOOP_TOKEN
//   SSELOOP_TOKEN        that token
//   CHROMIUM             the browser binary (/usr/bin/chromium)
//   SCREENSHOT_DIR       where the screenshots go

import { spawn, execFile } from "node:child_process";
import { once } from "node:events";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import assert from "node:assert/strict";
import { ok, runChecks } from "./run.mjs";

const BASE = process.env.SSELOOP_URL;
const TOKEN_BASE = process.env.SSELOOP_TOKEN_URL;
const TOKEN = process.env.SSELOOP_TOKEN;
const SHOTS = process.env.SCREENSHOT_DIR;
const TIMEOUT = 15_000;
/** Subscribers the load phase opens on topic "load" (the busiest-topics table must show it). */
const LOAD_SUBSCRIBERS = 25;


const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ----- the "curl" side --------------------------------------------------------------------------

function curl(args) {
  return new Promise((resolve, reject) => {
    execFile("curl", ["-sS", "--max-time", "10", ...args], (err, stdout, stderr) => {
      if (err) reject(new Error(`curl ${args.join(" ")}: ${stderr || err.message}`));
      else resolve(stdout);
    });
  });
}

/** Publishes with curl; returns the id. */
async function curlPublish(base, query, data) {
  const out = await curl(["-X", "POST", "--data-binary", data, `${base}/publish?${query}`]);
  const id = JSON.parse(out).id;
  assert.ok(id, `publish answered ${out}`);
  return id;
}

/** A `curl -N` subscriber whose output accumulates in `.out`. */
function curlSubscribe(url) {
  const child = spawn("curl", ["-sSN", "--max-time", "60", url]);
  const sub = { child, out: "" };
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (d) => { sub.out += d; });
  return sub;
}

async function until(what, check, timeout = TIMEOUT) {
  const start = Date.now();
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() - start > timeout) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** A raw-socket SSE subscriber (load and slow consumers). */
function rawSubscriber(base, query, headers = {}) {
  const url = new URL(base);
  const sock = net.connect(Number(url.port), url.hostname);
  const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("");
  sock.write(`GET /events?${query} HTTP/1.1\r\nHost: t\r\n${extra}\r\n`);
  const s = { sock, bytes: 0, head: "", closed: false };
  sock.on("data", (d) => {
    if (s.head.length < 200) s.head += d.toString("latin1");
    s.bytes += d.length;
  });
  sock.on("error", () => {});
  sock.on("close", () => { s.closed = true; });
  return s;
}

async function stats(base, token) {
  const res = await fetch(`${base}/stats?topics=20`, {
    headers: token ? { Authorization: `Bearer ${token}` } : {},
  });
  assert.equal(res.status, 200);
  return res.json();
}

// ----- the browser side -------------------------------------------------------------------------

/** A page with every error, CSP violation and request recorded. */
async function openPage(browser, url) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  const log = { errors: [], csp: [], requests: [] };
  await page.addInitScript(() => {
    window.__csp = [];
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  page.on("console", (m) => {
    if (m.type() === "error" || /Content.Security.Policy/i.test(m.text())) {
      log.errors.push(`console ${m.type()}: ${m.text()} (${m.location().url})`);
    }
  });
  page.on("pageerror", (e) => log.errors.push(`page error: ${e.message}`));
  page.on("request", (r) => log.requests.push(r));
  const response = await page.goto(url);
  return { context, page, log, response };
}

async function cspViolations(page) {
  return page.evaluate(() => window.__csp.slice());
}

async function value(page, card) {
  const v = await page.locator(`#${card} .value`).getAttribute("data-value");
  return v === null ? null : Number(v);
}

async function openServerChecks(browser) {
  const { context, page, log, response } = await openPage(browser, `${BASE}/ui/`);
  const headers = response.headers();
  assert.match(headers["content-security-policy"], /script-src 'self'/);
  assert.doesNotMatch(headers["content-security-policy"], /unsafe-inline/);
  assert.equal(headers["x-content-type-options"], "nosniff");
  await page.waitForSelector("body[data-state=live]", { timeout: TIMEOUT });
  await until("run id shown", async () => (await page.textContent("#run")) !== "—");
  ok("page loads and goes live; CSP and nosniff headers present");

  // --- subscribe in the page, publish with curl --------------------------------------------
  const panels = page.locator("#panels .panel");
  const first = panels.nth(0);
  await first.locator("input[name=topics]").fill("news");
  await first.locator("button.subscribe").click();
  await first.locator(".state[data-state=open]").waitFor({ timeout: TIMEOUT });
  const multi = "line one\nline two\n\n  indented fourth";
  const id1 = await curlPublish(BASE, "topic=news&event=headline", multi);
  const row = first.locator(".log li.event").first();
  await row.waitFor({ timeout: TIMEOUT });
  assert.equal(await row.locator(".id").textContent(), id1);
  assert.equal(await row.locator(".type").textContent(), "headline");
  assert.equal(await row.locator(".topic").textContent(), "news", "the event's topic shown");
  assert.equal(await row.locator("pre.data").textContent(), multi, "multi-line data intact");
  ok("a subscription made in the page receives a curl-published event, multi-line data intact");

  const long = "x".repeat(3000);
  await curlPublish(BASE, "topic=news", long);
  const folded = first.locator(".log li.event").first().locator("details.folded");
  await folded.waitFor({ timeout: TIMEOUT });
  assert.equal(await folded.getAttribute("open"), null, "long data starts folded");
  assert.equal(await folded.locator("pre.data").textContent(), long, "folded data kept whole");
  ok("long data is folded, and whole when unfolded");

  // --- a second subscription side by side, resuming from a foreign id: reset notice ---------
  await page.click("#add-panel");
  const second = panels.nth(1);
  await second.locator("input[name=topics]").fill("news, sport");
  await second.locator("input[name=last-event-id]").fill("not-from-this-run-7");
  await second.locator("button.subscribe").click();
  await second.locator(".log li.reset").waitFor({ timeout: TIMEOUT });
  const resetText = await second.locator(".log li.reset").textContent();
  assert.match(resetText, /missed \(unknown\)/);
  await until("replay after the reset", async () => (await second.locator(".log li.event").count()) === 2);
  const replayedTopics = await second.locator(".log li.event .topic").allTextContents();
  assert.deepEqual(replayedTopics, ["news", "news"], "replayed events name their topic");
  const [b1, b2] = [await first.boundingBox(), await second.boundingBox()];
  assert.ok(Math.abs(b1.y - b2.y) < 2 && b2.x > b1.x + b1.width - 1, "panels side by side");
  ok("several subscriptions side by side; a reset notice is shown as such, then the replay");

  // --- pause / resume / count / clear --------------------------------------------------------
  const count = async (panel) => Number(await panel.locator(".count").getAttribute("data-count"));
  const rows = (panel) => panel.locator(".log li.event").count();
  const before = await rows(first);
  await first.locator("button.pause").click();
  for (let i = 0; i < 3; i++) await curlPublish(BASE, "topic=news&event=paused", `p${i}`);
  await until("count while paused", async () => (await count(first)) === before + 3);
  assert.equal(await rows(first), before, "no new rows while paused");
  await first.locator("button.pause").click();
  await until("held rows shown on resume", async () => (await rows(first)) === before + 3);
  assert.equal(await first.locator(".log li.event .data").first().textContent(), "p2");
  await first.locator("button.clear").click();
  assert.equal(await rows(first), 0);
  assert.equal(await count(first), 0);
  ok("pause holds events (count still moves), resume shows them in order, clear empties");

  // --- publish from the page, received by a curl subscriber ----------------------------------
  await page.fill("#publish-form input[name=topics]", "bad topic!");
  await page.click("#publish-form button[type=submit]");
  await page.waitForSelector("#publish-result.error", { timeout: TIMEOUT });
  assert.match(await page.textContent("#publish-result"), /^400 Bad Request: .*topic/);
  ok("a refused publish shows the status and the server's message");
  const sub = curlSubscribe(`${BASE}/events?topic=from-page`);
  await until("curl subscriber ready", () => sub.out.startsWith("retry:"));
  await page.fill("#publish-form input[name=topics]", "from-page");
  await page.fill("#publish-form input[name=event]", "note");
  await page.fill("#publish-form textarea[name=data]", "from the page\nsecond line");
  await page.click("#publish-form button[type=submit]");
  await page.waitForSelector("#publish-result.ok", { timeout: TIMEOUT });
  const pageId = await page.getAttribute("#publish-result", "data-id");
  const expected = `id: ${pageId}\nevent: note\ndata: from the page\ndata: second line\n\n`;
  await until("curl receives the page's event", () => sub.out.includes(expected));
  sub.child.kill();
  ok(`a publish made in the page reaches a curl subscriber (${pageId})`);


  // --- load: charts move, busiest topics lists the topic --------------------------------------
  const base = {};
  for (const card of ["chart-deliveries", "chart-publishes", "chart-bytes"]) base[card] = await value(page, card);
  const canvasBefore = await page.locator("#chart-deliveries canvas").evaluate((c) => c.toDataURL());
  const subs = [];
  for (let i = 0; i < LOAD_SUBSCRIBERS; i++) subs.push(rawSubscriber(BASE, "topic=load"));
  const slow = rawSubscriber(BASE, "topic=slow");
  await until("load subscribers open", () => subs.every((s) => s.head.startsWith("HTTP/1.1 200")) && slow.head.startsWith("HTTP/1.1 200"));
  slow.sock.pause(); // reads nothing more: the server must cut it at --max-queue-bytes
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  const post = (query, body) => new Promise((resolve, reject) => {
    const req = http.request(`${BASE}/publish?${query}`, { method: "POST", agent }, (res) => {
      res.resume();
      res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`publish ${res.statusCode}`))));
    });
    req.on("error", reject);
    req.end(body);
  });
  await first.locator("button.subscribe").click(); // Stop (was news)
  await first.locator("input[name=topics]").fill("load");
  await first.locator("button.subscribe").click(); // Subscribe to load
  await first.locator(".state[data-state=open]").waitFor({ timeout: TIMEOUT });
  const seen = { "chart-deliveries": 0, "chart-publishes": 0, "chart-bytes": 0, "chart-connections": 0 };
  const tick = (i) => JSON.stringify({ symbol: "ACME", price: 101.25 + (i % 17) / 4, qty: 100 + (i % 9) * 50 });
  const big = "z".repeat(4096);
  const loadStart = Date.now();
  let n = 0;
  let shot = false;
  while (Date.now() - loadStart < 7000) {
    const started = Date.now();
    const batch = [];
    for (let i = 0; i < 15; i++) batch.push(post("topic=load&event=tick", tick(n * 15 + i)));
    n++;
    if (n % 5 === 0) batch.push(post("topic=sport&event=score", JSON.stringify({ minute: n / 5, home: n % 3, away: n % 2 })));
    for (let i = 0; i < 40; i++) batch.push(post("topic=slow", big));
    await Promise.all(batch);
    if (n % 10 === 3) {
      // A resume from an id of no run of this server: counted as a reset.
      const r = rawSubscriber(BASE, "topic=load", { "Last-Event-ID": "gone-1" });
      r.sock.once("data", () => r.sock.destroy());
    }
    for (const card of Object.keys(seen)) seen[card] = Math.max(seen[card], (await value(page, card)) ?? 0);
    if (n === 30) {
      // A third panel resuming from an id of no run: the reset notice, then the replay of
      // "news" (multi-line and folded events among it).
      await page.click("#add-panel");
      const third = panels.nth(2);
      await third.locator("input[name=topics]").fill("news");
      await third.locator("input[name=last-event-id]").fill("earlier-run-41");
      await third.locator("button.subscribe").click();
    }
    if (!shot && Date.now() - loadStart > 5000) {
      shot = true;
      await page.evaluate(() => window.scrollTo(0, 0));
      const server = await page.locator("#server").boundingBox();
      await page.screenshot({ path: path.join(SHOTS, "console.png"), clip: { x: 0, y: 0, width: 1400, height: server.y + server.height + 8 } });
      await page.locator("#streams").screenshot({ path: path.join(SHOTS, "console-streams.png") });
    }
    await sleep(Math.max(0, 100 - (Date.now() - started)));
  }
  agent.destroy();
  for (const card of ["chart-deliveries", "chart-publishes", "chart-bytes"]) {
    assert.ok(seen[card] > (base[card] ?? 0) && seen[card] > 0, `${card} moved: ${base[card]} -> ${seen[card]}`);
  }
  assert.ok(seen["chart-connections"] >= LOAD_SUBSCRIBERS, `connections chart ${seen["chart-connections"]}`);
  const canvasAfter = await page.locator("#chart-deliveries canvas").evaluate((c) => c.toDataURL());
  assert.notEqual(canvasAfter, canvasBefore, "the deliveries canvas was redrawn with the load");
  ok(`charts move under load (deliveries/s peak ${seen["chart-deliveries"]}, publishes/s ${seen["chart-publishes"]}, bytes/s ${seen["chart-bytes"]})`);

  const doc = await stats(BASE);
  assert.ok(doc.counters.slow_consumer_closes >= 1, "the paused reader was cut");
  assert.ok(doc.counters.resume_resets >= 2, "resets counted");
  const total = async (card) => Number(((await page.textContent(`#${card} .value`)).match(/(\d+) total/) || [])[1]);
  await until("slow and reset charts show totals", async () =>
    (await total("chart-slow")) >= 1 && (await total("chart-resets")) >= 2);
  ok(`slow-consumer (${doc.counters.slow_consumer_closes}) and resume-reset (${doc.counters.resume_resets}) charts report the server's totals`);

  const loadRow = page.locator("#topics tr[data-topic=load]");
  await until("busiest topics lists load", async () => (await loadRow.count()) === 1);
  // The page's own subscription to "load" is one more subscriber.
  await until("subscriber count", async () => (await loadRow.locator(".subscribers").textContent()) === String(LOAD_SUBSCRIBERS + 1));
  assert.equal(doc.topics[0].name, "load", "the busiest topic first");
  ok(`busiest-topics table lists "load" with ${LOAD_SUBSCRIBERS + 1} subscribers`);
  for (const s of subs) s.sock.destroy();
  slow.sock.destroy();

  // --- no errors, no CSP violations; and the policy really blocks inline code ---------------
  // The refused publish above is logged by the browser as a failed load: expected, and the only
  // message allowed.
  const refused = /Failed to load resource: .* status of 400 .*\/publish\?topic=bad&topic=topic!/;
  assert.deepEqual(log.errors.filter((e) => !refused.test(e)), [], "no console or page errors");
  assert.equal(log.errors.length, 1, "the refused publish was logged once");
  assert.deepEqual(await cspViolations(page), [], "no CSP violations");
  const inlineRan = await page.evaluate(async () => {
    const s = document.createElement("script");
    s.textContent = "window.__inline = true";
    document.head.append(s);
    await new Promise((r) => setTimeout(r, 100));
    return window.__inline === true;
  });
  assert.equal(inlineRan, false, "inline script blocked");
  await until("the violation is reported", async () => (await cspViolations(page)).length > 0);
  ok("no console errors and no CSP violations; an injected inline script is blocked and reported");
  await context.close();
}

async function tokenServerChecks(browser) {
  await curlPublish(TOKEN_BASE, "topic=private-topic", "hidden");
  const { context, page, log } = await openPage(browser, `${TOKEN_BASE}/ui/`);
  await page.waitForSelector("body[data-state=locked]", { timeout: TIMEOUT });
  await sleep(2500); // a locked page must not keep asking
  const statsRequests = () => log.requests.filter((r) => new URL(r.url()).pathname === "/stats");
  assert.equal(statsRequests().length, 1, "one refused stats request, no polling");
  assert.equal(await page.textContent("#run"), "—");
  assert.equal(await page.locator("#topics tbody tr").count(), 0);
  assert.equal(await page.locator("#config div").count(), 0);
  assert.equal(await page.locator("#notice").isVisible(), true);
  assert.doesNotMatch(await page.content(), /private-topic/);
  const panel = page.locator("#panels .panel").first();
  await panel.locator("input[name=topics]").fill("private-topic");
  await panel.locator("button.subscribe").click();
  await panel.locator(".state[data-state=failed]").waitFor({ timeout: TIMEOUT });
  assert.match(await panel.locator(".state").textContent(), /401/);
  assert.equal(await panel.locator(".log li").count(), 0);
  ok("with a subscribe token configured, the console shows no data until the token is entered");

  await page.fill("#token", "wrong-token");
  await page.click("#token-form button[type=submit]");
  await until("still locked", async () => /refused this token/.test(await page.textContent("#notice")));
  assert.equal(await page.textContent("#run"), "—");
  await page.fill("#token", TOKEN);
  await page.click("#token-form button[type=submit]");
  await page.waitForSelector("body[data-state=live]", { timeout: TIMEOUT });
  await until("topics shown", async () => (await page.locator("#topics tr[data-topic=private-topic]").count()) === 1);
  const run = await page.textContent("#run");
  assert.notEqual(run, "—");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("sseloop.token")), TOKEN);
  await panel.locator("button.subscribe").click();
  await panel.locator(".state[data-state=open]").waitFor({ timeout: TIMEOUT });
  const unlockedId = await curlPublish(TOKEN_BASE, "topic=private-topic", "visible now");
  await until("event received", async () => (await panel.locator(".log li.event .id").allTextContents()).includes(unlockedId));
  ok("the right token unlocks stats and subscriptions; it is kept in sessionStorage");

  await page.reload();
  await page.waitForSelector("body[data-state=live]", { timeout: TIMEOUT });
  ok("after a reload the token comes back from sessionStorage");

  for (const r of log.requests) {
    assert.ok(!r.url().includes(TOKEN), `token in a URL: ${r.url()}`);
  }
  const authorised = statsRequests().filter((r) => r.headers().authorization === `Bearer ${TOKEN}`);
  assert.ok(authorised.length >= 1, "stats fetched with the bearer header");
  ok("the token never appears in a URL; requests carry it as Authorization: Bearer");

  // The refused requests are logged by the browser as failed loads (expected), nothing else.
  const unexpected = log.errors.filter((e) => !/Failed to load resource: .* status of 401 .*\/(stats|events)\?/.test(e));
  assert.deepEqual(unexpected, [], "no console errors other than the expected 401s");
  assert.deepEqual(await cspViolations(page), [], "no CSP violations");
  ok("no console errors besides the refused loads, no CSP violations");
  await context.close();
}

await runChecks(openServerChecks, tokenServerChecks);
