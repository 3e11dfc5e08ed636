// harness.mjs: what the browser tests share.
//
// startStack() (run.mjs calls it once, inside tests/fixtures/slapd-fixture.sh and
// fake-inference-fixture.sh, which export QUARRY_TEST_LDAP_* and QUARRY_TEST_INFERENCE_URL) starts
// `quarry serve` on a free loopback port with a fresh data directory and the test configuration of
// tests/api_test_util.h and seeds documents; quarry serves the console itself (ui/ compiled in, with
// its Content-Security-Policy), so the tests see exactly what users get. The test files read its base
// URL from QUARRY_BROWSER_BASE and use the helpers below: a headless Debian chromium, pages that
// record console errors, page errors, CSP violations and requests to other hosts, sign-in, axe-core
// and screenshots.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import assert from 'node:assert/strict';
import puppeteer from 'puppeteer-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '../..');
export const SHOTS = path.join(ROOT, 'build', 'browser-screenshots');
export const USERS = {
  alice: 'Alice-pw-1', bob: 'Bob-pw-2', erin: 'Erin-pw-5', dave: 'p@ss, w0rd (*)', frank: 'Frank-pw-6',
};
export const CHROMIUM = process.env.QUARRY_CHROMIUM || '/usr/bin/chromium';

// ---- the stack (run.mjs) ----------------------------------------------------------------------

function basic(user) {
  return `Basic ${Buffer.from(`${user}:${USERS[user]}`).toString('base64')}`;
}

/** A JSON call to quarry as a fixture user (HTTP Basic); resolves to {status, body}. */
export async function quarryAs(base, user, method, route, body) {
  const res = await fetch(new URL(route, base), {
    method,
    headers: { Authorization: basic(user), ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, body: json, text };
}

/** The corpus of tests/api_test_corpus.h: the same topic, readable by different people. */
export const CORPUS = [
  ['runbooks/backend.md', 'Backend runbook', '# Backend deploys\n\nThe expense reimbursement service deploys blue-green on Tuesdays. Rollback with the release tool. Marker PINEAPPLEBACKEND.', ['group:eng-backend']],
  ['runbooks/frontend.md', 'Frontend runbook', '# Frontend releases\n\nThe expense reimbursement web app ships behind a feature flag. Marker MANGOFRONTEND.', ['group:eng-frontend']],
  ['policies/expenses.md', 'Expense policy', '# Expense reimbursement policy\n\nEvery employee files expense reimbursement claims within 30 days, with receipts. Marker KIWISTAFF.', ['group:staff']],
  ['hr/erin-review.md', "Erin's review", "# Performance review\n\nErin's expense reimbursement for the conference was approved. Marker PAPAYAERIN.", ['user:erin']],
  ['finance/board.md', 'Board notes', '# Board notes\n\nExpense reimbursement totals for the quarter. Marker GUAVAADMIN.', null],
];

export async function seedCorpus(base) {
  for (const [doc_id, title, text, acl] of CORPUS) {
    const doc = { doc_id, title, text, content_type: 'text/markdown', ...(acl ? { acl } : {}) };
    const r = await quarryAs(base, 'dave', 'POST', '/v1/documents?refresh=wait_for', doc);
    if (r.status === 202) await waitJob(base, r.body.job_id); // server.job_threshold_bytes=0
    else if (r.status !== 201 && r.status !== 200) throw new Error(`seeding ${doc_id}: ${r.status} ${r.text}`);
  }
}

/** Waits for a job to succeed (an ingest job ends once its documents are searchable). */
export async function waitJob(base, id) {
  for (let i = 0; i < 200; i++) {
    const j = await quarryAs(base, 'dave', 'GET', `/v1/jobs/${id}`);
    if (j.body?.state === 'succeeded') return j.body;
    if (['failed', 'cancelled'].includes(j.body?.state)) throw new Error(`job ${id}: ${j.text}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`job ${id} did not finish`);
}

/** Starts quarry; resolves to {base, quarry, dataDir, stop()}. */
export async function startStack() {
  const bin = process.env.QUARRY_BIN || path.join(ROOT, 'build/release/quarry');
  const ldap = process.env.QUARRY_TEST_LDAP_URI;
  const inference = process.env.QUARRY_TEST_INFERENCE_URL;
  if (!ldap || !inference) throw new Error('run inside tests/fixtures/slapd-fixture.sh and fake-inference-fixture.sh (run.sh does)');
  const base = process.env.QUARRY_TEST_LDAP_BASE || 'dc=quarry,dc=test';
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'quarry-browser-'));
  const set = {
    'server.listen': '127.0.0.1:0', 'server.threads': '2', 'server.workers': '8', 'server.job_threshold_bytes': '0',
    'auth.admin_groups': 'ops', 'inference.base_url': `${inference}/v1`, 'inference.model': 'fake-chat-model',
    'inference.retries': '0', 'inference.total_timeout_ms': '20000', 'ldap.uri': ldap,
    'ldap.bind_dn': process.env.QUARRY_TEST_LDAP_BIND_DN, 'ldap.bind_password': process.env.QUARRY_TEST_LDAP_BIND_PW,
    'ldap.user_base': `ou=people,${base}`, 'ldap.group_base': `ou=groups,${base}`,
    // the tests sign in many times from one address
    'auth.rate_limit_addr': '1000',
  };
  const args = ['serve', '--data', path.join(tmp, 'data'), '--log-level', 'info'];
  for (const [k, v] of Object.entries(set)) args.push('--set', `${k}=${v}`);
  const log = fs.openSync(path.join(tmp, 'serve.log'), 'w');
  const child = spawn(bin, args, { stdio: ['ignore', log, log] });
  let quarry = null;
  for (let i = 0; i < 300 && !quarry; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const m = fs.readFileSync(path.join(tmp, 'serve.log'), 'utf8').match(/listening on (https?:\/\/\S+)/);
    if (m) quarry = m[1].replace(/\/$/, '');
    if (child.exitCode !== null) break;
  }
  if (!quarry) {
    child.kill('SIGKILL');
    throw new Error(`quarry serve did not start:\n${fs.readFileSync(path.join(tmp, 'serve.log'), 'utf8')}`);
  }
  await seedCorpus(quarry);
  return {
    base: quarry,
    quarry,
    dir: tmp,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)));
      if (!process.env.QUARRY_KEEP_TMP) fs.rmSync(tmp, { recursive: true, force: true });
    },
  };
}

// ---- for the tests ----------------------------------------------------------------------------

export function baseUrl() {
  const b = process.env.QUARRY_BROWSER_BASE;
  assert.ok(b, 'QUARRY_BROWSER_BASE is not set: run the tests with tests/browser/run.sh');
  return b;
}

export function inferenceUrl() {
  return process.env.QUARRY_TEST_INFERENCE_URL;
}

export async function launch() {
  return puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--lang=en-US'],
  });
}

/**
 * A fresh page (its own browser context: its own sessionStorage) that records problems:
 * page.problems holds console errors, uncaught exceptions, CSP violations and requests to any other
 * host than the console's.
 */
export async function newPage(browser, { width = 1280, height = 900 } = {}) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  await page.setViewport({ width, height });
  const host = new URL(baseUrl()).host;
  page.problems = [];
  page.on('console', (m) => {
    if (m.type() === 'error') page.problems.push(`console error: ${m.text()}`);
  });
  page.on('pageerror', (e) => page.problems.push(`page error: ${e.message}`));
  page.on('request', (r) => {
    const u = new URL(r.url());
    if ((u.protocol === 'http:' || u.protocol === 'https:') && u.host !== host) page.problems.push(`request to another host: ${r.url()}`);
  });
  await page.evaluateOnNewDocument(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline'} (${e.sourceFile}:${e.lineNumber})`);
    });
  });
  page.closeAll = () => context.close();
  return page;
}

