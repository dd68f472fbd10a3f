// Which reminder and notification features the UI shows. It reads them from the server's OpenAPI
// document, so that against an older server (without the reminders/notifications API) it hides
// them and never calls or sends them. The behaviour against the real API (reminders firing into
// the bell live, browser notifications, reading, snoozing) is tested in reminders.test.mjs.

import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';

import { ErrorWatch, launchBrowser, newContext, openPage, signIn, waitForTitles } from '../lib/browser.mjs';
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

test('this server offers notifications and reminders: the bell and the reminder editor are shown', async () => {
  const { data } = await server.api('/api/v1/openapi.json');
  assert.ok(data.paths['/api/v1/notifications'], 'the server describes the feed');
  assert.ok(data.components.schemas.CreateTaskRequest.properties.reminders, 'the server describes task reminders');
  const user = await server.register('plain');
  const context = await newContext(browser, ZONE);
  const page = await openPage(context, server.url, watch);
  await signIn(page, user);
  await waitForTitles(page, []);
  await page.locator('#bell').waitFor({ state: 'visible' });
  assert.equal(await page.locator('#bell-count').isVisible(), false, 'nothing unread yet');
  await page.getByRole('button', { name: 'New task' }).click();
  assert.equal(await page.locator('#e-reminders').isVisible(), true);
  await page.keyboard.press('Escape');
  await context.close();
});

test('against a server without them the bell and reminders stay hidden and are never called', async () => {
  const user = await server.register('older');
  const context = await newContext(browser, ZONE);
  // The server's description as an older server wrote it: no feed, no task reminders.
  await context.route('**/api/v1/openapi.json', async (route) => {
    const response = await route.fetch();
    const doc = await response.json();
    delete doc.paths['/api/v1/notifications'];
    delete doc.components.schemas.CreateTaskRequest.properties.reminders;
    await route.fulfill({ response, json: doc });
  });
  const page = await openPage(context, server.url, watch);
  const calls = [];
  page.on('request', (request) => {
    const { pathname } = new URL(request.url());
    if (pathname.startsWith('/api/v1/notifications') || pathname.startsWith('/api/v1/reminders')) calls.push(pathname);
  });
  await signIn(page, user);
  await waitForTitles(page, []);
  assert.equal(await page.locator('#bell').isVisible(), false);

  await page.getByRole('button', { name: 'New task' }).click();
  const editor = page.locator('#editor');
  assert.equal(await page.locator('#e-reminders').isVisible(), false);
  await editor.getByLabel('Title', { exact: true }).fill('No reminder');
  const [request] = await Promise.all([
    page.waitForRequest((r) => r.method() === 'POST' && new URL(r.url()).pathname === '/api/v1/tasks'),
    editor.getByRole('button', { name: 'Save' }).click(),
  ]);
  await editor.waitFor({ state: 'hidden' });
  await waitForTitles(page, ['No reminder']);
  assert.equal('reminders' in request.postDataJSON(), false, 'older servers refuse unknown fields');
  assert.deepEqual(calls, []);
  await context.close();
});
