// Browser tests of the web UI against a running Orbit (tools/web.sh e2e,
// which tools/test.sh runs against `orbit dev`): Debian's chromium driven by
// playwright-core, headless, at 1280×800. Each step asserts what a user sees;
// screenshots of each page go to $ORBIT_SCREENSHOTS (docs/screenshots/).
import { chromium } from "playwright-core";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execFileSync } from "node:child_process";

const endpoint = process.env.ORBIT_ENDPOINT;
const apiKey = process.env.ORBIT_API_KEY;
const adminToken = process.env.ORBIT_ADMIN_TOKEN;
const caCert = process.env.ORBIT_CA_CERT; // the region's platform CA (dev.json regions[].ca_cert)
const satelliteZone = process.env.ORBIT_SATELLITE_ZONE ?? "satellites.orbit.local";
const shots = process.env.ORBIT_SCREENSHOTS ?? "e2e/out";
if (!endpoint || !apiKey || !adminToken || !caCert) {
  console.error("browser.mjs: set ORBIT_ENDPOINT, ORBIT_API_KEY, ORBIT_ADMIN_TOKEN and ORBIT_CA_CERT (all in orbit dev's dev.json)");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

const chromiumArgs = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"];
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: chromiumArgs });
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
// queryState waits for the query workbench's state to read want; on a
// timeout it says what the page showed instead (state, rows, any alert).
async function queryState(want, p = page, timeout = 20_000) {
  try {
    await p.waitForFunction((w) => document.querySelector('[data-testid="state"]')?.textContent === w, want, { timeout });
  } catch (err) {
    const seen = await p.evaluate(() => ({
      state: document.querySelector('[data-testid="state"]')?.textContent,
      rows: document.querySelector('[data-testid="rows"]')?.textContent,
      alerts: [...document.querySelectorAll('[role="alert"]')].map((e) => e.textContent),
    })).catch((e) => ({ evaluate: String(e) }));
    throw new Error(`query state never read "${want}" within ${timeout} ms; the page shows ${JSON.stringify(seen)}; console errors: ${JSON.stringify(consoleErrors)}`, { cause: err });
  }
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
    await queryState("done");
    const rows = Number(await page.getByTestId("results").getAttribute("data-rows"));
    expect(rows >= 1, `rows ${rows}`);
    const header = await page.locator(".rhead").innerText();
    expect(header.includes("service") && header.includes("n"), `header ${header}`);
    const firstCell = await page.locator('.results [role="row"][aria-rowindex="2"] [role="cell"]').first().innerText();
    expect(firstCell.length > 0, "empty first cell");
    await page.screenshot({ path: join(shots, "query.png") });
  });

  await step("both example queries answer", async () => {
    for (const ex of ["Example 1", "Example 2"]) {
      await page.getByRole("button", { name: ex }).click();
      await page.getByRole("button", { name: "Run" }).click();
      await page.waitForFunction(() => ["done", "failed"].includes(document.querySelector('[data-testid="state"]')?.textContent ?? ""));
      const state = await page.getByTestId("state").innerText();
      const rows = Number(await page.getByTestId("results").getAttribute("data-rows"));
      expect(state === "done" && rows > 0, `${ex}: ${state}, ${rows} rows`);
    }
  });

  await step("a bad query says what is wrong", async () => {
    await page.getByLabel("SQL").fill("DELETE FROM spans");
    await page.getByRole("button", { name: "Run" }).click();
    await queryState("failed");
    const alert = await page.getByRole("alert").innerText();
    expect(/READ_ONLY|read-only|read only/i.test(alert), `alert: ${alert}`);
  });

  await step("fan out over a label selector with per-satellite status", async () => {
    await page.getByLabel("Label selector").check();
    await page.getByRole("textbox", { name: "Label selector" }).fill("env=demo");
    await page.getByLabel("SQL").fill("SELECT count(*) AS spans FROM spans");
    await page.getByRole("button", { name: "Run" }).click();
    await queryState("done");
    const per = await page.getByTestId("per-satellite").locator("tbody tr").allInnerTexts();
    expect(per.length === 3 && per.every((r) => r.includes("OK")), `per-satellite ${per}`);
    // Each answered satellite reports its own time for the statement.
    expect(per.every((r) => /OK.*\d ms\s+\d+\.\d ms/s.test(r)), `per-satellite times ${per}`);
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
    // Rows are arriving (the count of this run, not the last one's).
    await page.waitForFunction(
      () => document.querySelector('[data-testid="state"]')?.textContent === "running…" && Number(document.querySelector('[data-testid="rows"]')?.textContent?.replaceAll(",", "")) > 0,
      null,
      { timeout: 30_000 },
    );
    await page.getByRole("button", { name: "Cancel" }).click();
    await queryState("canceled");
    await page.getByTestId("canceled").waitFor();
    // The next query runs at once.
    await page.getByLabel("SQL").fill("SELECT 42 AS answer");
    await page.getByLabel("SQL").press("Control+Enter");
    await queryState("done");
    const cell = await page.locator('.results [role="row"][aria-rowindex="2"] [role="cell"]').first().innerText();
    expect(cell === "42", `cell ${cell}`);
  });

  await step("tail logs, filter them, follow one trace across services", async () => {
    await page.getByRole("link", { name: "Logs" }).click();
    await page.getByRole("heading", { name: "Logs", exact: true }).waitFor();
    await page.waitForFunction(() => document.querySelector('select[aria-label="Stream"]')?.value === "orbit-logs", null, { timeout: 30_000 });
    await page.waitForFunction(() => document.querySelector('[data-testid="tail-state"]')?.textContent?.includes("tailing"));
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="loglines"]')?.getAttribute("data-count")) > 0, null, { timeout: 30_000 });
    // Level filter: only WARN and above remain (possibly none).
    await page.getByLabel("Level").selectOption("WARN");
    const lv = await page.locator(".logline .lvl").allInnerTexts();
    expect(lv.every((l) => l === "WARN" || l === "ERROR"), `levels after the filter: ${lv}`);
    await page.getByLabel("Level").selectOption("");
    // The gateway's request lines carry trace IDs; one query's trace spans
    // the gateway, the broker, the connector and the satellite.
    await page.getByLabel("Search logs").fill("ExecuteQuery");
    await page.getByLabel("Service").selectOption("gateway");
    const link = page.getByTestId("trace-link").last();
    await link.waitFor({ timeout: 30_000 });
    await link.click();
    await page.getByTestId("trace-summary").waitFor();
    await page.waitForFunction(() => {
      const t = document.querySelector('[data-testid="trace-summary"]')?.textContent ?? "";
      const m = t.match(/across (\d+) services/);
      return m && Number(m[1]) >= 3;
    }, null, { timeout: 30_000 });
    const summary = await page.getByTestId("trace-summary").innerText();
    expect(/gateway/.test(summary) && /querybroker/.test(summary), `trace summary: ${summary}`);
    await page.screenshot({ path: join(shots, "logs.png") });
  });

  // whoAmI asks the gateway (outside the browser) whether a key works.
  async function whoAmI(key) {
    const r = await fetch(`${endpoint}/orbit.gateway.v1.GatewayService/WhoAmI`, {
      method: "POST", headers: { "Content-Type": "application/json", Authorization: `Bearer ${key}` }, body: "{}",
    });
    return r.status;
  }

  await step("admin: a wrong admin token is refused", async () => {
    await page.getByRole("link", { name: "Admin" }).click();
    await page.getByLabel("Admin token").fill("not-the-admin-token-000000000000");
    await page.getByRole("button", { name: "Unlock" }).click();
    const alert = await page.getByRole("alert").innerText();
    expect(/admin token was refused/i.test(alert), `alert: ${alert}`);
    consoleErrors.length = 0; // its 401, expected
  });

  let secret = "";
  await step("admin: create an API key (shown once) and it works", async () => {
    await page.getByLabel("Admin token").fill(adminToken);
    await page.getByRole("button", { name: "Unlock" }).click();
    await page.getByRole("tab", { name: "API keys" }).waitFor();
    await page.getByTestId("apikeys").locator("tbody tr").first().waitFor();
    await page.getByLabel("Key description").fill("browser test");
    await page.getByRole("button", { name: "Create API key" }).click();
    secret = await page.getByTestId("secret-value").innerText();
    expect(/^ok_/.test(secret), `secret ${secret}`);
    await page.screenshot({ path: join(shots, "admin-apikeys.png") });
    let status = 0;
    for (let i = 0; i < 50 && status !== 200; i++) { // contexts reach the region within moments
      status = await whoAmI(secret);
      if (status !== 200) await new Promise((r) => setTimeout(r, 200));
    }
    expect(status === 200, `the new key: HTTP ${status}`);
  });

  await step("admin: revoke the key and the gateway refuses it", async () => {
    await page.getByRole("button", { name: "Done" }).click();
    const prefix = secret.split("_")[1];
    const row = page.locator(`[data-testid="apikeys"] tr[data-prefix="${prefix}"]`);
    page.once("dialog", (d) => d.accept());
    await row.getByRole("button", { name: "Revoke" }).click();
    await row.getByText("revoked").waitFor();
    let status = 200;
    for (let i = 0; i < 50 && status === 200; i++) {
      status = await whoAmI(secret);
      if (status === 200) await new Promise((r) => setTimeout(r, 200));
    }
    expect(status === 401, `the revoked key: HTTP ${status}`);
  });

  await step("admin: a deploy key comes with its install command", async () => {
    await page.getByRole("tab", { name: "Deploy keys" }).click();
    await page.getByLabel("Deploy key description").fill("browser test sites");
    await page.getByRole("button", { name: "Create deploy key" }).click();
    const dk = await page.getByTestId("secret-value").innerText();
    const cmd = await page.getByTestId("install-command").innerText();
    expect(/^odk_/.test(dk) && cmd.includes(dk) && cmd.includes("--connector-url"), `deploy key ${dk}, command ${cmd}`);
    await page.screenshot({ path: join(shots, "admin-deploykeys.png") });
    await page.getByRole("button", { name: "Done" }).click();
  });

  await step("admin: regions with the context publisher's lag", async () => {
    await page.getByRole("tab", { name: "Regions" }).click();
    await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="regions"] tbody tr')].some((r) => r.textContent?.includes("in sync")));
    const lag = await page.getByTestId("lag").first().innerText();
    expect(/changes/.test(lag), `lag ${lag}`);
    await page.getByRole("tab", { name: "Tenants" }).click();
    await page.getByTestId("tenants").getByText("Dev tenant").first().waitFor();
    await page.getByRole("tab", { name: "Regions" }).click();
    await page.screenshot({ path: join(shots, "admin-regions.png") });
  });

  await step("direct mode without the platform CA falls back to the gateway, and says so", async () => {
    // This browser does not trust the platform CA: the HTTPS call to the
    // satellite fails certificate validation and the workbench falls back.
    await page.getByRole("link", { name: "Query" }).click();
    await page.getByLabel("One satellite").check();
    await page.getByLabel("Satellite", { exact: true }).fill("demo-1");
    await page.getByLabel("Direct mode").check();
    await page.getByLabel("SQL").fill("SELECT 7 AS seven");
    await page.getByRole("button", { name: "Run" }).click();
    await queryState("done");
    const note = await page.getByTestId("fallback").innerText();
    expect(/Direct mode unavailable/.test(note), `fallback note: ${note}`);
    expect((await page.locator(".progress .badge").first().innerText()) === "passthrough", "mode badge");
    const cell = await page.locator('.results [role="row"][aria-rowindex="2"] [role="cell"]').first().innerText();
    expect(cell === "7", `cell ${cell}`);
    await page.screenshot({ path: join(shots, "query-direct-fallback.png") });
    consoleErrors.length = 0; // the refused certificate, expected
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

// Direct mode in a browser that trusts the platform CA: an NSS database
// (certutil, Debian's libnss3-tools) in the browser's own $HOME holds the CA
// as a trusted root, and satellite names resolve to loopback. Full
// certificate validation: no flag that ignores certificate errors.
if (!failed) {
  const home = mkdtempSync(join(tmpdir(), "orbit-chromium-"));
  const nssdb = join(home, ".pki", "nssdb");
  mkdirSync(nssdb, { recursive: true });
  execFileSync("certutil", ["-N", "-d", `sql:${nssdb}`, "--empty-password"]);
  execFileSync("certutil", ["-A", "-d", `sql:${nssdb}`, "-n", "orbit-platform-ca", "-t", "C,,", "-i", caCert]);
  const trusting = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [...chromiumArgs, `--host-resolver-rules=MAP *.${satelliteZone} 127.0.0.1`],
    env: { ...process.env, HOME: home },
  });
  const p2 = await (await trusting.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  p2.setDefaultTimeout(20_000);
  const errors2 = [];
  p2.on("console", (m) => m.type() === "error" && errors2.push(m.text()));
  try {
    const t0 = Date.now();
    await p2.goto(endpoint);
    await p2.getByLabel("API key").fill(apiKey);
    await p2.getByRole("button", { name: "Sign in" }).click();
    await p2.getByRole("heading", { name: "Satellites", exact: true }).waitFor();
    await p2.goto(`${endpoint}/query?satellite=demo-1`);
    await p2.getByLabel("Direct mode").check();
    await p2.getByLabel("SQL").fill("SELECT service, count(*) AS n FROM spans GROUP BY 1 ORDER BY 1");
    await p2.getByRole("button", { name: "Run" }).click();
    await p2.waitForFunction(() => ["done", "failed"].includes(document.querySelector('[data-testid="state"]')?.textContent ?? ""));
    const state = await p2.getByTestId("state").innerText();
    const fallback = await p2.getByTestId("fallback").count();
    const mode = await p2.locator(".progress .badge").first().innerText();
    const rows = Number(await p2.getByTestId("results").getAttribute("data-rows"));
    await p2.screenshot({ path: join(shots, "query-direct.png") });
    if (state !== "done" || fallback !== 0 || mode !== "direct" || !(rows >= 1)) {
      const note = fallback ? await p2.getByTestId("fallback").innerText() : "";
      throw new Error(`direct query: state ${state}, mode ${mode}, rows ${rows}, fallback ${note}`);
    }
    if (errors2.length) throw new Error(`console errors: ${errors2.join(" | ")}`);
    console.log(`ok   direct mode in the browser: HTTPS to the satellite, platform CA trusted through NSS (${Date.now() - t0} ms)`);
  } catch (err) {
    failed = true;
    console.log(`FAIL direct mode in the browser: ${err?.stack ?? err}`);
    await p2.screenshot({ path: join(shots, "failed-direct.png") }).catch(() => {});
  } finally {
    await trusting.close();
    rmSync(home, { recursive: true, force: true });
  }
}
console.log(failed ? "browser tests: FAILED" : "browser tests: all passed");
process.exit(failed ? 1 : 0);
