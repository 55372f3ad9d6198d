// The browser end-to-end flow through HAProxy and keyward, driven in Debian's
// Chromium with the DevTools virtual authenticator (a real WebAuthn ceremony: CTAP2,
// internal transport, resident keys, user verification).
//
//   node browser-flow.mjs '<json>'
//
// with {"base": "http://localhost:PORT", "invite": "<enrollment URL>", "mode":
// "invite"|"oidc"|"oidc-enroll", "shots": "<dir for screenshots>", "roles": "<roles
// the application must receive>", "assertion": <check the demo app's verdict>}. Prints one JSON line per step; exits non-zero at the first step that
// does not behave.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const args = JSON.parse(process.argv[2]);
const { base, shots } = args;
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-quic',
  ],
});

let step = 0;
function log(name, extra) {
  console.log(JSON.stringify({ step: ++step, name, ...extra }));
}

async function shot(page, name) {
  await page.screenshot({ path: join(shots, `${String(step + 1).padStart(2, '0')}-${name}.png`), fullPage: true });
}

function fail(message) {
  console.error(`browser-flow: ${message}`);
  process.exitCode = 1;
  throw new Error(message);
}

// Waits until `selector`'s text matches `pattern` (pages update it asynchronously).
async function expectText(page, selector, pattern, what) {
  try {
    await page.waitForFunction(
      ([sel, source, flags]) => {
        const el = document.querySelector(sel);
        return el !== null && new RegExp(source, flags).test(el.textContent);
      },
      [selector, pattern.source, pattern.flags],
      { timeout: 15000 },
    );
  } catch (_) {
    const text = await page.textContent(selector).catch(() => null);
    fail(`${what}: ${selector} says ${JSON.stringify(text)}`);
  }
  return page.textContent(selector);
}

// The user id HAProxy forwarded, from the demo app's page or the echo upstream.
async function identity(page) {
  const text = await page.innerText('body');
  const m = /x-keyward-user\W+(\S+)/i.exec(text);
  if (!m) fail(`no X-Keyward-User on the protected page: ${text.slice(0, 400)}`);
  if (/keyward_session=|v4\.local\./.test(text)) fail('the session token reached the application');
  return m[1];
}

