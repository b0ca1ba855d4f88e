// Sign in, see the projects, sign out: as a person would, in chromium.
// Env: KAS_URL, USERNAME, PASSWORD, SCREENSHOTS (a directory).
import { launch, report } from "./browser.mjs";

const { KAS_URL, USERNAME, PASSWORD, SCREENSHOTS } = process.env;
const { context, close } = await launch();
try {
  const page = context.pages()[0] ?? (await context.newPage());
  await page.goto(`${KAS_URL}/`);
  report("redirected", { url: page.url() });
  await page.screenshot({ path: `${SCREENSHOTS}/sign-in.png` });

  await page.fill("#username", USERNAME);
  await page.fill("#password", "not the password");
  await page.click("button[type=submit]");
  report("wrong password", { alert: await page.textContent("[role=alert]") });

  await page.fill("#password", PASSWORD);
  await page.click("button[type=submit]");
  await page.waitForURL(`${KAS_URL}/`);
  report("signed in", {
    heading: await page.textContent("h1"),
    projects: await page.$$eval("tbody tr td:first-child strong", (cells) => cells.map((c) => c.textContent)),
  });
  await page.screenshot({ path: `${SCREENSHOTS}/projects.png`, fullPage: true });

  const cookies = await context.cookies(KAS_URL);
  const session = cookies.find((c) => c.name === "_glagent_session");
  report("cookie", {
    value: session?.value,
    httpOnly: session?.httpOnly,
    secure: session?.secure,
    sameSite: session?.sameSite,
  });

  await page.click("text=Sign out");
  await page.waitForURL(/\/users\/sign_in/);
  report("signed out", { url: page.url() });
  await page.goto(`${KAS_URL}/`);
  report("after sign out", { url: page.url() });
} finally {
  await close();
}
