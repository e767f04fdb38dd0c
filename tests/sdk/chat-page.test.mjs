// The demo chat page (broker/www) and the SDK in a real browser: headless
// Debian Chromium driven by playwright-core against a real chorusd. Two pages
// in one room exchange messages, history shows on join, user text stays text,
// and the status indicator follows a broker restart. Skipped when chorusd,
// Chromium ($CHROMIUM or /usr/bin/chromium) or playwright-core is missing.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { WebSocket } from 'ws';
import { sdk, SRC, chorusdPath, startChorusd } from './helpers.mjs';

const { Chorus } = sdk;
const chromiumPath = [process.env.CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => p && fs.existsSync(p));
let playwright = null;
try {
  playwright = await import('playwright-core');
} catch {
  /* not installed */
}
const skip = !chorusdPath() ? 'chorusd not built (set CHORUSD)' : !chromiumPath ? 'chromium not installed' : !playwright ? 'playwright-core not installed' : false;

const brokerArgs = ['--static-dir', path.join(SRC, 'broker', 'www'), '--sdk-dir', path.join(SRC, 'client-sdk', 'js'), '--log-level', 'warn'];
const T = 8000; // bound for every browser-side wait

describe('chat demo page in headless Chromium', { skip }, () => {
  let srv, browser, node;
  const pageErrors = [];

  before(async () => {
    srv = await startChorusd({ args: brokerArgs });
    browser = await playwright.chromium.launch({
      executablePath: chromiumPath,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
      timeout: 30000,
    });
    node = new Chorus(srv.url, { WebSocket, requestTimeout: 3000 });
    node.connect();
  });
  after(async () => {
    node?.close();
    await browser?.close();
    await srv?.stop();
  });

  async function openPage(room, nick) {
    const page = await browser.newPage();
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    page.on('console', (m) => {
      // Failed reconnect attempts are logged by Chromium itself while the broker is down.
      if (m.type() === 'error' && !/WebSocket connection to/.test(m.text())) pageErrors.push(m.text());
    });
    await page.addInitScript((n) => localStorage.setItem('chorus.nick', n), nick);
    await page.goto(`${srv.httpUrl}/#${room}`);
    await page.waitForSelector('#status[data-state="connected"]', { timeout: T });
    await page.waitForSelector('#text:not([disabled])', { timeout: T });
    return page;
  }

  const texts = (page) => page.$$eval('#log article.msg', (as) => as.map((a) => ({ from: a.querySelector('.from').textContent, text: a.querySelector('.text').textContent, mine: a.classList.contains('mine') })));

  test('history, live messages between two pages, escaping and reconnect', async () => {
    const room = `r${process.pid}`;
    const ch = `chat:${room}`;
    await node.publish(ch, { text: 'from history', from: 'ann' });
    await node.publish(ch, { text: '<img src=x onerror="window.pwned=1"><b>bold?</b>', from: '<i>eve</i>' });

    const a = await openPage(room, 'alice');
    const b = await openPage(room, 'bob');
    for (const p of [a, b]) {
      await p.waitForFunction(() => document.querySelectorAll('#log article.msg').length === 2, null, { timeout: T });
    }
    const hist = await texts(a);
    assert.deepEqual(hist.map((m) => m.text), ['from history', '<img src=x onerror="window.pwned=1"><b>bold?</b>']);
    assert.equal(hist[1].from, '<i>eve</i>');
    assert.equal(await a.$$eval('#log img, #log b, #log i', (x) => x.length), 0, 'user text is not parsed as HTML');
    assert.equal(await a.evaluate(() => window.pwned), undefined);

    await a.fill('#text', 'hello from alice');
    await a.press('#text', 'Enter');
    await b.waitForFunction(() => [...document.querySelectorAll('#log .text')].some((t) => t.textContent === 'hello from alice'), null, { timeout: T });
    const onB = (await texts(b)).at(-1);
    assert.deepEqual(onB, { from: 'alice', text: 'hello from alice', mine: false });
    await a.waitForFunction(() => document.querySelector('#log article.msg:last-of-type')?.classList.contains('mine'), null, { timeout: T });

    // Broker restart: the indicator leaves "connected", comes back, and the
    // page reloads history because the new process cannot resume the channel.
    const port = srv.port;
    await srv.stop();
    await a.waitForSelector('#status:not([data-state="connected"])', { timeout: T });
    srv = await startChorusd({ port, args: brokerArgs });
    for (const p of [a, b]) await p.waitForSelector('#status[data-state="connected"]', { timeout: T });
    await a.waitForFunction(() => /history reloaded/.test(document.querySelector('#log').textContent), null, { timeout: T });

    await b.fill('#text', 'bob after restart');
    await b.click('#send-btn');
    await a.waitForFunction(() => [...document.querySelectorAll('#log .text')].some((t) => t.textContent === 'bob after restart'), null, { timeout: T });
    assert.deepEqual(pageErrors, []);
  });
});

