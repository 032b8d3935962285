// A real browser through the login: Chromium (Debian's /usr/bin/chromium) driven by
// playwright-core opens a protected URL, is sent to the provider, fills in its login and
// consent forms, and prints where it lands and what the page says.
//
//   node tests/idp/browser-login.mjs URL USER
//
// Prints one JSON line: {"url": ..., "body": ..., "cookies": [...]}.
import { chromium } from 'playwright-core';

const [url, user] = process.argv.slice(2);
const origin = new URL(url).origin;
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  timeout: 60000,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(30000);
  await page.goto(url);
  for (let step = 0; step < 4 && new URL(page.url()).origin !== origin; step += 1) {
    if (await page.locator('input[name=login]').count()) {
      await page.fill('input[name=login]', user);
      await page.fill('input[name=password]', 'any password');
    }
    await Promise.all([
      page.waitForNavigation({ waitUntil: 'load' }),
      page.click('button[type=submit]'),
    ]);
  }
  const body = await page.textContent('body');
  const cookies = (await context.cookies(origin)).map((c) => ({
    name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite, path: c.path,
  }));
  console.log(JSON.stringify({ url: page.url(), body, cookies }));
} finally {
  await browser.close();
}
