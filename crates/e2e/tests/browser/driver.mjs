// A browser the Rust test drives line by line: one JSON command per line
// on stdin, one JSON answer per line on stdout ({"ok": true, ...} or
// {"ok": false, "error": "..."}). The test decides what happens in the
// cluster between commands, and asks the page what it shows.
// Commands: {"do": "goto", "url"} · {"do": "signIn", "url", "username", "password"}
// · {"do": "wait", "selector", "state"?, "text"?, "attached"?, "timeout"?} (an
// element, with data-state or text; attached: present though not visible) · {"do": "text", "selector"} · {"do": "texts", "selector"}
// · {"do": "attribute", "selector", "name"} · {"do": "click", "selector", "accept"?}
// · {"do": "fill", "selector", "value", "change"?} · {"do": "select", "selector", "value"}
// · {"do": "screenshot", "path"} · {"do": "changedAt", "selector", "text"}
// (when, in ms since the epoch, the element first showed the text).
// Env: none; SCREENSHOTS is only where tests put pictures.
import { createInterface } from "node:readline";
import { launch } from "./browser.mjs";

const { context, close } = await launch();
const page = context.pages()[0] ?? (await context.newPage());
let acceptDialogs = true;
page.on("dialog", (dialog) => (acceptDialogs ? dialog.accept() : dialog.dismiss()));
const answer = (fields) => console.log(JSON.stringify(fields));

const run = async (command) => {
  const timeout = command.timeout ?? 30000;
  switch (command.do) {
    case "goto": {
      const response = await page.goto(command.url);
      return { status: response?.status(), url: page.url() };
    }
    case "signIn": {
      await page.goto(command.url);
      await page.fill("#username", command.username);
      await page.fill("#password", command.password);
      await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
      return { url: page.url() };
    }
    case "wait": {
      let selector = command.selector;
      if (command.state) selector += `[data-state="${command.state}"]`;
      const locator = command.text ? page.locator(selector, { hasText: command.text }) : page.locator(selector);
      await locator.first().waitFor({ timeout, state: command.attached ? "attached" : "visible" });
      return { text: (await locator.first().textContent())?.trim() };
    }
    case "text":
      return { text: (await page.textContent(command.selector, { timeout }))?.trim() };
    case "texts":
      return { texts: await page.$$eval(command.selector, (nodes) => nodes.map((n) => n.textContent.trim())) };
    case "attribute":
      return { value: await page.getAttribute(command.selector, command.name, { timeout }) };
    case "click":
      acceptDialogs = command.accept ?? true;
      await page.click(command.selector, { timeout });
      return {};
    case "fill":
      await page.fill(command.selector, command.value, { timeout });
      if (command.change) await page.dispatchEvent(command.selector, "change");
      return {};
    case "select":
      await page.selectOption(command.selector, command.value, { timeout });
      return {};
    case "screenshot":
      await page.screenshot({ path: command.path, fullPage: true });
      return {};
    case "changedAt":
      // Resolves in the page as soon as the element shows the text.
      return {
        at: await page.evaluate(
          ([selector, text, timeout]) =>
            new Promise((resolve, reject) => {
              const shows = () => document.querySelector(selector)?.textContent.includes(text);
              if (shows()) return resolve(Date.now());
              const observer = new MutationObserver(() => {
                if (shows()) {
                  observer.disconnect();
                  resolve(Date.now());
                }
              });
              observer.observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
              setTimeout(() => reject(new Error(`${selector} never showed ${text}`)), timeout);
            }),
          [command.selector, command.text, timeout],
        ),
      };
    default:
      throw new Error(`unknown command ${command.do}`);
  }
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (line.trim() === "") continue;
  try {
    answer({ ok: true, ...(await run(JSON.parse(line))) });
  } catch (error) {
    answer({ ok: false, error: String(error.message ?? error) });
  }
}
await close();
