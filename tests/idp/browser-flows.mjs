// Real-browser flows: Chromium (Debian's /usr/bin/chromium) driven by playwright-core walks
// through what a person does with gatehouse and records what each page showed.
//
//   node tests/idp/browser-flows.mjs SCENARIO '{"base": "http://127.0.0.1:PORT", ...}'
//
// Scenarios:
//   demo   gatehouse demo: pick bob, whoami, the 403 page, log out, pick alice, admin area,
//          log out. Options: shots (a directory: PNG screenshots of the pages).
//   login  a login through the real OpenID provider (oidc-provider's login and consent
//          forms). Options: user, path (first page), csrf (a cross-site page tries to log
//          the user out), stepUp ({path, waitMs}: a route with max_auth_age sends the browser
//          back to the provider), logout (through the gateway's confirmation and the
//          provider's own end-session page).
//   chooser  a route with several providers: the gateway's sign-in page, walked with the
//          keyboard (Tab to the button of `choose`, Enter), the login at that provider, a
//          script's request to `otherPath`, then (the session cookie cleared) the page again.
//          Options: path, user, choose, otherPath.
//
// Prints one JSON line: {"steps": [{name, url, status, title, text, visited, console,
// cookies, ms}], "cookies": [...], "error"?}; exits 1 when a step could not be taken. The browser only
// talks to loopback: any other request is aborted, except the made-up cross-site page
// (http://evil.test/), which this script serves itself.
import { chromium } from 'playwright-core';

const [scenario, optionsJson] = process.argv.slice(2);
const options = JSON.parse(optionsJson ?? '{}');
const base = options.base;
const origin = new URL(base).origin;
const EVIL = 'http://evil.test';

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  timeout: 60000,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const context = await browser.newContext({ viewport: { width: 900, height: 560 } });
let evilPage = '';
await context.route(() => true, (route) => {
  const url = new URL(route.request().url());
  if (url.origin === EVIL) {
    return route.fulfill({ status: 200, contentType: 'text/html', body: evilPage });
  }
  if (['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname)) {
    return route.continue();
  }
  return route.abort();
});
const page = await context.newPage();
page.setDefaultTimeout(20000);

const steps = [];
const started = Date.now();
let visited = [];
let lastStatus = null;
let consoleLines = [];
page.on('response', (r) => {
  if (r.request().isNavigationRequest() && r.frame() === page.mainFrame()) {
    lastStatus = r.status();
    visited.push(`${r.request().method()} ${r.status()} ${r.url()}`);
  }
});
page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));

/** The gateway's cookies in the browser, with their attributes. */
async function gatewayCookies() {
  return (await context.cookies(origin)).map((c) => ({
    name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite, path: c.path, secure: c.secure,
  }));
}

/** Records what the page shows now (and a screenshot named `shot` when asked for). */
async function record(name, shot) {
  const text = await page.evaluate(() => (document.body ? document.body.innerText : ''));
  steps.push({
    name, url: page.url(), status: lastStatus, title: await page.title(), text, visited,
    console: consoleLines, cookies: await gatewayCookies(), ms: Date.now() - started,
  });
  visited = [];
  consoleLines = [];
  if (shot && options.shots) {
    await page.screenshot({ path: `${options.shots}/${shot}.png` });
  }
}

/** Records a script's request (with the browser's cookies) as a step. */
async function fetchStep(name, url, headers = { accept: 'application/json' }) {
  const r = await context.request.get(url, { headers, maxRedirects: 0 });
  steps.push({
    name, url, status: r.status(), text: await r.text(), visited: [], console: [], ms: Date.now() - started,
  });
}

/** Clicks and waits until the browser has come to rest on a page of `where`'s origin. */
async function clickTo(selector, where) {
  await Promise.all([
    page.waitForURL((u) => u.origin === where, { waitUntil: 'load' }),
    page.click(selector),
  ]);
}

/** At oidc-provider: fills in its development login and consent forms until back at the app. */
async function loginAtProvider(user) {
  for (let i = 0; i < 4 && new URL(page.url()).origin !== origin; i += 1) {
    if (await page.locator('input[name=login]').count()) {
      await page.fill('input[name=login]', user);
      await page.fill('input[name=password]', 'any password');
    }
    await Promise.all([
      page.waitForNavigation({ waitUntil: 'load' }),
      page.click('button[type=submit]'),
    ]);
  }
}

async function demo() {
  await page.goto(`${base}/`);
  const idp = new URL(page.url()).origin;
  await record('picker', 'login');
  await clickTo('button[value=bob]', origin);
  await record('bob', 'whoami');
  await page.goto(`${base}/admin/settings`);
  await record('bob-admin', 'forbidden');
  await page.goto(`${base}/_gatehouse/logout`);
  await record('logout-confirm', 'logout');
  await clickTo('form[method=post] button[type=submit]', idp);
  await record('bob-signed-out');
  await clickTo('button[value=alice]', origin);
  await record('alice');
  await page.goto(`${base}/admin/settings`);
  await record('alice-admin');
  await page.goto(`${base}/_gatehouse/logout`);
  await record('logout-confirm-alice');
  await clickTo('form[method=post] button[type=submit]', idp);
  await record('alice-signed-out');
  await fetchStep('after-logout', `${base}/admin/settings`);
}

