// Every screen at 1280 px (a desktop) and 360 px (an Office task pane): axe-core finds no serious
// or critical violation, nothing scrolls sideways, no console error or CSP violation, no request
// to another host; screenshots go to build/browser-screenshots/. Sign-in here is keyboard only.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  launch, newPage, assertClean, baseUrl, axeViolations, screenshot, horizontalOverflow, USERS,
} from './harness.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

async function check(page, name, width) {
  assert.deepEqual(await axeViolations(page), [], `axe on ${name} at ${width} px`);
  assert.ok((await horizontalOverflow(page)) <= 0, `${name} scrolls sideways at ${width} px`);
  await screenshot(page, `${name}-${width}`);
}

for (const width of [1280, 360]) {
  test(`every screen at ${width} px`, async () => {
    const page = await newPage(browser, { width, height: width > 400 ? 900 : 740 });
    await page.goto(`${baseUrl()}/`, { waitUntil: 'networkidle0' });
    await page.waitForSelector('[data-testid="login-user"]', { visible: true });
    assert.equal(await page.evaluate(() => document.documentElement.lang), 'en');
    await check(page, 'signin', width);

    // keyboard only: the user field has the focus; Tab to the password, Enter signs in
    assert.equal(await page.evaluate(() => document.activeElement?.dataset.testid), 'login-user');
    await page.keyboard.type('dave');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.dataset.testid), 'login-password');
    await page.keyboard.type(USERS.dave);
    await page.keyboard.press('Enter');
    await page.waitForSelector('[data-testid="chat-input"]', { visible: true });
    assert.equal(await page.evaluate(() => document.activeElement?.dataset.testid), 'chat-input');
    await page.keyboard.type('How is expense reimbursement handled?');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.querySelector('[data-testid="answer"]')?.getAttribute('aria-busy') === 'false', { timeout: 30000 });
    await page.click('[data-testid="citation"]');
    await check(page, 'chat', width);

    await page.goto(`${baseUrl()}/#/search`);
    await page.waitForSelector('[data-testid="search-input"]', { visible: true });
    await page.type('[data-testid="search-input"]', 'expense reimbursement');
    await page.keyboard.press('Enter');
    await page.waitForSelector('[data-testid="result"]', { visible: true });
    await page.click('.filters summary');
    await check(page, 'search', width);

    await page.goto(`${baseUrl()}/#/admin`);
    await page.waitForSelector('[data-testid="doc-row"]', { visible: true });
    await page.waitForFunction(() => document.querySelectorAll(".facts dt").length > 0);
    await page.waitForSelector('[data-testid="audit-row"]', { visible: true });
    await page.click('[data-testid="doc-row"] [data-testid="acl-edit"]');
    await check(page, 'admin', width);
    assertClean(page);
    await page.closeAll();
  });
}
