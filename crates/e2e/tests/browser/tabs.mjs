// The Kubernetes clusters page's tabs and the agent page's activity, as a
// person would read them, with a screenshot of each page and state:
// Shared agents, Available configurations (registering one from there),
// the agent page with its activity, a project without agents, and the
// 404 of a project the user cannot see.
// Env: KAS_URL, USERNAME, PASSWORD, PROJECT, EMPTY_PROJECT, HIDDEN_PROJECT, SCREENSHOTS.
import { launch, report } from "./browser.mjs";

const { KAS_URL, USERNAME, PASSWORD, PROJECT, EMPTY_PROJECT, HIDDEN_PROJECT, SCREENSHOTS } = process.env;
const rows = (page) =>
  page.$$eval("tr[data-agent-id]", (rows) =>
    rows.map((r) => ({
      name: r.querySelector("strong").textContent,
      status: r.querySelector("[data-field=status]").textContent.trim(),
      configuration: r.lastElementChild.textContent.trim(),
      badges: [...r.querySelectorAll("td:first-child .badge")].map((b) => b.textContent),
    })),
  );
const { context, close } = await launch();
try {
  const page = context.pages()[0] ?? (await context.newPage());
  await page.goto(`${KAS_URL}/${PROJECT}/-/clusters`);
  await page.fill("#username", USERNAME);
  await page.fill("#password", PASSWORD);
  await page.click("button[type=submit]");
  await page.waitForURL(`${KAS_URL}/${PROJECT}/-/clusters`);
  report("project agents", {
    rows: await rows(page),
    tabs: await page.$$eval("nav.tabs a", (tabs) => tabs.map((t) => t.textContent.replace(/\s+/g, " ").trim())),
  });

  await page.click("nav.tabs >> text=Shared agents");
  await page.waitForURL(/tab=shared/);
  report("shared agents", {
    rows: await rows(page),
    tabs: await page.$$eval("nav.tabs a", (tabs) => tabs.map((t) => t.textContent.replace(/\s+/g, " ").trim())),
  });
  await page.screenshot({ path: `${SCREENSHOTS}/clusters-shared.png`, fullPage: true });

  await page.click("nav.tabs >> text=Available configurations");
  await page.waitForURL(/tab=configurations/);
  report("available configurations", {
    folders: await page.$$eval("table[data-configurations] code", (cells) => cells.map((c) => c.textContent)),
  });
  await page.screenshot({ path: `${SCREENSHOTS}/clusters-configurations.png`, fullPage: true });
  await page.click("table[data-configurations] button");
  await page.waitForSelector("#agent-token");
  report("registered", {
    heading: await page.textContent(".token-panel h2"),
    rows: await rows(page),
  });

  await page.goto(`${KAS_URL}/${PROJECT}/-/cluster_agents/edge`);
  report("activity", {
    kinds: await page.$$eval("ol.activity li[data-kind]", (items) => items.map((i) => i.dataset.kind)),
    details: await page.$$eval("ol.activity li[data-kind]", (items) => items.map((i) => i.textContent.replace(/\s+/g, " ").trim())),
    days: await page.$$eval("ol.activity li.day", (items) => items.map((i) => i.textContent)),
  });
  await page.screenshot({ path: `${SCREENSHOTS}/agent-activity.png`, fullPage: true });

  await page.goto(`${KAS_URL}/${EMPTY_PROJECT}/-/clusters`);
  report("empty", { text: await page.textContent("main") });
  await page.screenshot({ path: `${SCREENSHOTS}/clusters-empty.png`, fullPage: true });

  const response = await page.goto(`${KAS_URL}/${HIDDEN_PROJECT}/-/clusters`);
  report("hidden", { status: response.status(), text: await page.textContent("main") });
  await page.screenshot({ path: `${SCREENSHOTS}/not-found.png`, fullPage: true });
} finally {
  await close();
}
