// Two users ask the same question and get different answers and citations (their ACLs differ);
// a user who is no administrator sees no administration and the API refuses them anyway; a wrong
// password and sign-out behave.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, newPage, signIn, ask, search, assertClean, baseUrl, fake } from './harness.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await fake('POST', '/_fake/reset', {});
  await browser?.close();
});

const QUESTION = 'How is expense reimbursement handled?';

test('alice and bob get different citations for the same question', async () => {
  await fake('POST', '/_fake/reset', {});
  const seen = {};
  for (const user of ['alice', 'bob']) {
    const page = await newPage(browser);
    await signIn(page, user);
    seen[user] = await ask(page, QUESTION);
    assert.match(seen[user].text, /According to the source/, `${user}'s answer: ${seen[user].text}`);
    assert.ok(seen[user].citations.length > 0, `${user} got no citations`);
    // a citation opens its passage
    await page.click('[data-testid="citation"]');
    const body = await page.$eval('.citation-body', (b) => ({ hidden: b.hidden, text: b.textContent }));
    assert.equal(body.hidden, false);
    assert.match(body.text, /expense/i);
    assertClean(page);
    await page.closeAll();
  }
  const a = seen.alice.citations.join('|');
  const b = seen.bob.citations.join('|');
  assert.match(a, /Backend runbook/);
  assert.doesNotMatch(a, /Frontend runbook|Erin's review|Board notes/);
  assert.match(b, /Frontend runbook/);
  assert.doesNotMatch(b, /Backend runbook|Erin's review|Board notes/);
});

test('without a model, answers are extractive, labelled, and differ per user', async () => {
  await fake('POST', '/_fake/faults', { mode: '500', times: -1 });
  try {
    const text = {};
    for (const user of ['alice', 'bob']) {
      const page = await newPage(browser, { width: 360, height: 740 });
      await signIn(page, user);
      const r = await ask(page, QUESTION);
      assert.match(r.badge, /Extractive answer/, `${user}: no extractive label (${JSON.stringify(r)})`);
      text[user] = r.text;
      assertClean(page);
      await page.closeAll();
    }
    assert.notEqual(text.alice, text.bob);
    assert.match(text.alice, /PINEAPPLEBACKEND|blue-green/);
    assert.doesNotMatch(text.alice, /MANGOFRONTEND|feature flag/);
    assert.match(text.bob, /MANGOFRONTEND|feature flag/);
  } finally {
    await fake('DELETE', '/_fake/faults');
  }
});

test('search shows each user only what they may read, with highlighted snippets', async () => {
  const page = await newPage(browser);
  await signIn(page, 'erin');
  const ids = await search(page, 'expense reimbursement');
  assert.ok(ids.includes('hr/erin-review.md'), ids.join(','));
  assert.ok(!ids.includes('runbooks/backend.md') && !ids.includes('finance/board.md'), ids.join(','));
  const marks = await page.$$eval('[data-testid="result"] mark', (m) => m.map((x) => x.textContent.toLowerCase()));
  assert.ok(marks.some((m) => m.includes('expense')), `no <mark> in snippets: ${marks}`);
  assertClean(page);
  await page.closeAll();
});

test('a user who is no administrator sees no administration, and the API refuses them', async () => {
  const page = await newPage(browser);
  await signIn(page, 'alice');
  assert.equal(await page.$eval('a[data-route="admin"]', (a) => a.hidden), true);
  assert.equal(await page.$('[data-testid="upload-input"]'), null);
  await page.goto(`${baseUrl()}/#/admin`);
  await page.waitForSelector('.screen-admin [role="alert"]', { visible: true });
  assert.equal(await page.$('[data-testid="upload-input"]'), null);
  assert.equal(await page.$('[data-testid="doc-row"]'), null);
  // the same calls the screen would make, with alice's token, are refused by quarry
  const statuses = await page.evaluate(async () => {
    const token = JSON.parse(sessionStorage.getItem('quarry.session')).token;
    const h = { Authorization: `Bearer ${token}` };
    const list = await fetch('/v1/documents', { headers: h });
    const form = new FormData();
    form.append('file', new Blob(['x'], { type: 'text/plain' }), 'x.txt');
    const up = await fetch('/v1/documents', { method: 'POST', headers: h, body: form });
    const acl = await fetch('/v1/documents/policies%2Fexpenses.md/acl', { method: 'PATCH', headers: { ...h, 'Content-Type': 'application/json' }, body: '{"acl":["public"]}' });
    const del = await fetch('/v1/documents/policies%2Fexpenses.md', { method: 'DELETE', headers: h });
    return [list.status, up.status, acl.status, del.status];
  });
  assert.deepEqual(statuses, [403, 403, 403, 403]);
  assertClean(page, [/status of 403/]);
  await page.closeAll();
});

test('a wrong password is refused with a clear message; sign-out clears the session', async () => {
  const page = await newPage(browser);
  await page.goto(`${baseUrl()}/`);
  await page.waitForSelector('[data-testid="login-user"]', { visible: true });
  await page.type('[data-testid="login-user"]', 'bob');
  await page.type('[data-testid="login-password"]', 'not-his-password');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => {
    const t = document.querySelector('.screen-signin [role="alert"]').textContent;
    return t && !/Signing in/.test(t);
  });
  assert.equal(await page.$eval('.screen-signin [role="alert"]', (a) => a.textContent), 'Wrong user name or password.');
  await page.$eval('[data-testid="login-password"]', (i) => { i.value = ''; });
  await page.type('[data-testid="login-password"]', 'Bob-pw-2');
  await page.keyboard.press('Enter');
  await page.waitForSelector('[data-testid="signout"]', { visible: true });
  await page.click('[data-testid="signout"]');
  await page.waitForSelector('[data-testid="login-user"]', { visible: true });
  assert.equal(await page.evaluate(() => sessionStorage.getItem('quarry.session')), null);
  assert.equal(await page.$('[data-testid="answer"]'), null);
  // an expired or revoked token sends the user back to sign-in with a message
  await signIn(page, 'bob');
  await page.evaluate(() => {
    const s = JSON.parse(sessionStorage.getItem('quarry.session'));
    s.token = 'qt1.Ym9i.9999999999.00000000.forged';
    sessionStorage.setItem('quarry.session', JSON.stringify(s));
  });
  await page.reload({ waitUntil: 'networkidle0' });
  await page.waitForFunction(() => /expired/.test(document.querySelector('.screen-signin [role="alert"]')?.textContent || ''));
  assertClean(page, [/status of 401/]);
  await page.closeAll();
});
