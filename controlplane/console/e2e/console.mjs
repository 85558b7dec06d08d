// Drives the console in headless Chromium (Debian's /usr/bin/chromium through playwright-core;
// no browser is downloaded): log in, see the catalog, approve a reported tool, approve a held
// call with a comment, check the audit chain status, see the hub and the KPI charts, press the
// kill switch. Saves a screenshot per step. Usage: node e2e/console.mjs URL TOKEN OUTDIR
// Prints one JSON line {"ok":true,"steps":[...]} on success; exits 1 naming the failed step.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [url, token, out] = process.argv.slice(2);
if (!url || !token || !out) {
  console.error("usage: node e2e/console.mjs URL TOKEN OUTDIR");
  process.exit(2);
}
mkdirSync(out, { recursive: true });
const steps = [];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
});
let step = "start";
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(15000);
  page.on("dialog", (d) => d.accept());
  const shot = async (name) => {
    await page.screenshot({ path: join(out, `${name}.png`), fullPage: true });
    steps.push(name);
  };

  step = "login";
  await page.goto(url + "/");
  await page.getByTestId("login-token").fill("mgc_wrong-key-wrong-key-wrong-key");
  await page.getByTestId("login-submit").click();
  await page.getByTestId("login-error").filter({ hasText: "Login failed" }).waitFor();
  await shot("01-login-refused");
  await page.getByTestId("login-token").fill(token);
  await page.getByTestId("login-submit").click();
  await page.getByTestId("whoami").filter({ hasText: "(admin)" }).waitFor();

  step = "catalog";
  await page.getByTestId("server-files").filter({ hasText: "dc1" }).waitFor();
  await page.getByTestId("tool-files-read").filter({ hasText: "1.4.0" }).waitFor();
  await page.getByTestId("tool-files-old").filter({ hasText: "deprecated (sunset 2027-01-31)" }).waitFor();
  await page.getByTestId("server-files").filter({ hasText: "up on 1 hub(s)" }).waitFor();
  await shot("02-catalog");
  await page.getByTestId("approve-tool-files-delete").click();
  await page.getByTestId("tool-files-delete").filter({ hasText: "approved" }).waitFor();

  step = "approvals";
  await page.getByTestId("tab-approvals").click();
  const row = page.getByTestId("pending-approval").first();
  await row.filter({ hasText: "files__delete" }).waitFor();
  await row.filter({ hasText: "/srv/data" }).waitFor();
  const id = await row.getAttribute("data-id");
  await shot("03-approval-held");
  await page.getByTestId(`comment-${id}`).fill("ok from console");
  await page.getByTestId(`approve-${id}`).click();
  await page.getByTestId("no-pending").waitFor();
  await page.getByTestId(`decided-${id}`).filter({ hasText: "ok from console" }).waitFor();
  await shot("04-approval-decided");

  step = "audit";
  await page.getByTestId("tab-audit").click();
  await page.getByTestId("chain-hub-1").filter({ hasText: "chain intact (3 records)" }).waitFor();
  await shot("05-audit");

  step = "hubs";
  await page.getByTestId("tab-hubs").click();
  await page.getByTestId("hub-hub-1").filter({ hasText: "edge-7 (quic)" }).waitFor();
  await shot("06-hubs");

  step = "kpis";
  await page.getByTestId("tab-kpis").click();
  await page.getByTestId("chart-error rate").filter({ hasText: "error rate: 0.050" }).waitFor();
  await page.getByTestId("chart-approval cycle time").filter({ hasText: "ms" }).waitFor();
  await shot("07-kpis");

  step = "kill";
  await page.getByTestId("tab-kill").click();
  await page.getByTestId("kill-state").filter({ hasText: "Tools are running." }).waitFor();
  await page.getByTestId("kill-reason").fill("console drill");
  await page.getByTestId("kill-press").click();
  await page.getByTestId("kill-state").filter({ hasText: "ALL TOOL EXECUTION STOPPED" }).waitFor();
  await page.getByTestId("kill-state").filter({ hasText: "console drill" }).waitFor();
  await shot("08-kill-pressed");

  console.log(JSON.stringify({ ok: true, steps, approval: id }));
} catch (e) {
  console.error(`console e2e failed at step ${step}: ${e && e.message ? e.message : e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
