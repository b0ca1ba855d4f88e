// Connect a cluster, as a person would: sign in, open the project's
// Kubernetes clusters, try a name the rule refuses, create and register
// an agent, read its token and install command from the page; then (when
// the test says "go" on stdin, once it has installed and started the
// agent) watch the row turn Connected without reloading.
// Env: KAS_URL, USERNAME, PASSWORD, PROJECT, AGENT, SCREENSHOTS.
import { createInterface } from "node:readline";
import { launch, report } from "./browser.mjs";

const { KAS_URL, USERNAME, PASSWORD, PROJECT, AGENT, SCREENSHOTS } = process.env;
const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));
const { context, close } = await launch();
try {
  const page = context.pages()[0] ?? (await context.newPage());
  await page.goto(`${KAS_URL}/${PROJECT}/-/clusters`);
  await page.fill("#username", USERNAME);
  await page.fill("#password", PASSWORD);
  await page.click("button[type=submit]");
  await page.waitForURL(`${KAS_URL}/${PROJECT}/-/clusters`);
  report("clusters", {
    rows: await page.$$eval("tr[data-agent-id]", (rows) =>
      rows.map((r) => [r.querySelector("strong").textContent, r.querySelector("[data-field=status]").textContent.trim()]),
    ),
  });

  await page.click("summary");
  await page.fill("#agent-name", "Bad_Name");
  report("rule", { text: await page.textContent("#agent-name-rule") });
  await page.screenshot({ path: `${SCREENSHOTS}/connect-a-cluster.png`, fullPage: true });
  await page.click("text=Create and register");
  report("blocked", { url: page.url(), rule: await page.textContent("#agent-name-rule") });

  await page.fill("#agent-name", AGENT);
  await page.click("text=Create and register");
  await page.waitForSelector("#agent-token");
  report("token", {
    token: (await page.textContent("#agent-token")).trim(),
    command: await page.textContent("#install-command"),
    warning: await page.textContent(".token-panel strong"),
  });
  await page.screenshot({ path: `${SCREENSHOTS}/agent-token.png`, fullPage: true });

  await nextLine();
  const row = page.locator("tr[data-agent-id]").filter({ hasText: AGENT });
  // Exactly "Connected" (not "Never connected" or "Not connected").
  await row.locator("[data-field=status]", { hasText: /^\s*Connected\s*$/ }).waitFor({ timeout: 30000 });
  report("connected", {
    status: await row.locator("[data-field=status]").textContent(),
    version: await row.locator("[data-field=version]").textContent(),
  });
  await page.screenshot({ path: `${SCREENSHOTS}/clusters.png`, fullPage: true });

  // The agent's page: its connection and token; revoke the token.
  await row.locator("a").click();
  await page.waitForSelector("h1");
  report("agent page", {
    heading: (await page.textContent("h1")).trim(),
    connections: await page.$$eval("table[data-connections] tbody tr", (rows) => rows.length),
    tokens: await page.$$eval("tr[data-token-id] td:first-child", (cells) => cells.map((c) => c.textContent)),
  });
  await page.screenshot({ path: `${SCREENSHOTS}/agent.png`, fullPage: true });
  await page.click("tr[data-token-id] button");
  await page.waitForURL(`${KAS_URL}/${PROJECT}/-/cluster_agents/${AGENT}`);
  report("revoked", { tokens: await page.$$eval("tr[data-token-id]", (rows) => rows.length) });

  // Back on the list, the row turns Not connected without reloading.
  await page.goto(`${KAS_URL}/${PROJECT}/-/clusters`);
  const again = page.locator("tr[data-agent-id]").filter({ hasText: AGENT });
  await again.locator("[data-field=status]", { hasText: /^\s*Not connected\s*$/ }).waitFor({ timeout: 30000 });
  report("disconnected", { status: (await again.locator("[data-field=status]").textContent()).trim() });
} finally {
  lines.close();
  await close();
}