try {
  const context = await browser.newContext();
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });

  // 1. Before any session, the protected app sends the browser to sign in.
  await page.goto(`${base}/reports?x=1`);
  if (!page.url().startsWith(`${base}/.keyward/`)) fail(`protected page did not redirect to the portal: ${page.url()}`);
  await shot(page, 'redirected-to-portal');
  log('unauthenticated request redirected', { url: page.url() });

  // 2. Enroll: from the invite link (invite mode) or after the IdP (oidc mode, where the
  //    redirect above went to the IdP and back to the enrollment page already).
  if (args.mode === 'invite') {
    await page.goto(args.invite);
  } else if (args.mode === 'oidc-enroll') {
    // Passkey sign-in page; a new person enrolls through the IdP.
    await page.click('#signin-idp');
  }
  await page.waitForSelector('#enroll-passkey', { timeout: 15000 });
  await shot(page, 'enroll');
  await page.fill('#device-name', 'Test laptop');
  await page.click('#enroll-passkey');
  await page.waitForURL((u) => !u.pathname.startsWith('/.keyward/enroll'), { timeout: 15000 });
  log('enrolled', { url: page.url() });

  // 3. The protected page shows the identity HAProxy forwarded.
  await page.goto(`${base}/reports?x=1`);
  const user = await identity(page);
  if (args.roles) {
    const text = await page.innerText('body');
    if (!new RegExp(`x-keyward-roles\\W+${args.roles}`, 'i').test(text)) fail(`roles ${args.roles} not forwarded: ${text.slice(0, 3000)}`);
  }
  if (args.assertion) await expectText(page, '#kw-assertion', /verified against the JWKS/, 'assertion');
  await shot(page, 'protected-page');
  log('protected page shows identity', { user });

  // 3b. A WebSocket opened with the session, in a tab of its own (the echo upstream
  //     accepts it): it must not outlive the session.
  let live = null;
  if (args.websocket === 'page') {
    // The demo app's page keeps a WebSocket of its own and says how it is.
    live = await context.newPage();
    await live.goto(`${base}/reports?live=1`);
    await expectText(live, '#kw-live', /^open/, 'the demo page\'s live WebSocket');
    log('websocket open');
  } else if (args.websocket) {
    live = await context.newPage();
    await live.goto(`${base}/reports?live=1`);
    await live.evaluate((url) => new Promise((opened, failed) => {
      const ws = new WebSocket(url);
      window.kwClosed = new Promise((closed) => { ws.onclose = (e) => closed(`closed ${e.code}`); });
      ws.onopen = () => opened();
      ws.onerror = () => failed(new Error('the WebSocket did not open'));
    }), `${base.replace(/^http/, 'ws')}/live`);
    log('websocket open');
  }

  // 4. My devices lists the new device; sign out.
  await page.goto(`${base}/.keyward/devices`);
  await expectText(page, '#devices tbody', /Test laptop|Unknown|authenticator/i, 'devices page');
  await shot(page, 'devices');
  await page.click('#signout');
  await page.waitForURL(/\/\.keyward\/login/, { timeout: 15000 });
  await shot(page, 'signed-out');
  log('signed out', { url: page.url() });
  if (live && args.websocket === 'page') {
    await expectText(live, '#kw-live', /^closed/, 'the demo page\'s WebSocket after sign-out');
    await shot(live, 'live-websocket-closed');
    log('websocket closed at sign-out', { state: await live.textContent('#kw-live') });
    await live.close();
  } else if (live) {
    const state = await live.evaluate(() => Promise.race([
      window.kwClosed,
      new Promise((r) => setTimeout(() => r('still open'), 10000)),
    ]));
    if (state === 'still open') fail('the WebSocket outlived the session it was opened with');
    log('websocket closed at sign-out', { state });
    await live.close();
  }

  // 5. Signed out: the protected page redirects to sign-in again.
  await page.goto(`${base}/reports?x=2`);
  // (IdP mode: through the IdP, which knows the person, to the passkey step.)
  await page.waitForSelector('#signin', { timeout: 15000 });
  if (!page.url().startsWith(`${base}/.keyward/login`)) fail(`not sent to sign-in after sign-out: ${page.url()}`);
  await shot(page, 'sign-in');
  log('redirected to sign-in', { url: page.url() });

  // 6. Sign in again, usernameless (discoverable credential); back where it was going.
  await page.click('#signin');
  await page.waitForURL((u) => u.pathname === '/reports', { timeout: 15000 });
  const again = await identity(page);
  if (again !== user) fail(`signed in as ${again}, enrolled as ${user}`);
  await shot(page, 'signed-in-again');
  log('signed in again (usernameless)', { url: page.url() });

  // 6b. In oidc mode the IdP alone does not add a key to an account that has one: a
  //     browser with no session, signed in at the IdP, is refused at enrollment.
  if (args.mode === 'oidc') {
    const stranger = await browser.newContext();
    const other = await stranger.newPage();
    await other.goto(`${base}/.keyward/enroll`);
    await other.waitForURL((u) => u.pathname === '/.keyward/enroll', { timeout: 15000 });
    const body = await other.innerText('body');
    if (!/already has a key/i.test(body)) fail(`IdP sign-in alone reached enrollment: ${body.slice(0, 300)}`);
    if (await other.$('#enroll-passkey')) fail('the enrollment button is offered without the passkey');
    await shot(other, 'idp-alone-cannot-add-a-key');
    log('IdP alone refused a second key');
    await stranger.close();
  }

  // 7. Revoke the device from "my devices": signed out, and the protected page is
  //    refused until a new device is enrolled.
  await page.goto(`${base}/.keyward/devices`);
  await page.click('#devices tbody tr:first-child button.danger');
  await page.waitForURL(/\/\.keyward\/login/, { timeout: 15000 });
  await shot(page, 'device-revoked');
  log('device revoked', { url: page.url() });
  if (args.mode !== 'oidc') {
    await page.goto(`${base}/.keyward/login`);
    await page.click('#signin');
    await expectText(page, '#status', /not registered|revoked/i, 'sign-in with the revoked device');
    await shot(page, 'revoked-device-refused');
    log('revoked device refused at sign-in');
  }
  const res = await page.request.get(`${base}/reports?x=3`, { maxRedirects: 0, headers: { accept: 'text/html' } });
  if (res.status() !== 302) fail(`protected page after revocation answered ${res.status()}, not 302`);
  log('protected page denied after revocation', { status: res.status() });

  await cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId });
  await context.close();
  log('done');
} catch (err) {
  if (!process.exitCode) {
    console.error(`browser-flow: ${err.stack || err}`);
    process.exitCode = 1;
  }
} finally {
  await browser.close();
}
