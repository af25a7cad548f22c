// Browser test of access from pages, run by tests/console.rs against real sseloop processes:
// Debian's chromium driven by playwright-core. The first failed check ends the run with a
// non-zero status.
//
// 1. A page on another origin publishes with fetch() and an Idempotency-Key (a preflighted
//    request), retries with the same key and gets the same id; against a server whose backplane
//    is down it gets the 503 and can read its Retry-After.
// 2. The console of a JWT server: locked without a token, says clearly that a valid token
//    without the admin claim is refused (403), shows the figures with an admin token, and its
//    configuration panel names the authorization mode.
//
// Environment (set by tests/console.rs):
//   SSELOOP_URL         a server (--cors-origin *)
//   SSELOOP_DOWN_URL    a server whose --backplane points at a closed port
//   SSELOOP_JWT_URL     a server with --ui --jwt-secret
//   SSELOOP_READER      a JWT for it that may subscribe but has no admin claim
//   SSELOOP_ADMIN       a JWT for it with "sseloop":{"admin":true}
//   CHROMIUM            the browser binary (/usr/bin/chromium)

import http from "node:http";
import { once } from "node:events";
import assert from "node:assert/strict";
import { ok, runChecks } from "./run.mjs";

const BASE = process.env.SSELOOP_URL;
const DOWN = process.env.SSELOOP_DOWN_URL;
const JWT_BASE = process.env.SSELOOP_JWT_URL;
const READER = process.env.SSELOOP_READER;
const ADMIN = process.env.SSELOOP_ADMIN;
const TIMEOUT = 15_000;


/** A page served from another origin (another port) than the servers under test. */
async function otherOrigin() {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
    res.end("<!doctype html><title>other origin</title><p>publisher page</p>");
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { server, url: `http://127.0.0.1:${server.address().port}/` };
}

/** Runs a cross-origin publish in the page; returns what the page could read of the answer. */
function publishFromPage(page, base, key, data) {
  return page.evaluate(async ([base, key, data]) => {
    try {
      const res = await fetch(`${base}/publish?topic=cors`, {
        method: "POST",
        headers: { "Content-Type": "text/plain; charset=utf-8", "Idempotency-Key": key },
        body: data,
        cache: "no-store",
      });
      return {
        status: res.status,
        body: await res.text(),
        retryAfter: res.headers.get("Retry-After"),
      };
    } catch (err) {
      return { error: String(err.message || err) };
    }
  }, [base, key, data]);
}

async function crossOriginChecks(browser) {
  const other = await otherOrigin();
  const context = await browser.newContext();
  const page = await context.newPage();
  const preflights = [];
  page.on("request", (r) => {
    if (r.method() === "OPTIONS") preflights.push(r.url());
  });
  await page.goto(other.url);
  const origin = new URL(other.url).origin;
  assert.notEqual(origin, new URL(BASE).origin, "the page is on another origin");

  const first = await publishFromPage(page, BASE, "order-17", "once");
  assert.equal(first.error, undefined, `cross-origin publish failed: ${first.error}`);
  assert.equal(first.status, 200, first.body);
  const id = JSON.parse(first.body).id;
  const again = await publishFromPage(page, BASE, "order-17", "once");
  assert.equal(again.status, 200, again.body);
  assert.equal(JSON.parse(again.body).id, id, "a retry with the same key answers the same id");
  const other17 = await publishFromPage(page, BASE, "order-18", "twice");
  assert.notEqual(JSON.parse(other17.body).id, id, "another key publishes anew");
  ok("a page on another origin publishes with Idempotency-Key; a retry gets the same id");

  const refused = await publishFromPage(page, DOWN, "order-19", "later");
  assert.equal(refused.error, undefined, `cross-origin publish failed: ${refused.error}`);
  assert.equal(refused.status, 503, refused.body);
  assert.equal(refused.retryAfter, "1", "Retry-After readable by the page");
  assert.match(refused.body, /same Idempotency-Key/);
  ok("a 503 from a server whose backplane is down is readable, with its Retry-After");
  await context.close();
  other.server.close();
}

async function adminChecks(browser) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${JWT_BASE}/ui/`);
  await page.waitForSelector("body[data-state=locked]", { timeout: TIMEOUT });
  assert.equal(await page.locator("#topics tbody tr").count(), 0, "no topic shown");
  ok("a JWT server's console is locked without a token");

  await page.fill("#token", READER);
  await page.click("#token-form button[type=submit]");
  await page.waitForFunction(
    () => /does not grant/.test(document.getElementById("notice").textContent),
    null,
    { timeout: TIMEOUT },
  );
  const notice = await page.textContent("#notice");
  assert.match(notice, /403/);
  assert.match(notice, /"sseloop": \{"admin": true\}/);
  assert.equal(await page.getAttribute("body", "data-state"), "locked");
  assert.equal(await page.locator("#topics tbody tr").count(), 0, "no topic shown");
  ok("a token without the admin claim is refused, and the page says why (403, admin claim)");

  await page.fill("#token", ADMIN);
  await page.click("#token-form button[type=submit]");
  await page.waitForSelector("body[data-state=live]", { timeout: TIMEOUT });
  await page.waitForFunction(
    () => document.getElementById("config").textContent.includes("JWT (HMAC)"),
    null,
    { timeout: TIMEOUT },
  );
  const config = await page.textContent("#config");
  for (const part of ["auth", "backplane", "idempotency_window_secs", "reuse_port"]) {
    assert.ok(config.includes(part), `${part} in the configuration panel: ${config}`);
  }
  assert.equal(await page.isHidden("#notice"), true, "no notice once live");
  ok("an admin token shows the figures; the configuration panel names the auth mode");
  await context.close();
}

await runChecks(crossOriginChecks, adminChecks);
