// Browser tests of the web UI against a running Orbit (tools/web.sh e2e,
// which tools/test.sh runs against `orbit dev`): Debian's chromium driven by
// playwright-core, headless, at 1280×800. Each step asserts what a user sees;
// screenshots of each page go to $ORBIT_SCREENSHOTS (docs/screenshots/).
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const endpoint = process.env.ORBIT_ENDPOINT;
const apiKey = process.env.ORBIT_API_KEY;
const shots = process.env.ORBIT_SCREENSHOTS ?? "e2e/out";
if (!endpoint || !apiKey) {
  console.error("browser.mjs: set ORBIT_ENDPOINT and ORBIT_API_KEY (orbit dev prints both)");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
const page = await context.newPage();
const consoleErrors = [];
page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
page.on("pageerror", (e) => consoleErrors.push(String(e)));
page.setDefaultTimeout(20_000);

let failed = false;
async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (err) {
    failed = true;
    console.log(`FAIL ${name}: ${err?.stack ?? err}`);
    await page.screenshot({ path: join(shots, `failed-${name.replace(/\W+/g, "-")}.png`) }).catch(() => {});
    throw err;
  }
}
function expect(cond, msg) {
  if (!cond) throw new Error(msg);
}

try {
  await step("sign-in refuses a bad key and says so", async () => {
    await page.goto(endpoint);
    await page.getByLabel("API key").fill("ok_not_a_real_key_0000000000000000");
    await page.getByRole("button", { name: "Sign in" }).click();
    const alert = page.getByRole("alert");
    await alert.waitFor();
    expect(/refused/i.test(await alert.innerText()), `alert says: ${await alert.innerText()}`);
    await page.screenshot({ path: join(shots, "signin.png") });
    consoleErrors.length = 0; // the refused key's 401, expected
  });

  await step("sign in with the key", async () => {
    await page.getByLabel("API key").fill(apiKey);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Satellites", exact: true }).waitFor();
    expect(new URL(page.url()).pathname === "/satellites", `at ${page.url()}`);
  });

  await step("3 satellites go HEALTHY through Watch", async () => {
    await page.waitForFunction(() => {
      const st = [...document.querySelectorAll('[data-testid="satellites"] [data-testid="status"]')].map((e) => e.textContent);
      return st.length === 3 && st.every((s) => s === "HEALTHY");
    }, null, { timeout: 60_000 });
    const names = await page.locator("[data-satellite]").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-satellite")));
    expect(JSON.stringify(names) === JSON.stringify(["demo-1", "demo-2", "demo-3"]), `satellites ${names}`);
    expect((await page.getByTestId("watch-state").innerText()).includes("live"), "watch not live");
    // The filter narrows the list.
    await page.getByLabel("Filter satellites").fill("demo-2");
    await page.waitForFunction(() => document.querySelectorAll("[data-satellite]").length === 1);
    await page.getByLabel("Filter satellites").fill("");
    await page.waitForFunction(() => document.querySelectorAll("[data-satellite]").length === 3);
    await page.screenshot({ path: join(shots, "satellites.png") });
  });

  await step("query one satellite and see rows", async () => {
    await page.locator('[data-satellite="demo-1"]').getByRole("button", { name: "Query" }).click();
    await page.getByRole("heading", { name: "Query", exact: true }).waitFor();
    expect((await page.getByLabel("Satellite", { exact: true }).inputValue()) === "demo-1", "satellite not prefilled");
    // Schema hints arrive from the satellite.
    await page.getByRole("complementary", { name: "Tables and columns" }).getByRole("button", { name: "spans", exact: true }).waitFor();
    await page.getByLabel("SQL").fill("SELECT service, count(*) AS n FROM spans GROUP BY 1 ORDER BY 1");
    await page.getByLabel("SQL").press("Control+Enter");
    await page.waitForFunction(() => document.querySelector('[data-testid="state"]')?.textContent === "done");
    const rows = Number(await page.getByTestId("results").getAttribute("data-rows"));
    expect(rows >= 1, `rows ${rows}`);
    const header = await page.locator(".rhead").innerText();
    expect(header.includes("service") && header.includes("n"), `header ${header}`);
    const firstCell = await page.locator('.results [role="row"][aria-rowindex="2"] [role="cell"]').first().innerText();
    expect(firstCell.length > 0, "empty first cell");
    await page.screenshot({ path: join(shots, "query.png") });
  });

  await step("a bad query says what is wrong", async () => {
    await page.getByLabel("SQL").fill("DELETE FROM spans");
    await page.getByRole("button", { name: "Run" }).click();
    await page.waitForFunction(() => document.querySelector('[data-testid="state"]')?.textContent === "failed");
    const alert = await page.getByRole("alert").innerText();
    expect(/READ_ONLY|read-only|read only/i.test(alert), `alert: ${alert}`);
  });

  await step("fan out over a label selector with per-satellite status", async () => {
    await page.getByLabel("Label selector").check();
    await page.getByRole("textbox", { name: "Label selector" }).fill("env=demo");
    await page.getByLabel("SQL").fill("SELECT count(*) AS spans FROM spans");
    await page.getByRole("button", { name: "Run" }).click();
    await page.waitForFunction(() => document.querySelector('[data-testid="state"]')?.textContent === "done");
    const per = await page.getByTestId("per-satellite").locator("tbody tr").allInnerTexts();
    expect(per.length === 3 && per.every((r) => r.includes("OK")), `per-satellite ${per}`);
    expect((await page.getByTestId("answered").innerText()).startsWith("3 of 3"), await page.getByTestId("answered").innerText());
    expect(Number(await page.getByTestId("results").getAttribute("data-rows")) === 3, "want one row per satellite");
    await page.screenshot({ path: join(shots, "query-fanout.png") });
  });

  await step("download the result as CSV", async () => {
    const [dl] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Download CSV" }).click()]);
    const path = await dl.path();
    const { readFileSync } = await import("node:fs");
    const csv = readFileSync(path, "utf8").trim().split("\n");
    expect(csv[0] === "satellite,spans" && csv.length === 4, `csv ${csv}`);
  });

  await step("cancel a long query", async () => {
    await page.getByLabel("One satellite").check();
    await page.getByLabel("Satellite", { exact: true }).fill("demo-2");
    await page.getByLabel("SQL").fill("SELECT a.i, b.i AS j FROM range(100000) a(i), range(100000) b(i)");
    await page.getByRole("button", { name: "Run" }).click();
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="rows"]')?.textContent?.replaceAll(",", "")) > 0, null, { timeout: 30_000 });
    await page.getByRole("button", { name: "Cancel" }).click();
    await page.waitForFunction(() => document.querySelector('[data-testid="state"]')?.textContent === "canceled");
    await page.getByTestId("canceled").waitFor();
    // The next query runs at once.
    await page.getByLabel("SQL").fill("SELECT 42 AS answer");
    await page.getByLabel("SQL").press("Control+Enter");
    await page.waitForFunction(() => document.querySelector('[data-testid="state"]')?.textContent === "done");
    const cell = await page.locator('.results [role="row"][aria-rowindex="2"] [role="cell"]').first().innerText();
    expect(cell === "42", `cell ${cell}`);
  });

  await step("no errors in the browser console", async () => {
    // Aborted fetches of a canceled query are expected; anything else is not.
    const real = consoleErrors.filter((e) => !/abort|cancel/i.test(e));
    expect(real.length === 0, `console errors: ${real.join(" | ")}`);
  });
} catch {
  // step() reported it
} finally {
  await browser.close();
}
console.log(failed ? "browser tests: FAILED" : "browser tests: all passed");
process.exit(failed ? 1 : 0);
