// An administrator uploads a document with an ACL through the console and watches its job finish;
// the permitted user finds it and the other does not; the ACL changed in the console flips that on
// the next search; deleted, it is gone for everybody.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { launch, newPage, signIn, search, assertClean, baseUrl } from './harness.mjs';

let browser;
let dir;
before(async () => {
  browser = await launch();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quarry-upload-'));
});
after(async () => {
  await browser?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const DOC = 'lagoon-plan.md';
const WORD = 'ZEPHYRLAGOON';

async function visible(user, query) {
  const page = await newPage(browser);
  await signIn(page, user);
  const ids = await search(page, query);
  assertClean(page);
  await page.closeAll();
  return ids.includes(DOC);
}

test('upload with an ACL, search as permitted and other users, change the ACL, delete', async () => {
  const file = path.join(dir, DOC);
  fs.writeFileSync(file, `# Lagoon plan\n\nThe ${WORD} project moves the archive to the lagoon site in spring.\n`);
  const admin = await newPage(browser);
  await signIn(admin, 'dave');
  await admin.goto(`${baseUrl()}/#/admin`);
  const input = await admin.waitForSelector('[data-testid="upload-input"]', { visible: true });
  await input.uploadFile(file);
  await admin.type('[data-testid="upload-acl"]', 'user:alice');
  await admin.click('[data-testid="upload-submit"]');
  // threshold 0: the upload is a job; its state is followed until it finishes
  await admin.waitForFunction(() => /succeeded|failed/.test(document.querySelector('[data-testid="job-state"]')?.textContent || ''), { timeout: 30000 });
  assert.equal(await admin.$eval('[data-testid="job-state"]', (e) => e.textContent), 'succeeded');
  const row = `[data-testid="doc-row"][data-doc-id="${DOC}"]`;
  await admin.waitForSelector(row, { visible: true });
  assert.match(await admin.$eval(row, (r) => r.textContent), /user:alice/);

  assert.equal(await visible('alice', WORD), true, 'alice should find the upload');
  assert.equal(await visible('bob', WORD), false, 'bob must not find it');

  // the ACL edited in the console: bob instead of alice
  await admin.click(`${row} [data-testid="acl-edit"]`);
  const acl = await admin.waitForSelector(`${row} [data-testid="acl-input"]`, { visible: true });
  await acl.click({ clickCount: 3 });
  await admin.keyboard.press('Backspace');
  await acl.type('user:bob');
  await admin.keyboard.press('Enter');
  await admin.waitForFunction((sel) => /user:bob/.test(document.querySelector(`${sel} .acl`).textContent), {}, row);
  assert.equal(await visible('alice', WORD), false, 'alice lost access');
  assert.equal(await visible('bob', WORD), true, 'bob gained access');

  // deleted after a confirmation
  await admin.click(`${row} [data-testid="doc-delete"]`);
  await admin.click(`${row} [data-testid="doc-delete-confirm"]`);
  await admin.waitForFunction((sel) => !document.querySelector(sel), {}, row);
  assert.equal(await visible('bob', WORD), false, 'deleted: gone for bob');
  const ids = await search(admin, WORD);
  assert.ok(!ids.includes(DOC), 'deleted: gone for the administrator');
  // and the document list no longer has it after a reload
  await admin.goto(`${baseUrl()}/#/admin`);
  await admin.reload({ waitUntil: 'networkidle0' });
  await admin.waitForSelector('[data-testid="doc-row"]', { visible: true });
  assert.equal(await admin.$(row), null);
  assertClean(admin);
  await admin.closeAll();
});
