// Live sync in a real browser: two tabs of one user, the sync indicator going offline and
// back (with what changed meanwhile), and edit conflicts resolved by the user's choice.

import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';

import { ErrorWatch, launchBrowser, newContext, openPage, screenshot, signIn, waitForTitles } from '../lib/browser.mjs';
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

function freshContext() {
  return newContext(browser, ZONE);
}

test('a change in one browser appears in another within 2 seconds', async () => {
  const user = await server.register('twotabs');
  const [contextA, contextB] = await Promise.all([freshContext(), freshContext()]);
  const a = await openPage(contextA, server.url, watch);
  const b = await openPage(contextB, server.url, watch);
  await signIn(a, user);
  await signIn(b, user);
  await waitForTitles(b, []);

  // Created in A → listed in B.
  await a.getByRole('button', { name: 'New task' }).click();
  await a.locator('#editor').getByLabel('Title', { exact: true }).fill('Shared groceries');
  await a.locator('#editor').getByRole('button', { name: 'Save' }).click();
  await a.locator('#editor').waitFor({ state: 'hidden' });
  const created = Date.now();
  await waitForTitles(b, ['Shared groceries'], { timeout: 2000 });
  assert.ok(Date.now() - created < 2000);

  // Edited in B → renamed in A.
  await b.getByRole('button', { name: 'Edit: Shared groceries' }).click();
  await b.locator('#editor').getByLabel('Title', { exact: true }).fill('Shared groceries (oat milk)');
  await b.locator('#editor').getByRole('button', { name: 'Save' }).click();
  await b.locator('#editor').waitFor({ state: 'hidden' });
  await waitForTitles(a, ['Shared groceries (oat milk)'], { timeout: 2000 });

  // Completed in A → gone from B's open tasks.
  await a.getByRole('checkbox', { name: 'Complete: Shared groceries (oat milk)' }).click();
  await waitForTitles(b, [], { timeout: 2000 });

  // Changed through the API (another device) → both see it.
  await server.api('/api/v1/tasks', { method: 'POST', token: user.token, body: { title: 'From the phone' } });
  await waitForTitles(a, ['From the phone'], { timeout: 2000 });
  await waitForTitles(b, ['From the phone'], { timeout: 2000 });
  await screenshot(b, 'second-tab');
  await contextA.close();
  await contextB.close();
});

test('the sync indicator goes offline and back, and missed changes arrive', async () => {
  const user = await server.register('offline');
  const context = await freshContext();
  const page = await openPage(context, server.url, watch);
  await signIn(page, user);
  assert.equal(await page.locator('#sync-label').textContent(), 'Live');

  await context.setOffline(true);
  await page.locator('#sync[data-state="offline"]').waitFor();
  assert.equal(await page.locator('#sync-label').textContent(), 'Offline');
  await screenshot(page, 'offline');

  // Meanwhile another device adds a task.
  await server.api('/api/v1/tasks', { method: 'POST', token: user.token, body: { title: 'Added while offline' } });

  await context.setOffline(false);
  await page.locator('#sync[data-state="connected"]').waitFor({ timeout: 10_000 });
  await waitForTitles(page, ['Added while offline'], { timeout: 5000 });

  // A server restart: the indicator reconnects by itself and the list catches up.
  await server.halt();
  await page.locator('#sync[data-state="reconnecting"]').waitFor({ timeout: 10_000 });
  watch.allow(/Failed to load resource|ERR_CONNECTION_REFUSED|ERR_INCOMPLETE_CHUNKED_ENCODING/);
  await server.launch();
  await server.api('/api/v1/tasks', { method: 'POST', token: user.token, body: { title: 'Added during the restart' } });
  await page.locator('#sync[data-state="connected"]').waitFor({ timeout: 20_000 });
  await waitForTitles(page, ['Added during the restart', 'Added while offline'], { timeout: 5000 });
  await context.close();
});

test('an edit conflict asks the user: keep mine or take theirs', async () => {
  const user = await server.register('conflict');
  const { data: task } = await server.api('/api/v1/tasks', { method: 'POST', token: user.token, body: { title: 'Quarterly report', priority: 'low' } });
  const context = await freshContext();
  const page = await openPage(context, server.url, watch);
  // The browser logs the 412 answers this test provokes; they are the point of the test.
  watch.allow(/status of 412/);
  await signIn(page, user);
  await waitForTitles(page, ['Quarterly report']);
  const editor = page.locator('#editor');
  const conflict = page.locator('#conflict');

  // 1. Keep mine: my title wins, applied on top of their newer version (their priority stays).
  await page.getByRole('button', { name: 'Edit: Quarterly report' }).click();
  await editor.getByLabel('Title', { exact: true }).fill('Quarterly report (mine)');
  await server.api(`/api/v1/tasks/${task.id}`, { method: 'PATCH', token: user.token, body: { title: 'Quarterly report (theirs)', priority: 'urgent' } });
  await page.locator('#editor-notice', { hasText: 'changed elsewhere' }).waitFor();
  await editor.getByRole('button', { name: 'Save' }).click();
  await conflict.waitFor({ state: 'visible' });
  await conflict.locator('tr[data-field="title"]', { hasText: 'Quarterly report (theirs)' }).waitFor();
  assert.match(await conflict.locator('tr[data-field="title"]').textContent(), /Quarterly report \(mine\)/);
  await screenshot(page, 'conflict');
  await conflict.getByRole('button', { name: 'Keep mine' }).click();
  await editor.waitFor({ state: 'hidden' });
  await waitForTitles(page, ['Quarterly report (mine)']);
  let { data: stored } = await server.api(`/api/v1/tasks/${task.id}`, { token: user.token });
  assert.equal(stored.title, 'Quarterly report (mine)');
  assert.equal(stored.priority, 'urgent', 'their other change is kept');

  // 2. Take theirs: my edit is dropped, their version shows.
  await page.getByRole('button', { name: 'Edit: Quarterly report (mine)' }).click();
  await editor.getByLabel('Title', { exact: true }).fill('Quarterly report (mine again)');
  await server.api(`/api/v1/tasks/${task.id}`, { method: 'PATCH', token: user.token, body: { title: 'Quarterly report (final)' } });
  await page.locator('#editor-notice', { hasText: 'changed elsewhere' }).waitFor();
  await editor.getByRole('button', { name: 'Save' }).click();
  await conflict.waitFor({ state: 'visible' });
  await conflict.getByRole('button', { name: 'Take theirs' }).click();
  await editor.waitFor({ state: 'hidden' });
  await waitForTitles(page, ['Quarterly report (final)']);
  ({ data: stored } = await server.api(`/api/v1/tasks/${task.id}`, { token: user.token }));
  assert.equal(stored.title, 'Quarterly report (final)');

  // 3. Escape in the conflict dialog returns to the editor with the edit still there.
  await page.getByRole('button', { name: 'Edit: Quarterly report (final)' }).click();
  await editor.getByLabel('Title', { exact: true }).fill('Quarterly report (undecided)');
  await server.api(`/api/v1/tasks/${task.id}`, { method: 'PATCH', token: user.token, body: { description: 'changed elsewhere' } });
  await page.locator('#editor-notice', { hasText: 'changed elsewhere' }).waitFor();
  await editor.getByRole('button', { name: 'Save' }).click();
  await conflict.waitFor({ state: 'visible' });
  await page.keyboard.press('Escape');
  await conflict.waitFor({ state: 'hidden' });
  assert.equal(await editor.getByLabel('Title', { exact: true }).inputValue(), 'Quarterly report (undecided)');
  await editor.getByRole('button', { name: 'Cancel' }).click();
  await context.close();
});