/** Fails with what went wrong in the page, if anything did. */
export function assertClean(page, allowed = []) {
  const left = page.problems.filter((p) => !allowed.some((re) => re.test(p)));
  assert.deepEqual(left, [], `problems in the page:\n${left.join('\n')}`);
}

export async function signIn(page, user, password = USERS[user]) {
  await page.goto(`${baseUrl()}/`, { waitUntil: 'networkidle0' });
  await page.waitForSelector('[data-testid="login-user"]', { visible: true });
  await page.type('[data-testid="login-user"]', user);
  await page.type('[data-testid="login-password"]', password);
  await page.click('[data-testid="login-submit"]');
  await page.waitForSelector('[data-testid="signout"]', { visible: true });
}

/** Asks a question on the chat screen and waits for the whole answer; returns {text, citations}. */
export async function ask(page, question) {
  await page.goto(`${baseUrl()}/#/chat`);
  await page.waitForSelector('[data-testid="chat-input"]', { visible: true });
  const before = await page.$$eval('[data-testid="answer"]', (a) => a.length);
  await page.type('[data-testid="chat-input"]', question);
  await page.keyboard.press('Enter');
  await page.waitForFunction((n) => {
    const a = document.querySelectorAll('[data-testid="answer"]');
    return a.length > n && a[a.length - 1].getAttribute('aria-busy') === 'false';
  }, { timeout: 30000 }, before);
  return page.evaluate(() => {
    const turns = document.querySelectorAll('.turn-assistant');
    const t = turns[turns.length - 1];
    return {
      text: t.querySelector('[data-testid="answer"]').textContent,
      badge: t.querySelector('.badge').hidden ? '' : t.querySelector('.badge').textContent,
      citations: [...t.querySelectorAll('[data-testid="citation"]')].map((c) => c.textContent),
    };
  });
}

/** Searches on the search screen; returns the doc ids of the results. */
export async function search(page, query) {
  await page.goto(`${baseUrl()}/#/search`);
  await page.waitForSelector('[data-testid="search-input"]', { visible: true });
  await page.$eval('[data-testid="search-input"]', (i) => { i.value = ''; });
  await page.type('[data-testid="search-input"]', query);
  await page.evaluate(() => { document.querySelector('.screen-search .notice').textContent = ''; });
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => {
    const n = document.querySelector('.screen-search .notice');
    return n && /result|No results|refused|could not/.test(n.textContent);
  }, { timeout: 15000 });
  return page.$$eval('[data-testid="result"]', (rs) => rs.map((r) => r.dataset.docId));
}

const require = createRequire(import.meta.url);
const AXE = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

/** axe-core's violations of impact serious or critical in the page as it is now. */
export async function axeViolations(page) {
  // evaluated through the DevTools protocol, which the page's CSP does not govern
  await page.evaluate(AXE);
  const res = await page.evaluate(async () => window.axe.run(document, { resultTypes: ['violations'] }));
  return res.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.help} -- ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(' | ')}`);
}

export async function screenshot(page, name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** The page scrolls sideways (something wider than the viewport): a layout bug at 360 px. */
export async function horizontalOverflow(page) {
  return page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
}

/** The fake inference server's control routes (tests/fake_inference/README.md). */
export async function fake(method, route, body) {
  const res = await fetch(`${inferenceUrl()}${route}`, {
    method, headers: body ? { 'Content-Type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined,
  });
  return res.status;
}
