// The chat demo across two nodes of a cluster, in headless Chromium: a 2-node
// mesh (A and B, plaintext links on loopback), a page served by node A and a
// page served by node B (each talks to its own origin's /ws) join the same
// room and exchange messages both ways; both pages then show the same
// conversation in the same order (same seq), including a burst sent from both
// sides at once, and a third page opened on node B later gets the whole
// conversation from history. The nodes run the default config, where the
// `chat` namespace has no presence: the "who is online" list must stay hidden
// without any page error. Screenshots of both pages are saved as artifacts.

import { assert, run, t, test } from '../lib/chorus_harness.mjs';
import {
  PAGE_ARGS, assertNoPageErrors, launchBrowser, meshNodes, newPage, screenshot, waitPeersUp,
} from './browser_common.mjs';

const [nodeA, nodeB] = await meshNodes(['A', 'B'], PAGE_ARGS);
const room = `cluster-${process.pid}`;
const errors = [];
let browser;

async function openChat(node, nick) {
  const page = await newPage(browser, errors, `${nick}@${node.nodeId}`);
  await page.addInitScript((n) => localStorage.setItem('chorus.nick', n), nick);
  await page.goto(`http://127.0.0.1:${node.port}/#${room}`);
  await page.waitForSelector('#status[data-state="connected"]');
  await page.waitForSelector('#text:not([disabled])');
  return page;
}

async function send(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
  // The composer empties once the page has handed the text to the SDK.
  await page.waitForFunction(() => document.querySelector('#text').value === '');
}

const messages = (page) => page.$$eval('#log article.msg', (as) => as.map((a) => ({
  seq: Number(a.dataset.seq),
  epoch: a.dataset.epoch,
  from: a.querySelector('.from').textContent,
  text: a.querySelector('.text').textContent,
  mine: a.classList.contains('mine'),
})));

const waitCount = (page, n) => page.waitForFunction(
  (k) => document.querySelectorAll('#log article.msg').length >= k, n, { timeout: t(10000) });

const waitText = (page, text) => page.waitForFunction(
  (x) => [...document.querySelectorAll('#log .text')].some((e) => e.textContent === x), text, { timeout: t(10000) });

test('both nodes see each other up (chorus_cluster_peer_up 1)', async () => {
  await waitPeersUp([nodeA, nodeB]);
});

let alice;
let bob;

test('a page on node A and a page on node B exchange messages both ways', async () => {
  browser = await launchBrowser();
  alice = await openChat(nodeA, 'alice');
  bob = await openChat(nodeB, 'bob');
  assert(await alice.textContent('#node-info') === 'node A', 'alice is not on node A');
  assert(await bob.textContent('#node-info') === 'node B', 'bob is not on node B');

  await send(alice, 'hello from node A');
  await waitText(bob, 'hello from node A');
  await send(bob, 'hello from node B');
  await waitText(alice, 'hello from node B');

  const a = await messages(alice);
  const b = await messages(bob);
  assert(a.length === 2 && b.length === 2, `alice shows ${a.length}, bob ${b.length} messages`);
  assert(a[0].text === 'hello from node A' && a[0].from === 'alice' && a[0].mine, `alice's view: ${JSON.stringify(a)}`);
  assert(a[1].text === 'hello from node B' && a[1].from === 'bob' && !a[1].mine, `alice's view: ${JSON.stringify(a)}`);
  assert(b[0].from === 'alice' && !b[0].mine && b[1].from === 'bob' && b[1].mine, `bob's view: ${JSON.stringify(b)}`);
  const key = (m) => `${m.epoch}/${m.seq} ${m.from}: ${m.text}`;
  assert(a.map(key).join('\n') === b.map(key).join('\n'), () => `different conversations:\n${a.map(key)}\n${b.map(key)}`);
  assert(a[1].seq === a[0].seq + 1, `seqs ${a[0].seq}, ${a[1].seq}`);
  assertNoPageErrors(errors);
});

test('a burst from both nodes at once shows in one order on both pages', async () => {
  const n = 5;
  await Promise.all([
    (async () => { for (let i = 1; i <= n; i++) await send(alice, `A burst ${i}`); })(),
    (async () => { for (let i = 1; i <= n; i++) await send(bob, `B burst ${i}`); })(),
  ]);
  await waitCount(alice, 2 + 2 * n);
  await waitCount(bob, 2 + 2 * n);
  const a = await messages(alice);
  const b = await messages(bob);
  const key = (m) => `${m.seq} ${m.from}: ${m.text}`;
  assert(a.map(key).join('\n') === b.map(key).join('\n'), () => `different orders:\n${a.map(key).join('\n')}\n--\n${b.map(key).join('\n')}`);
  assert(a.every((m, i) => i === 0 || m.seq === a[i - 1].seq + 1), () => `seqs not consecutive: ${a.map((m) => m.seq)}`);
  for (const who of ['A', 'B']) {
    const mine = a.filter((m) => m.text.startsWith(`${who} burst`)).map((m) => m.text);
    assert(mine.join() === Array.from({ length: n }, (_, i) => `${who} burst ${i + 1}`).join(), `${who}'s burst out of order: ${mine}`);
  }
  assertNoPageErrors(errors);
});

test('without presence in the namespace the online list stays hidden', async () => {
  for (const p of [alice, bob]) {
    assert(await p.$eval('#online', (e) => e.hidden && getComputedStyle(e).display === 'none'), 'the online list is shown');
  }
});

test('a page opened later on node B shows the conversation from history', async () => {
  const carol = await openChat(nodeB, 'carol');
  await waitCount(carol, 12);
  const c = await carol.evaluate(() => [...document.querySelectorAll('#log .text')].map((e) => e.textContent));
  const a = await alice.evaluate(() => [...document.querySelectorAll('#log .text')].map((e) => e.textContent));
  assert(c.join('\n') === a.join('\n'), () => `carol's history differs:\n${c.join('\n')}`);
  await carol.close();
});

test('screenshots of the chat on both nodes', async () => {
  await screenshot(alice, 'chat-node-A.png');
  await screenshot(bob, 'chat-node-B.png');
  assertNoPageErrors(errors);
});

test('the browser closes', async () => {
  await browser?.close();
});

await run([nodeA, nodeB]);
