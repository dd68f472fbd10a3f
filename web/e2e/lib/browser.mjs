// Headless Chromium (Debian's, not a downloaded build) through playwright-core, plus helpers
// shared by the tests: console-error collection, waiting for list contents, screenshots.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

import { artifactsDir } from './server.mjs';

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

/** Launches a fresh headless browser (a new temporary profile each time). */
export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run'],
  });
}

/** A fresh browser context (own storage) in `zone`; actions and waits give up after 10 s. */
export async function newContext(browser, zone, options = {}) {
  const context = await browser.newContext({ timezoneId: zone, locale: 'en-GB', ...options });
  context.setDefaultTimeout(10_000);
  return context;
}

/**
 * Collects console errors and uncaught page errors of every page opened through it; `check()`
 * fails the test on any that no `allow` pattern matches.
 */
export class ErrorWatch {
  constructor() {
    this.errors = [];
    this.allowed = [];
  }

  watch(page) {
    page.on('console', (message) => {
      if (message.type() === 'error') this.errors.push(`console: ${message.text()} (${message.location().url || page.url()})`);
    });
    page.on('pageerror', (error) => this.errors.push(`pageerror: ${error.message}`));
    return page;
  }

  /** Tolerates errors matching `pattern` (e.g. the browser logging an expected 412 response). */
  allow(pattern) {
    this.allowed.push(pattern);
  }

  check() {
    const unexpected = this.errors.filter((e) => !this.allowed.some((p) => p.test(e)));
    this.errors = [];
    this.allowed = [];
    assert.deepEqual(unexpected, [], 'the pages logged errors');
  }
}

/** Opens a page in `context` at `url`, watched by `watch`. */
export async function openPage(context, url, watch) {
  const page = watch.watch(await context.newPage());
  await page.goto(url);
  return page;
}

/** Signs in through the form. */
export async function signIn(page, { email, password }) {
  await page.getByLabel('E-mail').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.locator('#workspace').waitFor({ state: 'visible' });
  await page.locator('#sync[data-state="connected"]').waitFor();
}

/** Titles of the tasks on screen, in order. */
export function titles(page) {
  return page.$$eval('#tasks .task-title', (nodes) => nodes.map((n) => n.textContent));
}

/** Waits until the list shows exactly `expected` titles, in this order. */
export async function waitForTitles(page, expected, { timeout = 5000 } = {}) {
  try {
    await page.waitForFunction(
      (want) => {
        const got = [...document.querySelectorAll('#tasks .task-title')].map((n) => n.textContent);
        return JSON.stringify(got) === JSON.stringify(want);
      },
      expected,
      { timeout },
    );
  } catch (error) {
    assert.deepEqual(await titles(page), expected, `list never showed ${JSON.stringify(expected)}: ${error.message}`);
  }
}

/** Waits until the list shows exactly tasks with these statuses ("pending"/"completed"), in order. */
export async function waitForStatuses(page, expected, { timeout = 5000 } = {}) {
  await page.waitForFunction(
    (want) => JSON.stringify([...document.querySelectorAll('#tasks .task')].map((n) => n.dataset.status)) === JSON.stringify(want),
    expected,
    { timeout },
  );
}

/** Saves a screenshot of the page under the artifacts folder. */
export async function screenshot(page, name) {
  const dir = artifactsDir();
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: join(dir, `${name}.png`), fullPage: true });
}

/** The wall-clock date and time of `iso` in `zone`: "2026-12-01 09:00". */
export function wallClock(iso, zone) {
  const parts = Object.fromEntries(new Intl.DateTimeFormat('en-CA', {
    timeZone: zone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit',
  }).formatToParts(new Date(iso)).map((p) => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}`;
}

/** The calendar date `days` after today in `zone`, "YYYY-MM-DD". */
export function dateIn(zone, days) {
  return wallClock(new Date(Date.now() + days * 86_400_000).toISOString(), zone).slice(0, 10);
}
