// An administrator creates a service API key in the console and sees its secret once; the key
// works against /v1/search from outside the browser; revoked in the console, it is refused at
// once; the audit section shows the creation. axe runs with the secret on screen.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, newPage, signIn, assertClean, baseUrl, axeViolations, horizontalOverflow } from './harness.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

async function searchWithKey(key) {
  const res = await fetch(new URL('/v1/search', baseUrl()), {
    method: 'POST',
    headers: { 'X-API-Key': key, 'Content-Type': 'application/json' },
    body: JSON.stringify({ query: 'expense reimbursement', mode: 'bm25' }),
  });
  await res.text();
  return res.status;
}

for (const width of [1280, 360]) {
  test(`create a key, use it, revoke it, see it audited (${width} px)`, async () => {
    const page = await newPage(browser, { width, height: width > 400 ? 900 : 740 });
    await signIn(page, 'dave');
    await page.goto(`${baseUrl()}/#/admin`);
    await page.waitForSelector('[data-testid="key-create"]', { visible: true });
    const name = `console widget ${width}`;
    await page.type('[data-testid="key-name"]', name);
    await page.click('[data-testid="key-scope-search"]');
    await page.click('[data-testid="key-create"]');
    const secretField = await page.waitForSelector('[data-testid="key-secret"]', { visible: true });
    const key = await secretField.evaluate((e) => e.value);
    assert.match(key, /^qk_[0-9a-f]{16}_\S+$/);
    assert.equal(await secretField.evaluate((e) => e.readOnly), true);
    assert.match(await page.$eval('.secret-panel', (e) => e.textContent), /will not show it again/);
    const id = key.slice(3, 19);
    const row = `[data-testid="key-row"][data-key-id="${id}"]`;
    await page.waitForSelector(row, { visible: true });
    const rowText = await page.$eval(row, (r) => r.textContent);
    assert.match(rowText, new RegExp(name));
    assert.match(rowText, /search/);
    assert.ok(!rowText.includes(key.slice(20)), 'the list shows no secret');
    assert.deepEqual(await axeViolations(page), [], `axe with the secret shown at ${width} px`);
    assert.ok((await horizontalOverflow(page)) <= 0, `the admin screen scrolls sideways at ${width} px`);

    // the key works from outside the browser
    assert.equal(await searchWithKey(key), 200);

    // shown once: gone after "stored it", and not on the page after a reload
    await page.click('[data-testid="key-secret-done"]');
    assert.equal(await page.$('[data-testid="key-secret"]'), null);
    await page.reload({ waitUntil: 'networkidle0' });
    await page.waitForSelector(row, { visible: true });
    assert.equal(await page.$('[data-testid="key-secret"]'), null);
    assert.ok(!(await page.content()).includes(key.slice(20)), 'the secret is not shown again');

    // revoked after a confirmation; refused at once
    await page.click(`${row} [data-testid="key-revoke"]`);
    await page.click(`${row} [data-testid="key-revoke-confirm"]`);
    await page.waitForFunction((sel) => document.querySelector(`${sel} [data-testid="key-state"]`)?.textContent === 'revoked', {}, row);
    assert.equal(await searchWithKey(key), 401);

    // the audit section: the creation, by dave, with the key's id; never the secret
    await page.click('[data-testid="audit-refresh"]');
    // the list shown before the click may already hold the creation: wait for the refreshed one,
    // whose newest record is the refused search
    await page.waitForFunction((kid) => document.querySelector('[data-testid="audit-row"]')?.dataset.action === 'auth_refused' &&
      [...document.querySelectorAll('[data-testid="audit-row"][data-action="key_create"]')]
        .some((r) => r.textContent.includes(kid)), {}, id);
    const audit = await page.$$eval('[data-testid="audit-row"]', (rows) => rows.map((r) => r.textContent));
    assert.ok(audit.length <= 50);
    // newest first: the refused search, then the revocation, ..., then the creation
    assert.match(audit[0], /auth_refused/);
    const revoked = audit.findIndex((t) => /key_revoke/.test(t) && t.includes(id));
    const created = audit.findIndex((t) => /key_create/.test(t) && t.includes(id));
    assert.ok(revoked > 0 && created > revoked, `revoke at ${revoked}, create at ${created}`);
    assert.ok(audit.some((t) => /key_create/.test(t) && t.includes('dave') && t.includes(id)));
    assert.ok(!audit.join('\n').includes(key.slice(20)), 'the audit section shows no secret');
    assertClean(page);
    await page.closeAll();
  });
}
