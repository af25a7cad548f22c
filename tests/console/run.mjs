// Shared by the browser scripts (browser.mjs, access.mjs): numbered "ok" lines, one Chromium for
// every check, and the summary line tests/console.rs looks for. The first failed check ends the
// run with a non-zero status.

import { chromium } from "playwright-core";

let passed = 0;

/** Reports a passed check. */
export function ok(what) {
  passed++;
  console.log(`ok ${passed} - ${what}`);
}

/** Runs each `check(browser)` in order against one Debian chromium ($CHROMIUM), then exits. */
export async function runChecks(...checks) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    // The test may run as root (CI), where Chromium's sandbox cannot start.
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  try {
    for (const check of checks) await check(browser);
    console.log(`${passed} passed, 0 failed`);
  } catch (err) {
    console.error(err);
    console.log(`${passed} passed, 1 failed`);
    process.exitCode = 1;
  } finally {
    await browser.close();
    // Sockets, agents and curl children of a failed check must not keep the process alive.
    process.exit();
  }
}
