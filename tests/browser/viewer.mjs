// Drives headless Chromium (Debian's, through playwright-core) over a replay viewer page and
// checks it against the oracle the Rust test wrote from the review library (the same values
// `rewind-server review FILE world TICK --json` and `review FILE shot N --json` print).
//
//   node viewer.mjs check PAGE.html ORACLE.json SCREENSHOT_DIR
//   node viewer.mjs measure PAGE.html [RUNS]      # time to open a page, median of RUNS
//
// Prints one JSON line of results; exits 1 with every failed check listed.

import { chromium } from 'playwright-core';
import { readFileSync, mkdirSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { join, resolve } from 'node:path';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-default-apps',
  '--disable-extensions',
];
// Positions the page stores exactly (the 1/256 m grid) or to half a millimetre (a rewound
// pose's feet, where it really was) or to 0.55 mm (hitbox ends: the feet's half millimetre
// and a twentieth for the offset); the oracle prints f32 values.
const GRID = 1e-6;
const POSE = 0.0005 + 1e-6;
const HITBOX = 0.00055 + 1e-6;

const failures = [];
function check(ok, what) {
  if (!ok) failures.push(what);
  return ok;
}

async function open(browser, file) {
  const context = await browser.newContext({ viewport: { width: 1300, height: 1000 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  const problems = { console: [], requests: [], errors: [] };
  const url = pathToFileURL(resolve(file)).href;
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') problems.console.push(m.type() + ': ' + m.text());
  });
  page.on('pageerror', (e) => problems.errors.push(String(e)));
  page.on('request', (r) => {
    if (r.url() !== url) problems.requests.push(r.url());
  });
  await page.goto(url);
  await page.waitForSelector('body[data-ready]', { timeout: 30000 });
  const ready = await page.evaluate(() => ({ state: document.body.dataset.ready, ms: performance.now(), text: document.getElementById('loading').textContent }));
  return { context, page, problems, ready };
}

async function seek(page, tick) {
  await page.fill('#tick', String(tick));
  await page.press('#tick', 'Enter');
  await page.waitForSelector(`body[data-tick="${tick}"]`, { timeout: 5000 });
}

const near = (a, b, tol) => a.length === b.length && a.every((v, i) => Math.abs(v - b[i]) <= tol);
const nums = (s) => (s ? s.split(',').map(Number) : null);

async function playersMatch(page, world) {
  const rows = await page.$$eval('#players tbody tr', (trs) => trs.map((tr) => ({
    id: Number(tr.dataset.id), pos: tr.dataset.pos, health: Number(tr.dataset.health),
    dead: tr.dataset.dead === '1', crouching: tr.dataset.crouching === '1', yaw: Number(tr.dataset.yaw),
  })));
  check(rows.length === world.players.length, `tick ${world.tick}: the page lists ${rows.length} players, review world lists ${world.players.length}`);
  for (const p of world.players) {
    const row = rows.find((r) => r.id === p.id);
    if (!check(row, `tick ${world.tick}: player ${p.id} is missing from the page`)) continue;
    check(near(nums(row.pos), p.pos, GRID), `tick ${world.tick}: player ${p.id} at ${row.pos} on the page, ${p.pos} in review world`);
    check(row.health === p.health && row.dead === p.dead && row.crouching === p.crouching && row.yaw === p.yaw,
      `tick ${world.tick}: player ${p.id} health/dead/crouching/yaw ${row.health}/${row.dead}/${row.crouching}/${row.yaw} on the page, ${p.health}/${p.dead}/${p.crouching}/${p.yaw} in review world`);
  }
}

async function shotMatches(page, e) {
  await seek(page, e.tick);
  const button = `#shotrows button[data-shot="${e.index}"]`;
  await page.waitForSelector(button, { timeout: 5000 });
  await page.click(button);
  await page.waitForSelector(`#shot[data-shot="${e.index}"]`, { timeout: 5000 });
  const shown = await page.evaluate(() => ({
    verdict: document.getElementById('verdict').dataset.verdict,
    target: document.getElementById('verdict').dataset.target,
    reasons: document.getElementById('reasons').textContent,
    left: document.getElementById('leftout').children.length,
    rows: [...document.querySelectorAll('#rewound tbody tr')].map((tr) => ({
      id: Number(tr.dataset.id), pos: tr.dataset.pos, actual: tr.dataset.actual,
      head: tr.dataset.head, torso: tr.dataset.torso, legs: tr.dataset.legs,
    })),
  }));
  check(shown.verdict === e.verdict, `shot ${e.index}: verdict "${shown.verdict}" on the page, "${e.verdict}" in review shot`);
  check(shown.target === (e.target === null ? '' : String(e.target)), `shot ${e.index}: target ${shown.target} on the page, ${e.target} in review shot`);
  if (e.used_view) check(shown.reasons.includes(e.used_view), `shot ${e.index}: the page does not say the view time used, ${e.used_view}`);
  if (e.clamp) check(shown.reasons.includes(e.clamp), `shot ${e.index}: the page does not give the clamp's reason "${e.clamp}"`);
  if (e.rejected) check(shown.reasons.includes(e.rejected), `shot ${e.index}: the page does not give the rejection "${e.rejected}"`);
  check(shown.reasons.includes(e.claimed_view) && shown.reasons.includes(e.estimated_view), `shot ${e.index}: the page does not give the claimed and estimated view times`);
  check(shown.rows.length === e.rewound.length, `shot ${e.index}: ${shown.rows.length} rewound players on the page, ${e.rewound.length} in review shot`);
  check(shown.left === e.left_out.length, `shot ${e.index}: ${shown.left} left-out players on the page, ${e.left_out.length} in review shot`);
  let boxes = 0;
  for (const p of e.rewound) {
    const row = shown.rows.find((r) => r.id === p.id);
    if (!check(row, `shot ${e.index}: rewound player ${p.id} is missing from the page`)) continue;
    check(near(nums(row.pos), p.pos, POSE), `shot ${e.index}: player ${p.id} rewound to ${row.pos} on the page, ${p.pos} in review shot`);
    check(near(nums(row.actual), p.actual, POSE), `shot ${e.index}: player ${p.id} really at ${row.actual} on the page, ${p.actual} in review shot`);
    if (p.id === e.target) check(row.head, `shot ${e.index}: the target's hitboxes are not shown`);
    if (!row.head) continue;
    boxes += 1;
    check(near(nums(row.head), [...p.head[0], p.head[1]], HITBOX), `shot ${e.index}: player ${p.id} head ${row.head} on the page, ${JSON.stringify(p.head)} in review shot`);
    check(near(nums(row.torso), [...p.torso[0], ...p.torso[1], p.torso[2]], HITBOX), `shot ${e.index}: player ${p.id} torso ${row.torso} on the page, ${JSON.stringify(p.torso)} in review shot`);
    check(near(nums(row.legs), [...p.legs[0], ...p.legs[1], p.legs[2]], HITBOX), `shot ${e.index}: player ${p.id} legs ${row.legs} on the page, ${JSON.stringify(p.legs)} in review shot`);
  }
  return boxes;
}

async function checkPage(file, oracleFile, shots) {
  const oracle = JSON.parse(readFileSync(oracleFile, 'utf8'));
  mkdirSync(shots, { recursive: true });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
  const result = { ticks: 0, shots: 0, hitboxes: 0, screenshots: [] };
  try {
    const { page, problems, ready } = await open(browser, file);
    result.open_ms = Math.round(ready.ms);
    check(ready.state === '1', 'the page did not open: ' + ready.text);
    const shot = async (name) => {
      const path = join(shots, name + '.png');
      await page.screenshot({ path, fullPage: true });
      result.screenshots.push(path);
    };
    await shot('1-opened');

    // Any tick, and one tick forward and back with the buttons.
    for (const w of oracle.worlds) {
      await seek(page, w.tick);
      await playersMatch(page, w);
      result.ticks += 1;
    }
    const [a, b] = oracle.step;
    await seek(page, a.tick);
    await page.click('#fwd');
    await page.waitForSelector(`body[data-tick="${b.tick}"]`, { timeout: 5000 });
    await playersMatch(page, b);
    await page.click('#back');
    await page.waitForSelector(`body[data-tick="${a.tick}"]`, { timeout: 5000 });
    await playersMatch(page, a);
    await page.keyboard.press('ArrowRight');
    await page.waitForSelector(`body[data-tick="${b.tick}"]`, { timeout: 5000 });
    await shot('2-stepped');

    // Play runs the clock forward; pause stops it.
    const from = oracle.worlds[0].tick;
    await seek(page, from);
    await page.selectOption('#speed', '4');
    await page.click('#play');
    const moved = await page
      .waitForFunction((t) => Number(document.body.dataset.tick) > t, from, { timeout: 10000 })
      .then(() => true, () => false);
    check(moved, `play did not move the clock in 10 s (still at tick ${from})`);
    await page.click('#play');
    const still = Number(await page.evaluate(() => document.body.dataset.tick));
    await page.waitForTimeout(300);
    const after = Number(await page.evaluate(() => document.body.dataset.tick));
    check(after === still, `pause did not stop the clock (${still}, then ${after})`);

    // Shots, clicked in the list.
    for (const e of oracle.shots) {
      result.hitboxes += await shotMatches(page, e);
      result.shots += 1;
      await shot(`3-shot-${e.index}`);
    }

    // The kill feed jumps to a kill.
    const kill = await page.$('#kills button[data-shot]');
    if (kill) {
      const s = await kill.getAttribute('data-shot');
      await kill.click();
      await page.waitForSelector(`#shot[data-shot="${s}"]`, { timeout: 5000 });
      result.kill_feed = Number(s);
    }

    // Hostile names are text: in the players table at a tick where everyone is in the match
    // (the oracle's step tick), and in the shooter filter.
    await seek(page, oracle.step[0].tick);
    for (const name of oracle.hostile_names) {
      const listed = await page.$$eval('#byshooter option', (os, n) => os.some((o) => o.textContent.startsWith(n + ' (')), name);
      check(listed, `the name ${JSON.stringify(name)} is not shown as text in the shooter filter`);
      const found = await page.$$eval('#players td.name', (tds, n) => tds.some((td) => td.textContent === n), name);
      check(found, `the name ${JSON.stringify(name)} is not shown as text in the players table`);
    }
    const injected = await page.evaluate(() => ({
      imgs: document.querySelectorAll('img').length,
      bold: document.querySelectorAll('b').length,
      scripts: document.scripts.length,
      pwned: typeof window.pwned,
    }));
    check(injected.imgs === 0 && injected.bold === 0 && injected.scripts === 3 && injected.pwned === 'undefined',
      'a name became markup: ' + JSON.stringify(injected));

    check(problems.console.length === 0, 'console: ' + problems.console.join(' | '));
    check(problems.errors.length === 0, 'page errors: ' + problems.errors.join(' | '));
    check(problems.requests.length === 0, 'network requests: ' + problems.requests.join(' '));
    result.console = problems.console.length;
    result.requests = problems.requests.length;
  } finally {
    await browser.close();
  }
  return result;
}

async function measure(file, runs) {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
  const times = [];
  try {
    for (let i = 0; i < runs; i++) {
      const started = Date.now();
      const { context, problems, ready } = await open(browser, file);
      times.push({ in_page_ms: Math.round(ready.ms), wall_ms: Date.now() - started });
      check(ready.state === '1', 'the page did not open: ' + ready.text);
      check(problems.console.length + problems.errors.length + problems.requests.length === 0, JSON.stringify(problems));
      await context.close();
    }
  } finally {
    await browser.close();
  }
  const sorted = [...times].sort((a, b) => a.in_page_ms - b.in_page_ms);
  return { runs: times, median_in_page_ms: sorted[Math.floor(sorted.length / 2)].in_page_ms };
}

const [mode, file, ...rest] = process.argv.slice(2);
let result;
if (mode === 'check') result = await checkPage(file, rest[0], rest[1]);
else if (mode === 'measure') result = await measure(file, Number(rest[0] || 3));
else {
  console.error('usage: node viewer.mjs check PAGE ORACLE SCREENSHOT_DIR | measure PAGE [RUNS]');
  process.exit(2);
}
result.failures = failures;
console.log(JSON.stringify(result));
process.exit(failures.length ? 1 : 0);
