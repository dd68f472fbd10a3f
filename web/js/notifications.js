// The bell: the in-app notification feed with its unread count, and browser notifications for
// reminders when the user allowed them. Hidden entirely when the server has no notifications API.

import { api, query, serverCapabilities } from './api.js';
import { byId, h, openDialog, toast } from './dom.js';

/** The notification bell and feed. */
export class NotificationBell {
  constructor() {
    this.bell = byId('bell');
    this.count = byId('bell-count');
    this.dialog = byId('feed');
    this.list = byId('feed-list');
    this.empty = byId('feed-empty');
    this.more = byId('feed-more');
    this.permission = byId('feed-permission');
    this.items = [];
    this.unread = 0;
    this.nextCursor = null;
    this.enabled = false;

    this.bell.addEventListener('click', () => this.open());
    byId('feed-close').addEventListener('click', () => this.dialog.close());
    byId('feed-read-all').addEventListener('click', () => this.readAll());
    this.more.addEventListener('click', () => this.load(this.nextCursor));
    this.permission.addEventListener('click', async () => {
      await Notification.requestPermission();
      this.updatePermissionButton();
    });
  }

  /** Loads the feed after sign-in; hides the bell when the server has no notifications. */
  async start() {
    // Frames may arrive while the feed loads: keep them, the load merges them in.
    this.enabled = true;
    const caps = await serverCapabilities();
    if (!caps.notifications) {
      this.hide();
      return;
    }
    try {
      await this.load(null);
      this.bell.hidden = false;
    } catch (error) {
      console.debug('notifications unavailable', error);
      this.hide();
    }
  }

  hide() {
    this.enabled = false;
    this.bell.hidden = true;
  }

  /** Forgets everything (sign-out). */
  stop() {
    this.hide();
    this.items = [];
    this.unread = 0;
    this.list.replaceChildren();
  }

  async load(cursor) {
    const { data } = await api(`/api/v1/notifications${query({ limit: 20, cursor })}`);
    const known = new Set(data.items.map((item) => item.id));
    if (cursor) {
      this.items = [...this.items, ...data.items.filter((item) => !this.items.some((i) => i.id === item.id))];
      this.unread = data.unread;
    } else {
      // Live frames that arrived during the load and are not in it yet stay on top (older
      // pages loaded before are not kept: "Older notifications" fetches them again).
      const oldest = data.next_cursor && data.items.length ? Date.parse(data.items.at(-1).created_at) : -Infinity;
      const live = this.items.filter((item) => !known.has(item.id) && Date.parse(item.created_at) > oldest);
      this.items = [...live, ...data.items];
      this.unread = data.unread + live.filter((item) => !item.read_at).length;
    }
    this.nextCursor = data.next_cursor;
    this.render();
  }

  render() {
    this.count.textContent = String(this.unread);
    this.count.hidden = this.unread === 0;
    this.bell.setAttribute('aria-label', this.unread ? `Notifications, ${this.unread} unread` : 'Notifications');
    this.list.replaceChildren(...this.items.map((item) => h('li', { class: 'feed-entry' },
      h('button', {
        type: 'button',
        class: item.read_at ? 'feed-item' : 'feed-item unread',
        dataset: { id: item.id },
        onclick: () => this.markRead(item),
      },
      item.title,
      item.body ? h('small', {}, item.body) : null,
      h('small', {}, new Date(item.created_at).toLocaleString())),
      item.kind === 'reminder' && item.reminder_id
        ? h('button', {
          type: 'button',
          class: 'secondary small snooze',
          'aria-label': `Snooze “${item.title}” for 10 minutes`,
          onclick: (event) => this.snooze(item, event.currentTarget),
        }, 'Snooze 10 min')
        : null)));
    this.empty.hidden = this.items.length > 0;
    this.more.hidden = !this.nextCursor;
  }

  updatePermissionButton() {
    this.permission.hidden = !('Notification' in window) || Notification.permission !== 'default';
  }

  open() {
    this.updatePermissionButton();
    openDialog(this.dialog);
  }

  async markRead(item) {
    if (item.read_at) return;
    try {
      await api(`/api/v1/notifications/${item.id}/read`, { method: 'POST' });
      item.read_at = new Date().toISOString();
      this.unread = Math.max(0, this.unread - 1);
      this.render();
    } catch (error) {
      toast(error.message, { error: true });
    }
  }

  async readAll() {
    try {
      await api('/api/v1/notifications/read-all', { method: 'POST' });
      const now = new Date().toISOString();
      for (const item of this.items) item.read_at ||= now;
      this.unread = 0;
      this.render();
    } catch (error) {
      toast(error.message, { error: true });
    }
  }

  /** Reminds again in 10 minutes (and counts the entry as read: the user dealt with it). */
  async snooze(item, button) {
    button.disabled = true;
    try {
      await api(`/api/v1/reminders/${item.reminder_id}/snooze`, { method: 'POST', body: { for: 'PT10M' } });
      toast(`Snoozed: “${item.title}” reminds you again in 10 minutes.`);
      await this.markRead(item);
    } catch (error) {
      toast(error.status === 409 ? 'This task is no longer open; nothing to snooze.' : error.message, { error: true });
    } finally {
      button.disabled = false;
    }
  }

  /** Reloads the first page (the live stream may have missed notifications). */
  refresh() {
    if (!this.enabled || this.bell.hidden) return;
    this.load(null).catch((error) => console.debug('notifications not reloaded', error));
  }

  /** A `notification.created` frame from the live stream. */
  received(notification) {
    if (!this.enabled || !notification?.id) return;
    if (this.items.some((n) => n.id === notification.id)) return;
    this.items.unshift(notification);
    if (!notification.read_at) this.unread += 1;
    this.render();
    if ('Notification' in window && Notification.permission === 'granted') {
      try {
        const shown = new Notification(notification.title, { body: notification.body || '', tag: notification.id });
        shown.onclick = () => {
          window.focus();
          this.open();
        };
      } catch (error) {
        console.debug('browser notification not shown', error);
      }
    }
    if (document.visibilityState === 'visible') toast(`🔔 ${notification.title}`);
  }
}
