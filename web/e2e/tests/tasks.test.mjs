// The task list in a real browser: sign-up, a daily recurring task and its next occurrence,
// filters, search, sort, "load more", overdue marking, phone width, security headers.

import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';

import {
  ErrorWatch, dateIn, launchBrowser, newContext, openPage, screenshot, signIn, titles, waitForStatuses, waitForTitles, wallClock,
} from '../lib/browser.mjs';
import { TestServer } from '../lib/server.mjs';

const ZONE = 'Europe/Berlin';
let server;
let browser;
const watch = new ErrorWatch();

before(async () => {
  server = await TestServer.start();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

afterEach(() => watch.check());

function freshContext(options = {}) {
  return newContext(browser, ZONE, options);
}

test('the page is served with a strict content security policy', async () => {
  const response = await fetch(`${server.url}/`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type'), /^text\/html/);
  const policy = response.headers.get('content-security-policy');
  assert.match(policy, /script-src 'self'/);
  assert.doesNotMatch(policy, /unsafe-inline|unsafe-eval/);
  const etag = response.headers.get('etag');
  assert.ok(etag);
  const again = await fetch(`${server.url}/`, { headers: { 'if-none-match': etag } });
  assert.equal(again.status, 304);
  const script = await fetch(`${server.url}/ui/js/main.js`);
  assert.match(script.headers.get('content-type'), /^text\/javascript/);
});

test('sign up, create a daily task, complete it and see the next occurrence', async () => {
  const context = await freshContext();
  const page = await openPage(context, server.url, watch);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await screenshot(page, 'sign-in');

  // Sign up.
  await page.getByRole('button', { name: 'Create an account' }).click();
  await page.getByLabel('E-mail').fill(`ann-${Date.now()}@example.com`);
  await page.getByLabel('Password').fill('correct horse battery');
  await page.getByLabel('Name').fill('Ann');
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.locator('#workspace').waitFor({ state: 'visible' });
  await page.locator('#who', { hasText: 'Ann' }).waitFor();
  await page.locator('#sync[data-state="connected"]').waitFor();
  await page.locator('#empty').waitFor({ state: 'visible' });

  // A task repeating every day at 09:00, due tomorrow.
  const tomorrow = dateIn(ZONE, 1);
  await page.getByRole('button', { name: 'New task' }).click();
  const editor = page.locator('#editor');
  await editor.getByLabel('Title', { exact: true }).fill('Water the plants');
  await editor.getByLabel('Date', { exact: true }).fill(tomorrow);
  await editor.getByLabel('Time', { exact: true }).fill('09:00');
  assert.equal(await editor.getByLabel('Time zone').inputValue(), ZONE, 'defaults to the browser zone');
  await editor.getByLabel('Tags').fill('home garden');
  await editor.getByLabel('Repeats').selectOption('daily');
  await page.locator('#r-description', { hasText: 'every day at 09:00' }).waitFor();
  await page.locator('#r-next li').nth(4).waitFor();
  const previews = await page.$$eval('#r-next li', (items) => items.map((li) => li.dataset.due));
  assert.equal(previews.length, 5);
  assert.equal(wallClock(previews[0], ZONE), `${tomorrow} 09:00`);
  assert.equal(wallClock(previews[1], ZONE), `${dateIn(ZONE, 2)} 09:00`);

  // The custom builder writes the rule and describes it in words.
  await editor.getByLabel('Repeats').selectOption('custom');
  await editor.getByLabel('Unit', { exact: true }).selectOption('WEEKLY');
  await editor.getByLabel('Every', { exact: true }).fill('2');
  await editor.getByLabel('Mon', { exact: true }).check();
  await editor.getByLabel('Thu', { exact: true }).check();
  assert.equal(await editor.getByLabel('Rule (RFC 5545)').inputValue(), 'FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TH');
  await page.locator('#r-description', { hasText: /every 2 weeks/ }).waitFor();
  await screenshot(page, 'editor-custom-rule');
  await editor.getByLabel('Repeats').selectOption('daily');
  await page.locator('#r-description', { hasText: 'every day at 09:00' }).waitFor();

  await editor.getByRole('button', { name: 'Save' }).click();
  await editor.waitFor({ state: 'hidden' });
  await waitForTitles(page, ['Water the plants']);
  const item = page.locator('#tasks .task').first();
  await item.locator('.badge.repeat', { hasText: 'every day at 09:00' }).waitFor();
  const firstDue = await item.getAttribute('data-due');
  assert.equal(wallClock(firstDue, ZONE), `${tomorrow} 09:00`);
  await screenshot(page, 'task-list');

  // Complete it: it leaves the open list and the next day's occurrence takes its place.
  await page.getByRole('checkbox', { name: 'Complete: Water the plants' }).click();
  await page.waitForFunction((old) => {
    const items = [...document.querySelectorAll('#tasks .task')];
    return items.length === 1 && items[0].dataset.due !== old && items[0].dataset.status === 'pending';
  }, firstDue);
  const nextDue = await page.locator('#tasks .task').first().getAttribute('data-due');
  assert.equal(wallClock(nextDue, ZONE), `${dateIn(ZONE, 2)} 09:00`);

  // The completed one is under "Completed".
  await page.getByText('Filters and sort').click();
  await page.locator('#filters').getByLabel('Status').selectOption('completed');
  await waitForStatuses(page, ['completed']);
  await waitForTitles(page, ['Water the plants']);
  assert.equal(await page.locator('#tasks .task').first().getAttribute('data-due'), firstDue);
  assert.equal(await page.locator('#tasks .task').first().getAttribute('data-status'), 'completed');

  // Edit and delete inline.
  await page.locator('#filters').getByLabel('Status').selectOption('pending');
  await waitForStatuses(page, ['pending']);
  await waitForTitles(page, ['Water the plants']);
  await page.getByRole('button', { name: 'Edit: Water the plants' }).click();
  assert.equal(await editor.getByLabel('Repeats').inputValue(), 'daily', 'a saved preset shows as that preset');
  await editor.getByLabel('Title', { exact: true }).fill('Water the orchids');
  await editor.getByLabel('Priority', { exact: true }).selectOption('high');
  await editor.getByRole('button', { name: 'Save' }).click();
  await waitForTitles(page, ['Water the orchids']);
  assert.equal(await page.locator('#tasks .task').first().getAttribute('data-priority'), 'high');
  await page.getByRole('button', { name: 'Delete: Water the orchids' }).click();
  await page.locator('#confirm').getByRole('button', { name: 'Delete' }).click();
  await waitForTitles(page, []);

  // Escape closes dialogs.
  await page.getByRole('button', { name: 'New task' }).click();
  await editor.waitFor({ state: 'visible' });
  await page.keyboard.press('Escape');
  await editor.waitFor({ state: 'hidden' });

  // Sign out.
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await context.close();
});

test('filter, search as you type, sort and load more', async () => {
  const user = await server.register('filters');
  const day = 86_400_000;
  const create = (body) => server.api('/api/v1/tasks', { method: 'POST', token: user.token, body });
  await create({ title: 'Buy milk', priority: 'low', tags: ['groceries'], due_at: new Date(Date.now() + 2 * day).toISOString() });
  await create({ title: 'Pay rent', priority: 'urgent', tags: ['finance'], due_at: new Date(Date.now() - day).toISOString() });
  await create({ title: 'Read a book', priority: 'high' });
  await create({ title: 'Call mom', priority: 'medium', tags: ['family'], due_at: new Date(Date.now() + 10 * day).toISOString() });

  const context = await freshContext();
  const page = await openPage(context, server.url, watch);
  await signIn(page, user);
  const filters = page.locator('#filters');
  await waitForTitles(page, ['Call mom', 'Read a book', 'Pay rent', 'Buy milk']);

  // Overdue tasks stand out.
  const rent = page.locator('#tasks .task', { hasText: 'Pay rent' });
  assert.equal(await rent.getAttribute('data-overdue'), 'true');
  assert.match(await rent.getAttribute('class'), /\boverdue\b/);
  await rent.locator('.badge.overdue').waitFor();

  // Search as you type (prefix match).
  await filters.getByLabel('Search').pressSequentially('ren', { delay: 30 });
  await waitForTitles(page, ['Pay rent']);
  await filters.getByLabel('Search').fill('');
  await waitForTitles(page, ['Call mom', 'Read a book', 'Pay rent', 'Buy milk']);

  await page.getByText('Filters and sort').click();
  await filters.getByLabel('Priority', { exact: true }).selectOption('high');
  await waitForTitles(page, ['Read a book']);
  await filters.getByLabel('Priority', { exact: true }).selectOption('');
  await filters.getByLabel('Tag', { exact: true }).selectOption('family');
  await waitForTitles(page, ['Call mom']);
  await filters.getByLabel('Tag', { exact: true }).selectOption('');
  await filters.getByLabel('Overdue only').check();
  await waitForTitles(page, ['Pay rent']);
  await filters.getByLabel('Overdue only').uncheck();
  await filters.getByLabel('Due from').fill(dateIn(ZONE, 0));
  await filters.getByLabel('Due until').fill(dateIn(ZONE, 5));
  await waitForTitles(page, ['Buy milk']);
  await filters.getByLabel('Due from').fill('');
  await filters.getByLabel('Due until').fill('');
  await waitForTitles(page, ['Call mom', 'Read a book', 'Pay rent', 'Buy milk']);

  await filters.getByLabel('Sort by').selectOption('title');
  await waitForTitles(page, ['Buy milk', 'Call mom', 'Pay rent', 'Read a book']);
  await filters.getByLabel('Order').selectOption('desc');
  await waitForTitles(page, ['Read a book', 'Pay rent', 'Call mom', 'Buy milk']);
  await filters.getByLabel('Order').selectOption('');
  await filters.getByLabel('Sort by').selectOption('priority');
  await waitForTitles(page, ['Pay rent', 'Read a book', 'Call mom', 'Buy milk']);
  await filters.getByLabel('Sort by').selectOption('due_at');
  await waitForTitles(page, ['Pay rent', 'Buy milk', 'Call mom', 'Read a book']);
  await screenshot(page, 'filters');

  // Pages of 25 with "Load more".
  await page.getByRole('button', { name: 'Clear filters' }).click();
  for (let i = 1; i <= 30; i += 1) await create({ title: `Bulk ${String(i).padStart(2, '0')}` });
  await filters.getByLabel('Sort by').selectOption('title');
  await page.waitForFunction(() => {
    const items = document.querySelectorAll('#tasks .task-title');
    return items.length === 25 && items[0].textContent === 'Bulk 01' && items[24].textContent === 'Bulk 25';
  }).catch(async (error) => assert.fail(`${error.message}: ${JSON.stringify(await titles(page))}`));
  await page.getByRole('button', { name: 'Load more' }).click();
  await page.waitForFunction(() => document.querySelectorAll('#tasks .task').length === 34)
    .catch(async (error) => assert.fail(`${error.message}: ${JSON.stringify(await titles(page))}`));
  assert.equal((await titles(page)).at(-1), 'Read a book');
  assert.equal(await page.getByRole('button', { name: 'Load more' }).isHidden(), true);
  await context.close();
});

test('keyboard only: every control is labelled, "n" opens the editor, Enter saves, Escape closes', async () => {
  const user = await server.register('keys');
  const context = await freshContext();
  const page = await openPage(context, server.url, watch);
  await signIn(page, user);
  await waitForTitles(page, []);
  // Every form control has an accessible name (a <label> or aria-label); every button has text or a label.
  const unlabelled = await page.evaluate(() => [
    ...[...document.querySelectorAll('input, select, textarea')]
      .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
      .map((e) => `${e.tagName.toLowerCase()}#${e.id}`),
    ...[...document.querySelectorAll('button')]
      .filter((b) => !b.textContent.trim() && !b.getAttribute('aria-label'))
      .map((b) => `button#${b.id}`),
  ]);
  assert.deepEqual(unlabelled, []);

  await page.locator('body').click({ position: { x: 5, y: 300 } });
  await page.keyboard.press('n');
  const editor = page.locator('#editor');
  await editor.waitFor({ state: 'visible' });
  assert.equal(await page.evaluate(() => document.activeElement.id), 'e-title');
  await page.keyboard.type('Typed without a mouse');
  await page.keyboard.press('Enter');
  await editor.waitFor({ state: 'hidden' });
  await waitForTitles(page, ['Typed without a mouse']);

  // Tab reaches the task's controls; focus is visible (an outline is drawn).
  const checkbox = page.getByRole('checkbox', { name: 'Complete: Typed without a mouse' });
  await checkbox.focus();
  await page.keyboard.press('Tab');
  const focused = await page.evaluate(() => ({
    label: document.activeElement.getAttribute('aria-label'),
    outline: getComputedStyle(document.activeElement).outlineStyle,
  }));
  assert.equal(focused.label, 'Edit: Typed without a mouse');
  assert.notEqual(focused.outline, 'none');
  await page.keyboard.press('Enter');
  await editor.waitFor({ state: 'visible' });
  await page.keyboard.press('Escape');
  await editor.waitFor({ state: 'hidden' });
  assert.equal(await page.evaluate(() => document.activeElement.getAttribute('aria-label')), 'Edit: Typed without a mouse', 'focus returns to the button that opened the dialog');
  await context.close();
});

test('a phone-width screen has no horizontal scrolling', async () => {
  const user = await server.register('phone');
  await server.api('/api/v1/tasks', {
    method: 'POST',
    token: user.token,
    body: { title: 'A task with a rather long title that has to wrap on a narrow phone screen', priority: 'urgent', tags: ['one', 'two', 'three'], due_at: new Date(Date.now() - 3_600_000).toISOString(), description: 'Notes' },
  });
  const context = await freshContext({ viewport: { width: 375, height: 800 }, isMobile: true, hasTouch: true });
  const page = await openPage(context, server.url, watch);
  const noHorizontalScroll = () => page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth);
  assert.ok(await noHorizontalScroll(), 'sign-in page scrolls sideways');
  await signIn(page, user);
  await page.locator('#tasks .task').first().waitFor();
  assert.ok(await noHorizontalScroll(), 'task list scrolls sideways');
  await screenshot(page, 'phone-list');
  await page.getByText('Filters and sort').click();
  assert.ok(await noHorizontalScroll(), 'filters scroll sideways');
  await page.getByRole('button', { name: 'New task' }).click();
  await page.locator('#editor').getByLabel('Repeats').selectOption('custom');
  assert.ok(await noHorizontalScroll(), 'editor scrolls sideways');
  const editorFits = await page.$eval('#editor', (d) => d.scrollWidth <= d.clientWidth + 1);
  assert.ok(editorFits, 'editor content wider than the dialog');
  await screenshot(page, 'phone-editor');
  await context.close();
});
