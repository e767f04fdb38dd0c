// "Who is online" in the chat demo, in headless Chromium, on a node whose
// config file turns presence on for the `chat` namespace
// ({"namespaces": {"chat": {"presence": true}}}): the list shows the page's
// own connection first, follows join and leave events as other pages come and
// go, names a member by the nickname its messages carry once it has spoken,
// and is rebuilt for the new room after a room switch. A screenshot is saved
// as an artifact.

import fs from 'node:fs';
import path from 'node:path';
import { Server, assert, run, t, test, tmpdir } from '../lib/chorus_harness.mjs';
import { PAGE_ARGS, assertNoPageErrors, launchBrowser, newPage, screenshot } from './browser_common.mjs';

const dir = tmpdir();
const config = path.join(dir, 'chorus.json');
fs.writeFileSync(config, JSON.stringify({ namespaces: { chat: { presence: true } } }));
const srv = new Server({ nodeId: 'presence-node', args: ['--config', config, ...PAGE_ARGS] });
const room = `here-${process.pid}`;
const errors = [];
let browser;

async function openChat(nick, r = room) {
  const page = await newPage(browser, errors, nick);
  await page.addInitScript((n) => localStorage.setItem('chorus.nick', n), nick);
  await page.goto(`http://127.0.0.1:${srv.port}/#${r}`);
  await page.waitForSelector('#status[data-state="connected"]');
  await page.waitForSelector('#text:not([disabled])');
  return page;
}

/** The online list as "name[*]" entries, * marking the page's own entry. */
const online = (page) => page.$$eval('#online:not([hidden]) #online-list li',
  (lis) => lis.map((li) => li.textContent + (li.classList.contains('me') ? '*' : '')));

async function waitOnline(page, expected, what) {
  const want = JSON.stringify(expected);
  try {
    await page.waitForFunction((w) => JSON.stringify([...document.querySelectorAll('#online:not([hidden]) #online-list li')]
      .map((li) => li.textContent + (li.classList.contains('me') ? '*' : ''))) === w, want, { timeout: t(10000) });
  } catch (e) {
    throw new Error(`${what}: the online list is ${JSON.stringify(await online(page))}, expected ${want}`);
  }
}

/** How other pages list a member that has not spoken yet: by its connection id. */
const guestName = async (page) => `guest ${(await page.evaluate(() => window.chorus.clientId)).slice(-4)}`;

let alice;
let bob;

test('a page alone in a room lists itself', async () => {
  browser = await launchBrowser();
  alice = await openChat('alice');
  await waitOnline(alice, ['alice (you)*'], 'alice alone');
  const title = await alice.textContent('#online-title');
  assert(title === '1 online:', `title ${JSON.stringify(title)}`);
  const tip = await alice.getAttribute('#online', 'title');
  assert(tip === 'Members of this room as node presence-node sees them', `tooltip ${JSON.stringify(tip)}`);
});

test('a second page appears in both lists (join), by nickname once it has spoken', async () => {
  bob = await openChat('bob');
  await waitOnline(alice, ['alice (you)*', await guestName(bob)], 'after bob joined');
  await waitOnline(bob, ['bob (you)*', await guestName(alice)], 'bob sees alice');

  await bob.fill('#text', 'hi, bob here');
  await bob.press('#text', 'Enter');
  await waitOnline(alice, ['alice (you)*', 'bob'], 'after bob spoke');
  await alice.fill('#text', 'hello bob');
  await alice.press('#text', 'Enter');
  await waitOnline(bob, ['bob (you)*', 'alice'], 'after alice spoke');
  assert(await alice.textContent('#online-title') === '2 online:', 'alice\'s title');
  await screenshot(alice, 'chat-presence.png');
});

test('a page that closes leaves the others\' lists (leave)', async () => {
  await bob.close();
  await waitOnline(alice, ['alice (you)*'], 'after bob left');
});

test('switching rooms lists the new room\'s members', async () => {
  const other = `${room}-2`;
  const carol = await openChat('carol', other);
  await waitOnline(carol, ['carol (you)*'], 'carol alone');
  await alice.evaluate((r) => { location.hash = r; }, other);
  await waitOnline(alice, ['alice (you)*', await guestName(carol)], 'alice in the second room');
  // carol has seen no message of alice's: alice is a guest to her.
  await waitOnline(carol, ['carol (you)*', await guestName(alice)], 'carol sees alice');
  await carol.close();
  await waitOnline(alice, ['alice (you)*'], 'after carol left');
  assertNoPageErrors(errors);
});

test('the browser closes', async () => {
  await browser?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

await run([srv]);
