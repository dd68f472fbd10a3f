// Reminders and notifications against the real server: the editor's reminder plan, reminders
// firing into the bell and the feed over the live stream, browser notifications, reading and
// snoozing. Nothing here is simulated: the scheduler and notifier of `taskflow serve` fire the
// reminders at their instants.

import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';

import {
  ErrorWatch, dateIn, launchBrowser, newContext, openPage, screenshot, signIn, waitForTitles, wallClock,
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

/** Polls `probe` (async) until it returns something truthy; fails after `timeout` ms. */
async function until(probe, what, { timeout = 8000, every = 100 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    last = await probe();
    if (last) return last;
    await new Promise((r) => setTimeout(r, every));
  }
  assert.fail(`${what} did not happen within ${timeout} ms (last: ${JSON.stringify(last)})`);
}

/** The user's feed as the API shows it. */
async function feed(user) {
  return (await server.api('/api/v1/notifications?limit=50', { token: user.token })).data;
}

/** Creates a task through the API with one reminder at `at` (in the 60 s grace it fires at once). */
async function taskRemindingAt(user, title, at) {
  const { data } = await server.api('/api/v1/tasks', {
    method: 'POST', token: user.token, body: { title, reminders: [{ at: at.toISOString() }] },
  });
  return data;
}

/** Browser notifications allowed, and every one the page raises recorded in `window.shownNotifications`. */
async function recordBrowserNotifications(context) {
  await context.grantPermissions(['notifications'], { origin: server.url });
  await context.addInitScript(() => {
    window.shownNotifications = [];
    const Real = window.Notification;
    class Recorded extends Real {
      constructor(title, options) {
        super(title, options);
        window.shownNotifications.push({ title, body: options?.body, tag: options?.tag });
      }
    }
    Object.defineProperty(window, 'Notification', { value: Recorded, configurable: true, writable: true });
  });
}

/** Signs `user` in on a fresh page and waits for the bell to be there. */
async function signedInPage(context, user) {
  const page = await openPage(context, server.url, watch);
  await signIn(page, user);
  await page.locator('#bell').waitFor({ state: 'visible' });
  return page;
}

test('the editor saves reminders before the due date and at a time, shows them again and clears them', async () => {
  const user = await server.register('plan');
  const context = await newContext(browser, ZONE);
  const page = await signedInPage(context, user);
  // What the page sends (observed, not intercepted).
  const patches = [];
  page.on('request', (request) => {
    if (request.method() === 'PATCH' && /\/api\/v1\/tasks\/[^/]+$/.test(new URL(request.url()).pathname)) {
      patches.push(request.postDataJSON());
    }
  });

  const dueDate = dateIn(ZONE, 3);
  const atDate = dateIn(ZONE, 2);
  await page.getByRole('button', { name: 'New task' }).click();
  const editor = page.locator('#editor');
  await editor.getByLabel('Title', { exact: true }).fill('Dentist');
  await editor.getByLabel('Date', { exact: true }).fill(dueDate);
  await editor.getByLabel('Time', { exact: true }).fill('10:00');
  await editor.getByRole('button', { name: '1 hour before' }).click();
  await editor.getByRole('button', { name: 'Custom reminder' }).click();
  await editor.getByLabel('Reminder 2 kind').selectOption('at');
  await editor.getByLabel('Reminder 2 time').fill(`${atDate}T20:00`);
  await editor.getByRole('button', { name: 'Save' }).click();
  await editor.waitFor({ state: 'hidden' });
  await waitForTitles(page, ['Dentist']);
  await page.locator('#tasks .task .badge.reminder', { hasText: '2' }).waitFor();

  // Stored as planned, and both scheduled.
  const { data: list } = await server.api('/api/v1/tasks', { token: user.token });
  const [task] = list.items;
  assert.equal(task.reminders.length, 2, JSON.stringify(task.reminders));
  assert.deepEqual(task.reminders[0], { before_due: 'PT1H' });
  assert.equal(wallClock(task.reminders[1].at, ZONE), `${atDate} 20:00`);
  assert.equal(wallClock(task.due_at, ZONE), `${dueDate} 10:00`);
  const { data: scheduled } = await server.api(`/api/v1/tasks/${task.id}/reminders`, { token: user.token });
  assert.deepEqual(scheduled.items.map((r) => r.state), ['scheduled', 'scheduled']);
  assert.deepEqual(scheduled.items.map((r) => wallClock(r.remind_at, ZONE)).sort(), [`${atDate} 20:00`, `${dueDate} 09:00`]);

  // The editor shows both again; a change elsewhere in the form leaves the plan alone.
  await page.getByRole('button', { name: 'Edit: Dentist' }).click();
  assert.equal(await editor.getByLabel('Reminder 1 kind').inputValue(), 'before');
  assert.equal(await editor.getByLabel('Reminder 1 amount').inputValue(), '1');
  assert.equal(await editor.getByLabel('Reminder 1 unit').inputValue(), 'H');
  assert.equal(await editor.getByLabel('Reminder 2 kind').inputValue(), 'at');
  assert.equal(await editor.getByLabel('Reminder 2 time').inputValue(), `${atDate}T20:00`);
  await screenshot(page, 'reminders-editor');
  await editor.getByLabel('Title', { exact: true }).fill('Dentist (Dr. Berg)');
  await editor.getByRole('button', { name: 'Save' }).click();
  await editor.waitFor({ state: 'hidden' });
  await waitForTitles(page, ['Dentist (Dr. Berg)']);
  assert.deepEqual(patches, [{ title: 'Dentist (Dr. Berg)' }]);

  // Removing every reminder sends an empty plan, and nothing stays scheduled.
  await page.getByRole('button', { name: 'Edit: Dentist (Dr. Berg)' }).click();
  await editor.getByRole('button', { name: 'Remove reminder 2' }).click();
  await editor.getByRole('button', { name: 'Remove reminder 1' }).click();
  assert.equal(await editor.locator('#reminder-list li').count(), 0);
  await editor.getByRole('button', { name: 'Save' }).click();
  await editor.waitFor({ state: 'hidden' });
  await page.locator('#tasks .task .badge.reminder').waitFor({ state: 'detached' });
  assert.deepEqual(patches[1], { reminders: [] });
  const { data: cleared } = await server.api(`/api/v1/tasks/${task.id}`, { token: user.token });
  assert.deepEqual(cleared.reminders, []);
  const { data: remaining } = await server.api(`/api/v1/tasks/${task.id}/reminders`, { token: user.token });
  assert.equal(remaining.items.filter((r) => r.state === 'scheduled').length, 0, JSON.stringify(remaining.items));
  await context.close();
});

test('a reminder reaches the bell, the feed and a browser notification live, without a reload', async () => {
  const user = await server.register('live');
  const context = await newContext(browser, ZONE);
  await recordBrowserNotifications(context);
  const page = await signedInPage(context, user);
  assert.equal(await page.locator('#bell-count').isVisible(), false);
  await page.evaluate(() => {
    window.sameDocument = true;
  });

  // From here on the entry must come over the live stream, not from fetching the feed again.
  const feedFetches = [];
  page.on('request', (request) => {
    if (new URL(request.url()).pathname === '/api/v1/notifications') feedFetches.push(request.url());
  });
  const task = await taskRemindingAt(user, 'Stand-up', new Date(Date.now() + 2000));
  await page.locator('#bell-count', { hasText: '1' }).waitFor({ timeout: 10_000 });
  assert.equal(await page.evaluate(() => window.sameDocument), true, 'no reload');
  assert.deepEqual(feedFetches, [], 'the feed was not fetched again');
  const { data: reminders } = await server.api(`/api/v1/tasks/${task.id}/reminders`, { token: user.token });
  assert.equal(reminders.items[0].state, 'sent');
  const { items: [entry] } = await feed(user);
  assert.equal(entry.title, 'Stand-up');
  assert.equal(entry.task_id, task.id);
  await page.waitForFunction(() => window.shownNotifications.length > 0);
  assert.deepEqual(await page.evaluate(() => window.shownNotifications), [{ title: 'Stand-up', body: entry.body, tag: entry.id }]);

  await page.getByRole('button', { name: 'Notifications, 1 unread' }).click();
  const item = page.locator('#feed .feed-item.unread');
  await item.waitFor();
  assert.equal(await page.locator('#feed .feed-item').count(), 1);
  assert.equal(await item.getAttribute('data-id'), entry.id);
  assert.match(await item.textContent(), /Stand-up/);
  await screenshot(page, 'reminders-live');
  await context.close();
});

test('marking read and marking all read last across a reload', async () => {
  const user = await server.register('read');
  const now = new Date();
  for (const title of ['Water the plants', 'Pay rent', 'Call mom']) await taskRemindingAt(user, title, now);
  await until(async () => (await feed(user)).unread === 3, 'three reminders in the feed');

  const context = await newContext(browser, ZONE);
  const page = await signedInPage(context, user);
  await page.locator('#bell-count', { hasText: '3' }).waitFor();
  await page.getByRole('button', { name: 'Notifications, 3 unread' }).click();
  await page.locator('#feed .feed-item', { hasText: 'Pay rent' }).click();
  await page.locator('#bell-count', { hasText: '2' }).waitFor();
  assert.equal((await feed(user)).unread, 2);

  await page.reload();
  await page.locator('#sync[data-state="connected"]').waitFor();
  await page.locator('#bell-count', { hasText: '2' }).waitFor();
  await page.getByRole('button', { name: 'Notifications, 2 unread' }).click();
  await page.locator('#feed .feed-item').nth(2).waitFor();
  assert.equal(await page.locator('#feed .feed-item.unread', { hasText: 'Pay rent' }).count(), 0);
  assert.equal(await page.locator('#feed .feed-item.unread').count(), 2);

  await page.getByRole('button', { name: 'Mark all as read' }).click();
  await page.locator('#bell-count').waitFor({ state: 'hidden' });
  await page.locator('#feed .feed-item.unread').first().waitFor({ state: 'detached' });
  assert.equal((await feed(user)).unread, 0);

  await page.reload();
  await page.locator('#sync[data-state="connected"]').waitFor();
  await page.locator('#bell').waitFor({ state: 'visible' });
  await page.getByRole('button', { name: 'Notifications', exact: true }).click();
  await page.locator('#feed .feed-item').nth(2).waitFor();
  assert.equal(await page.locator('#feed .feed-item.unread').count(), 0);
  assert.equal(await page.locator('#bell-count').isVisible(), false);
  await context.close();
});

test('snoozing a reminder notification schedules the reminder again in 10 minutes', async () => {
  const user = await server.register('snooze');
  const task = await taskRemindingAt(user, 'Stretch', new Date());
  const { items: [entry] } = await until(async () => {
    const page = await feed(user);
    return page.items.length === 1 && page;
  }, 'the reminder in the feed');
  assert.equal(entry.kind, 'reminder');
  const { data: fired } = await server.api(`/api/v1/tasks/${task.id}/reminders`, { token: user.token });
  assert.equal(fired.items[0].state, 'sent');

  const context = await newContext(browser, ZONE);
  const page = await signedInPage(context, user);
  await page.getByRole('button', { name: 'Notifications, 1 unread' }).click();
  const snoozedAt = Date.now();
  await page.getByRole('button', { name: 'Snooze “Stretch” for 10 minutes' }).click();
  await page.locator('#bell-count').waitFor({ state: 'hidden' });

  const { data: snoozed } = await server.api(`/api/v1/tasks/${task.id}/reminders`, { token: user.token });
  const [reminder] = snoozed.items;
  assert.equal(reminder.id, entry.reminder_id);
  assert.equal(reminder.state, 'scheduled');
  const inMinutes = (Date.parse(reminder.fire_at) - snoozedAt) / 60_000;
  assert.ok(inMinutes > 9.5 && inMinutes < 10.5, `fires again in ${inMinutes} minutes`);
  assert.equal((await feed(user)).unread, 0, 'the snoozed notification counts as read');
  await context.close();
});
