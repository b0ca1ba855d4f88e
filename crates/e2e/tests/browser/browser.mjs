// Debian's chromium, headless, driven by playwright-core from the test
// cache ($GLAGENT_CACHE/npm/playwright), with a fresh profile each run.
import { createRequire } from "node:module";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const cache = process.env.GLAGENT_CACHE || join(process.env.HOME, ".cache/glagent");
const require = createRequire(join(cache, "npm/playwright/node_modules/"));
const { chromium } = require("playwright-core");

export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), "glagent-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/lib/chromium/chromium",
    headless: true,
    // kas's own CA is not in the browser's store.
    ignoreHTTPSErrors: true,
    viewport: { width: 1280, height: 800 },
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
  const close = async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  };
  return { context, close };
}

/// One result line for the Rust test: {"step": ..., ...}.
export function report(step, fields = {}) {
  console.log(JSON.stringify({ step, ...fields }));
}
