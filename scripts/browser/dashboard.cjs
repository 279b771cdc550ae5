// Drives the monitoring dashboard in headless Chromium the way an operator
// would: open it, post a company through the api, watch it appear, search
// for it. Prints one JSON line with what it saw; exits 1 (after a failure
// screenshot) if any step misses its deadline.
//
//   node dashboard.cjs MONITOR_URL API_URL SCREENSHOT
//   env: PLAYWRIGHT_CORE (module path), CHROMIUM_BIN

"use strict";
const { chromium } = require(process.env.PLAYWRIGHT_CORE || "playwright-core");

const [monitorUrl, apiUrl, screenshot] = process.argv.slice(2);
const STEP_MS = 60_000;

function company(tag) {
  // Same shape as examples/data/json/c.json, with its own name and a
  // valid INN (10 digits, check digit computed).
  const base = String(Date.now() % 1_000_000_000).padStart(9, "0");
  const weights = [2, 4, 10, 3, 5, 9, 4, 6, 8];
  const check = (weights.reduce((s, w, i) => s + w * Number(base[i]), 0) % 11) % 10;
  return { name: `Browser ${tag}`, inn: base + check, employees: 3 };
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_BIN,
    headless: true,
    // root on CI machines: Chromium's sandbox needs user namespaces.
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const consoleErrors = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  try {
    await page.goto(monitorUrl + "/", { timeout: STEP_MS });
    await page.waitForSelector("#connection.live", { timeout: STEP_MS });

    const tag = `${process.pid}-${Date.now()}`;
    const requestId = `browser-${tag}`;
    const posted = Date.now();
    const response = await fetch(apiUrl + "/import/companies", {
      method: "POST",
      headers: { "content-type": "application/json", "x-request-id": requestId },
      body: JSON.stringify(company(tag)),
    });
    const accepted = await response.json();
    if (response.status !== 202) throw new Error(`api answered ${response.status}: ${JSON.stringify(accepted)}`);
    const fileId = accepted.files[0].file_id;

    // The live table shows the file loaded, from the stream alone.
    await page.waitForSelector(`tr[data-file-id="${fileId}"][data-event-type="FileLoaded"]`, { timeout: STEP_MS });
    const shownAfterMs = Date.now() - posted;
    // Its receipt too: the two events come from two topics, in either order,
    // and the stream shows each once it is stored.
    await page.waitForSelector(`tr[data-file-id="${fileId}"][data-event-type="FileExtractSuccess"]`, { timeout: STEP_MS });
    // The counters (from /stats) catch up.
    await page.waitForFunction(
      () => Number(document.querySelector('[data-counter="loaded"] b')?.textContent) >= 1,
      null, { timeout: STEP_MS });

    // Searching the file id shows its timeline.
    await page.fill("#search-id", fileId);
    await page.click("#search button");
    await page.waitForSelector(`[data-detail-for="${fileId}"] li[data-event-type="FileLoaded"]`, { timeout: STEP_MS });
    const timeline = await page.$$eval(`[data-detail-for="${fileId}"] li`, (items) => items.map((li) => li.dataset.eventType));

    // Searching the request id shows its file.
    await page.fill("#search-id", requestId);
    await page.click("#search button");
    await page.waitForSelector(`[data-detail-for="${requestId}"]`, { timeout: STEP_MS });
    const requestText = await page.textContent(`[data-detail-for="${requestId}"]`);

    await page.screenshot({ path: screenshot, fullPage: true });
    if (consoleErrors.length) throw new Error("console errors: " + consoleErrors.join(" | "));
    console.log(JSON.stringify({ file_id: fileId, request_id: requestId, shown_after_ms: shownAfterMs, timeline, request_text: requestText }));
  } catch (err) {
    await page.screenshot({ path: screenshot.replace(/\.png$/, "") + "-failure.png", fullPage: true }).catch(() => {});
    throw err;
  } finally {
    await browser.close();
  }
}

main().catch((err) => {
  console.error(String(err && err.stack || err));
  process.exit(1);
});