async function login() {
  await page.goto(`${base}${options.path ?? '/'}`);
  await record('provider-login');
  await loginAtProvider(options.user);
  await record('landed');
  await fetchStep('userinfo', `${base}/_gatehouse/userinfo`);
  if (options.csrf) {
    // A page on another site links to the logout (a top-level navigation carries the
    // SameSite=Lax cookie) and submits a form to it.
    const target = `${base}/_gatehouse/logout?everywhere=1`;
    evilPage = `<!doctype html><title>evil</title><a id="link" href="${target}">win a prize</a>
      <form id="post" method="post" action="${target}"><input name="x" value="1"></form>`;
    await page.goto(`${EVIL}/`);
    await clickTo('#link', origin);
    await record('csrf-link');
    await fetchStep('csrf-link-after', `${base}/_gatehouse/userinfo`);
    await page.goto(`${EVIL}/`);
    await Promise.all([
      page.waitForURL((u) => u.origin === origin, { waitUntil: 'load' }),
      page.evaluate(() => document.getElementById('post').submit()),
    ]);
    await record('csrf-post');
    await fetchStep('csrf-post-after', `${base}/_gatehouse/userinfo`);
  }
  if (options.stepUp) {
    await page.waitForTimeout(options.stepUp.waitMs);
    await page.goto(`${base}${options.stepUp.path}`);
    await record('step-up-provider');
    await loginAtProvider(options.user);
    await record('step-up-landed');
    await fetchStep('step-up-userinfo', `${base}/_gatehouse/userinfo`);
  }
  if (options.logout) {
    await page.goto(`${base}/_gatehouse/logout`);
    await record('logout-confirm');
    await Promise.all([
      page.waitForURL((u) => u.origin !== origin, { waitUntil: 'load' }),
      page.click('form[method=post] button[type=submit]'),
    ]);
    await record('provider-logout');
    await Promise.all([
      page.waitForNavigation({ waitUntil: 'load' }),
      page.click('button[name=logout][value=yes]'),
    ]);
    // Back at the app, which sends the browser on to the provider's login: signed out there too.
    await page.waitForURL((u) => u.origin !== origin && u.pathname !== '/session/end/confirm', { waitUntil: 'load' });
    await record('signed-out');
    await fetchStep('after-logout', `${base}${options.path ?? '/'}`);
  }
}

/** The focused element and the sign-in page's buttons, as a step. */
async function focusStep(name) {
  const info = await page.evaluate(() => ({
    active: document.activeElement ? document.activeElement.getAttribute('value') : null,
    buttons: [...document.querySelectorAll('ul.choices button')].map((b) => b.getAttribute('value')),
    logos: [...document.querySelectorAll('ul.choices img')].map((i) => i.getAttribute('src')),
  }));
  steps.push({ name, url: page.url(), text: JSON.stringify(info), visited: [], console: [], ms: Date.now() - started });
  return info;
}

async function chooser() {
  await page.goto(`${base}${options.path}`);
  await record('sign-in');
  await focusStep('sign-in-focus');
  // Only the keyboard from here: Tab until the chosen provider's button has focus.
  const tabbed = [];
  for (let i = 0; i < 10; i += 1) {
    await page.keyboard.press('Tab');
    const value = await page.evaluate(() => document.activeElement?.getAttribute('value') ?? null);
    tabbed.push(value);
    if (value === options.choose) break;
  }
  steps.push({ name: 'tabbed', url: page.url(), text: JSON.stringify(tabbed), visited: [], console: [], ms: Date.now() - started });
  await Promise.all([
    page.waitForURL((u) => u.origin !== origin, { waitUntil: 'load' }),
    page.keyboard.press('Enter'),
  ]);
  await record('provider-login');
  await loginAtProvider(options.user);
  await record('landed');
  await fetchStep('userinfo', `${base}/_gatehouse/userinfo`);
  await fetchStep('script-other', `${base}${options.otherPath}`);
  // The session cookie gone (the remembered choice stays): the page again, that provider first.
  await context.clearCookies({ name: 'gatehouse' });
  await page.goto(`${base}${options.path}`);
  await record('sign-in-again');
  await focusStep('sign-in-again-focus');
  await fetchStep('script', `${base}${options.path}`);
}

const scenarios = { demo, login, chooser };
let failure;
try {
  if (!scenarios[scenario]) {
    throw new Error(`unknown scenario ${scenario}`);
  }
  await scenarios[scenario]();
} catch (e) {
  await page.waitForTimeout(500).catch(() => {});
  failure = `${e.message ?? e} (at ${page.url()}; console: ${consoleLines.join(' | ')}; visited: ${visited.join(' | ')})`;
}
console.log(JSON.stringify({ steps, cookies: await gatewayCookies(), error: failure }));
await browser.close();
process.exit(failure ? 1 : 0);
