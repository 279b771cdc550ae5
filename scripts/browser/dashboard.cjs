// Drives the monitoring dashboard in headless Chromium the way an operator
// would: open it, post a company through the api, watch it appear, search
// for it; then pick the employees dataset and see only an employee's events. Prints one JSON line with what it saw; exits 1 (after a failure
// screenshot) if any step misses its deadline.
//
//   node dashboard.cjs MONITOR_URL API_URL SCREENSHOT
//   env: PLAYWRIGHT_CORE (module path), CHROMIUM_BIN

"use strict";
const { chromium } = require(process.env.PLAYWRIGHT_CORE || "playwright-core");

const [monitorUrl, apiUrl, screenshot] = process.argv.slice(2);
const STEP_MS = 60_000;

function company(tag) {
  // Same shape as examples/data/json/companies/c.json, with its own name and a
  // valid INN (10 digits, check digit computed).
  const base = String(Date.now() % 1_000_000_000).padStart(9, "0");
  const weights = [2, 4, 10, 3, 5, 9, 4, 6, 8];
  const check = (weights.reduce((s, w, i) => s + w * Number(base[i]), 0) % 11) % 10;
  return { name: `Browser ${tag}`, inn: base + check, employees: 3 };
}

function employee(tag) {
  // A valid SNILS: 9 digits, then their weighted sum (9 down to 1) reduced
  // as the rule says (datasets/employees, cmd-processor's "snils" format).
  const number = String(100_000_000 + (Date.now() % 800_000_000)).padStart(9, "0");
  const sum = [...number].reduce((s, d, i) => s + Number(d) * (9 - i), 0);
  const check = sum < 100 ? sum : sum <= 101 ? 0 : (sum % 101) % 100;
  return { full_name: `Browser Person ${tag}`, snils: number + String(check).padStart(2, "0"), company_inn: "7707083893" };
}

async function post(path, requestId, body) {
  const response = await fetch(apiUrl + path, {
    method: "POST",
    headers: { "content-type": "application/json", "x-request-id": requestId },
    body: JSON.stringify(body),
  });
  const accepted = await response.json();
  if (response.status !== 202) throw new Error(`api answered ${response.status}: ${JSON.stringify(accepted)}`);
  return accepted.files[0].file_id;
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
    const fileId = await post("/import/companies", requestId, company(tag));

    // The live table shows the file loaded, from the stream alone.
    await page.waitForSelector(`tr[data-file-id="${fileId}"][data-event-type="FileLoaded"]`, { timeout: STEP_MS });
    const shownAfterMs = Date.now() - posted;
    // Its receipt too: the two events come from two topics, in either order,
    // and the stream shows each once it is stored.
    await page.waitForSelector(`tr[data-file-id="${fileId}"][data-event-type="FileExtractSuccess"]`, { timeout: STEP_MS });
    // Each row names the trace its event was published in.
    const rowTraceIds = await page.$$eval(`tr[data-file-id="${fileId}"] [data-trace-id]`, (els) => els.map((el) => el.dataset.traceId));
    // The counters (from /stats) catch up.
    await page.waitForFunction(
      () => Number(document.querySelector('[data-counter="loaded"] b')?.textContent) >= 1,
      null, { timeout: STEP_MS });

    // Searching the file id shows its timeline.
    await page.fill("#search-id", fileId);
    await page.click("#search button");
    await page.waitForSelector(`[data-detail-for="${fileId}"] li[data-event-type="FileLoaded"]`, { timeout: STEP_MS });
    const timeline = await page.$$eval(`[data-detail-for="${fileId}"] li`, (items) => items.map((li) => li.dataset.eventType));
    const detailTraceIds = await page.$$eval(`[data-detail-for="${fileId}"] [data-trace-id]`, (els) => els.map((el) => el.dataset.traceId));

    // Searching the request id shows its file.
    await page.fill("#search-id", requestId);
    await page.click("#search button");
    await page.waitForSelector(`[data-detail-for="${requestId}"]`, { timeout: STEP_MS });
    const requestText = await page.textContent(`[data-detail-for="${requestId}"]`);

    // Narrowed to employees: the company's rows go, an employee's come.
    // The choices are the datasets the monitor has seen events of.
    await page.waitForSelector('#dataset option[value="companies"]', { state: "attached", timeout: STEP_MS });
    await post("/import/employees", `${requestId}-first-employee`, employee(`${tag}-1`));
    await page.waitForSelector('#dataset option[value="employees"]', { state: "attached", timeout: STEP_MS });
    await page.selectOption("#dataset", "employees");
    await page.waitForSelector("#connection.live", { timeout: STEP_MS });
    const employeeId = await post("/import/employees", `${requestId}-employee`, employee(`${tag}-2`));
    const employeeRow = `tr[data-file-id="${employeeId}"][data-event-type="FileLoaded"]`;
    const employeeShown = await page.waitForSelector(employeeRow, { timeout: STEP_MS }).then(() => true, () => false);
    const datasetsShown = await page.$$eval("#events tr", (rows) => [...new Set(rows.map((r) => r.cells[2]?.textContent))]);
    const companyRows = await page.$$(`tr[data-file-id="${fileId}"]`);

    await page.screenshot({ path: screenshot, fullPage: true });
    if (consoleErrors.length) throw new Error("console errors: " + consoleErrors.join(" | "));
    console.log(JSON.stringify({ file_id: fileId, request_id: requestId, shown_after_ms: shownAfterMs, timeline, request_text: requestText,
                                 row_trace_ids: rowTraceIds, detail_trace_ids: detailTraceIds,
                                 employee_id: employeeId, employee_shown: employeeShown, datasets_shown: datasetsShown, company_rows_after_filter: companyRows.length }));
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
