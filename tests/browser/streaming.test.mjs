// The answer is rendered while the backend is still writing it: the fake backend sends a word, then
// stalls; the word must be on screen before the rest arrives. Stop ends an answer at once.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, newPage, signIn, assertClean, baseUrl, fake } from './harness.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await fake('POST', '/_fake/reset', {});
  await browser?.close();
});

async function startQuestion(page, q) {
  await page.goto(`${baseUrl()}/#/chat`);
  await page.waitForSelector('[data-testid="chat-input"]', { visible: true });
  await page.type('[data-testid="chat-input"]', q);
  await page.click('[data-testid="chat-send"]');
}

test('partial answer text is visible while the backend stalls', async () => {
  const page = await newPage(browser);
  await signIn(page, 'alice');
  assert.equal(await fake('POST', '/_fake/faults', { mode: 'stall_mid_stream', times: 1, stall_ms: 4000 }), 200);
  const t0 = Date.now();
  await startQuestion(page, 'What is the expense reimbursement policy?');
  await page.waitForFunction(() => {
    const a = document.querySelector('[data-testid="answer"]');
    return a && a.textContent.trim().length > 0;
  }, { timeout: 10000 });
  const partial = await page.$eval('[data-testid="answer"]', (a) => ({ text: a.textContent, busy: a.getAttribute('aria-busy') }));
  assert.ok(Date.now() - t0 < 3800, 'the first words came only after the stall');
  assert.equal(partial.busy, 'true', 'the answer is still streaming');
  assert.ok(partial.text.length > 0 && partial.text.length < 40, `partial: ${partial.text}`);
  assert.equal(await page.$eval('[data-testid="chat-stop"]', (b) => b.disabled), false);
  await page.waitForFunction(() => document.querySelector('[data-testid="answer"]').getAttribute('aria-busy') === 'false', { timeout: 20000 });
  const full = await page.$eval('[data-testid="answer"]', (a) => a.textContent);
  assert.ok(full.startsWith(partial.text.trim().split(' ')[0]), full);
  assert.ok(full.length > partial.text.length, full);
  assert.ok((await page.$$('[data-testid="citation"]')).length > 0);
  assertClean(page);
  await page.closeAll();
});

test('stop ends a stalled answer at once and keeps what came', async () => {
  const page = await newPage(browser);
  await signIn(page, 'bob');
  await fake('POST', '/_fake/faults', { mode: 'stall_mid_stream', times: 1, stall_ms: 15000 });
  await startQuestion(page, 'Who files expense reimbursement claims?');
  await page.waitForFunction(() => document.querySelector('[data-testid="answer"]')?.textContent.trim(), { timeout: 10000 });
  const t0 = Date.now();
  await page.click('[data-testid="chat-stop"]');
  await page.waitForFunction(() => document.querySelector('[data-testid="answer"]').getAttribute('aria-busy') === 'false', { timeout: 5000 });
  assert.ok(Date.now() - t0 < 3000);
  assert.match(await page.$eval('[data-testid="answer"]', (a) => a.textContent), /\(stopped\)/);
  assertClean(page);
  await page.closeAll();
  await fake('DELETE', '/_fake/faults');
});
