// Browser test of HTTPS, run by tests/tls.rs against a real sseloop with --tls-cert: Debian's
// chromium (playwright-core) opens an EventSource over https and receives an event it publishes
// with fetch(). The certificate is checked: the only exception is the test certificate's own
// public key (--ignore-certificate-errors-spki-list, which needs a user data directory).
//
// Environment (set by tests/tls.rs):
//   SSELOOP_URL   https://localhost:PORT of the server
//   SSELOOP_SPKI  base64 SHA-256 of the server certificate's SubjectPublicKeyInfo
//   CHROMIUM      the browser binary (/usr/bin/chromium)

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const BASE = process.env.SSELOOP_URL;
const profile = mkdtempSync(join(tmpdir(), "sseloop-tls-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    `--ignore-certificate-errors-spki-list=${process.env.SSELOOP_SPKI}`,
  ],
});
try {
  const page = await context.newPage();
  const health = await page.goto(`${BASE}/healthz`);
  if (health.status() !== 200) throw new Error(`healthz: ${health.status()}`);
  console.log("ok 1 - the page loads over https");
  const data = await page.evaluate(
    (base) =>
      new Promise((resolve, reject) => {
        const es = new EventSource(`${base}/events?topic=browser`);
        es.onopen = () =>
          fetch(`${base}/publish?topic=browser`, { method: "POST", body: "from chromium" });
        es.onmessage = (e) => {
          es.close();
          resolve(e.data);
        };
        setTimeout(() => reject(new Error("no event within 10 s")), 10_000);
      }),
    BASE,
  );
  if (data !== "from chromium") throw new Error(`event data: ${data}`);
  console.log("ok 2 - EventSource over https receives the event published with fetch()");
  console.log("2 passed, 0 failed");
} catch (err) {
  console.error(err);
  console.log("0 passed, 1 failed");
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
  process.exit();
}
