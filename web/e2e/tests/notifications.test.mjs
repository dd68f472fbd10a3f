// Reminders and the notification bell. The reminders/notifications API is being built on main;
// until it lands here these tests play its agreed contract at the network layer (the browser's
// requests to those endpoints are answered by the test), so they check the UI's side of the
// contract only. Tests against the real endpoints belong beside them once the API is merged.

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

/** Whether the server under test already offers notifications and task reminders. */
async function serverOffers() {
  const { data } = await server.api('/api/v1/openapi.json');
  return {
    notifications: Boolean(data.paths['/api/v1/notifications']),
    reminders: Boolean(data.components.schemas.CreateTaskRequest.properties.reminders),
  };
}

test('features the server does not offer stay hidden, without errors', async () => {
  const offers = await serverOffers();
  const user = await server.register('plain');
  const context = await newContext(browser, ZONE);
  const page = await openPage(context, server.url, watch);
  await signIn(page, user);
  await waitForTitles(page, []);
  assert.equal(await page.locator('#bell').isVisible(), offers.notifications);
  await page.getByRole('button', { name: 'New task' }).click();
  assert.equal(await page.locator('#e-reminders').isVisible(), offers.reminders);
  await page.keyboard.press('Escape');
  await context.close();
});

test('the bell shows the feed and unread count; the editor sends reminders', async () => {
  const user = await server.register('bell');
  const context = await newContext(browser, ZONE);
  // The server's description, extended by the agreed contract.
  await context.route('**/api/v1/openapi.json', async (route) => {
    const response = await route.fetch();
    const doc = await response.json();
    doc.paths['/api/v1/notifications'] ??= { get: {} };
    doc.components.schemas.CreateTaskRequest.properties.reminders ??= { type: 'array' };
    await route.fulfill({ response, json: doc });
  });
  const now = new Date().toISOString();
  await context.route(/\/api\/v1\/notifications(\?.*)?$/, (route) => route.fulfill({
    json: {
      items: [
        { id: 'n1', kind: 'reminder', title: 'Pay rent', body: 'Due in 1 hour', task_id: 't1', created_at: now, read_at: null },
        { id: 'n2', kind: 'reminder', title: 'Call mom', body: 'Due tomorrow', task_id: 't2', created_at: now, read_at: null },
      ],
      next_cursor: null,
      unread: 2,
    },
  }));
  const marked = [];
  await context.route(/\/api\/v1\/notifications\/(n\d\/read|read-all)$/, (route) => {
    marked.push(new URL(route.request().url()).pathname);
    return route.fulfill({ status: 204 });
  });
  // The first stream carries a live notification (then ends; the page reconnects to the real one).
  let streamed = false;
  await context.route(/\/api\/v1\/stream\?/, (route) => {
    if (streamed) return route.fallback();
    streamed = true;
    const frame = { id: 'n3', kind: 'reminder', title: 'Stand-up in 10 minutes', body: 'Room 4', task_id: 't3', created_at: now, read_at: null };
    return route.fulfill({
      status: 200,
      headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' },
      body: `id: 7\nevent: notification.created\ndata: ${JSON.stringify(frame)}\n\n`,
    });
  });
  // Browser notifications are allowed; record what the page shows.
  await context.grantPermissions(['notifications'], { origin: server.url });
  await context.addInitScript(() => {
    window.shownNotifications = [];
    const Real = window.Notification;
    class Recorded extends Real {
      constructor(title, options) {
        super(title, options);
        window.shownNotifications.push({ title, body: options?.body });
      }
    }
    Object.defineProperty(window, 'Notification', { value: Recorded });
  });
  // Task creation: record the body, let the real server store the rest.
  let sent = null;
  await context.route('**/api/v1/tasks', async (route) => {
    if (route.request().method() !== 'POST') return route.fallback();
    sent = route.request().postDataJSON();
    const { reminders, ...rest } = sent;
    const response = await route.fetch({ postData: JSON.stringify(rest) });
    return route.fulfill({ response, json: { ...(await response.json()), reminders } });
  });

  const page = await openPage(context, server.url, watch);
  await page.getByLabel('E-mail').fill(user.email);
  await page.getByLabel('Password').fill(user.password);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  // Two from the feed, one live (shown as a browser notification too); the stream reconnects.
  await page.locator('#bell-count', { hasText: '3' }).waitFor();
  await page.locator('#sync[data-state="connected"]').waitFor();
  assert.deepEqual(await page.evaluate(() => window.shownNotifications), [{ title: 'Stand-up in 10 minutes', body: 'Room 4' }]);
  await page.getByRole('button', { name: 'Notifications, 3 unread' }).click();
  await page.locator('#feed .feed-item.unread').nth(2).waitFor();
  assert.match(await page.locator('#feed .feed-item').first().textContent(), /Stand-up in 10 minutes/);
  await screenshot(page, 'notifications');
  await page.locator('#feed .feed-item', { hasText: 'Pay rent' }).click();
  await page.locator('#bell-count', { hasText: '2' }).waitFor();
  await page.getByRole('button', { name: 'Mark all as read' }).click();
  await page.locator('#bell-count').waitFor({ state: 'hidden' });
  assert.deepEqual(marked, ['/api/v1/notifications/n1/read', '/api/v1/notifications/read-all']);
  await page.keyboard.press('Escape');
  await page.locator('#feed').waitFor({ state: 'hidden' });

  await page.getByRole('button', { name: 'New task' }).click();
  const editor = page.locator('#editor');
  await editor.getByLabel('Title', { exact: true }).fill('Dentist');
  await editor.getByLabel('Date', { exact: true }).fill('2026-12-03');
  await editor.getByLabel('Time', { exact: true }).fill('10:00');
  await editor.getByRole('button', { name: '1 day before' }).click();
  await editor.getByRole('button', { name: 'Custom reminder' }).click();
  await editor.getByLabel('Reminder 2 kind').selectOption('at');
  await editor.getByLabel('Reminder 2 time').fill('2026-12-02T20:00');
  await editor.getByRole('button', { name: 'Save' }).click();
  await editor.waitFor({ state: 'hidden' });
  assert.deepEqual(sent.reminders, [{ before_due: 'P1D' }, { at: '2026-12-02T19:00:00.000Z' }]);
  await waitForTitles(page, ['Dentist']);

  // A task without reminders never sends the field (older servers refuse unknown fields).
  await page.getByRole('button', { name: 'New task' }).click();
  await editor.getByLabel('Title', { exact: true }).fill('No reminder');
  await editor.getByRole('button', { name: 'Save' }).click();
  await editor.waitFor({ state: 'hidden' });
  assert.equal('reminders' in sent, false);
  await context.close();
});