// Sender identity on the page (PROTOCOL.md 2.7): a page opened with a token
// shows its messages under the node-attested user; a name typed by a page
// without one is marked unverified; a `gap` becomes a notice.
describe('chat demo page: verified names and gaps', { skip }, () => {
  const secret = 'chat-page-test-secret-32-bytes!!';
  let srv, browser;
  const pageErrors = [];
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const token = (sub) => {
    const head = `${b64({ alg: 'HS256' })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 600 })}`;
    return `${head}.${crypto.createHmac('sha256', secret).update(head).digest('base64url')}`;
  };

  before(async () => {
    srv = await startChorusd({ args: [...brokerArgs, '--jwt-secret', secret] });
    browser = await playwright.chromium.launch({
      executablePath: chromiumPath,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
      timeout: 30000,
    });
  });
  after(async () => {
    await browser?.close();
    await srv?.stop();
  });

  async function openPage(room, nick, query = '') {
    const page = await browser.newPage();
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });
    await page.addInitScript((n) => localStorage.setItem('chorus.nick', n), nick);
    await page.goto(`${srv.httpUrl}/${query}#${room}`);
    await page.waitForSelector('#text:not([disabled])', { timeout: T });
    return page;
  }
  const last = (page) => page.$eval('#log article.msg:last-of-type', (a) => ({
    from: a.querySelector('.from').textContent,
    verified: a.querySelector('.from').classList.contains('verified'),
    unverified: !!a.querySelector('.unverified'),
    text: a.querySelector('.text').textContent,
  }));

  test('a token user is shown verified, a typed name unverified, and a gap is told', async () => {
    const room = `v${process.pid}`;
    const ann = await openPage(room, 'whatever', `?token=${token('ann')}`);
    const guest = await openPage(room, 'ann');
    assert.equal(await guest.$eval('#room', (e) => e.hasAttribute('pattern')), false, 'no pattern attribute on the room field');

    await ann.fill('#text', 'signed');
    await ann.press('#text', 'Enter');
    await guest.waitForFunction(() => document.querySelector('#log article.msg:last-of-type .text')?.textContent === 'signed', null, { timeout: T });
    assert.deepEqual(await last(guest), { from: 'ann', verified: true, unverified: false, text: 'signed' });

    await guest.fill('#text', 'forged');
    await guest.press('#text', 'Enter');
    await ann.waitForFunction(() => document.querySelector('#log article.msg:last-of-type .text')?.textContent === 'forged', null, { timeout: T });
    assert.deepEqual(await last(ann), { from: 'ann', verified: false, unverified: true, text: 'forged' });

    // A broker `gap` reaches the page as the subscription's gap event.
    await guest.evaluate((ch) => window.chorus.getSubscription(ch).emit('gap', { channel: ch, epoch: 'e', from: 5, to: 7, source: 'broker' }), `chat:${room}`);
    await guest.waitForFunction(() => /3 messages were lost/.test(document.querySelector('#log').textContent), null, { timeout: T });
    assert.deepEqual(pageErrors, []);
  });
});
