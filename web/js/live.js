// Live updates over Server-Sent Events.
//
// Browsers cannot put an Authorization header on an EventSource, so each connection first asks
// for a single-use stream ticket. The browser's own reconnection would reuse a spent ticket, so
// on any error we close the stream and reconnect ourselves with a new ticket, resuming after the
// last `seq` received (missed updates are replayed). When the server answers `resync` (we were
// away too long) or when we never had a position, the caller reloads its state instead.

import { api } from './api.js';

/** States shown by the sync indicator. */
export const SyncState = Object.freeze({
  CONNECTING: 'connecting',
  CONNECTED: 'connected',
  RECONNECTING: 'reconnecting',
  OFFLINE: 'offline',
});

/** One live connection for the signed-in user. */
export class LiveSync {
  /**
   * @param {object} handlers
   * @param {(type: string, data: object) => void} handlers.onUpdate  a `task.changed` or `notification.created`
   * @param {() => void} handlers.onResync  reload everything: updates may have been missed
   * @param {(state: string) => void} handlers.onState  the connection state changed
   */
  constructor({ onUpdate, onResync, onState }) {
    this.onUpdate = onUpdate;
    this.onResync = onResync;
    this.onState = onState;
    this.source = null;
    this.lastSeq = null;
    this.failures = 0;
    this.retryTimer = null;
    this.running = false;
    this.state = null;
    this.generation = 0;
    this.handleOnline = () => this.reconnectNow();
    this.handleOffline = () => this.goOffline();
  }

  /** Opens the stream and keeps it open until `stop()`. */
  start() {
    if (this.running) return;
    this.running = true;
    window.addEventListener('online', this.handleOnline);
    window.addEventListener('offline', this.handleOffline);
    this.connect();
  }

  /** Closes the stream for good (sign-out). */
  stop() {
    this.running = false;
    window.removeEventListener('online', this.handleOnline);
    window.removeEventListener('offline', this.handleOffline);
    this.close();
    this.lastSeq = null;
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.onState(state);
  }

  close() {
    this.generation += 1;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.source) {
      this.source.close();
      this.source = null;
    }
  }

  goOffline() {
    this.close();
    if (this.running) this.setState(SyncState.OFFLINE);
  }

  reconnectNow() {
    if (!this.running) return;
    this.close();
    this.failures = 0;
    this.connect();
  }

  async connect() {
    if (!this.running) return;
    if (!navigator.onLine) {
      this.setState(SyncState.OFFLINE);
      return;
    }
    const generation = ++this.generation;
    this.setState(this.lastSeq === null && this.failures === 0 && this.state !== SyncState.OFFLINE
      ? SyncState.CONNECTING
      : SyncState.RECONNECTING);
    let ticket;
    try {
      ({ data: { ticket } } = await api('/api/v1/stream/tickets', { method: 'POST' }));
    } catch (error) {
      if (generation !== this.generation) return;
      console.debug('stream ticket refused', error);
      if (error.status === 401) return; // signed out by the API client
      this.retryLater();
      return;
    }
    if (generation !== this.generation || !this.running) return;
    const params = new URLSearchParams({ ticket });
    if (this.lastSeq !== null) params.set('resume_from', String(this.lastSeq));
    const source = new EventSource(`/api/v1/stream?${params}`);
    this.source = source;
    const hadPosition = this.lastSeq !== null;
    source.onopen = () => {
      if (generation !== this.generation) return;
      this.failures = 0;
      this.setState(SyncState.CONNECTED);
      // Without a position, changes made before the stream opened may be missing: reload.
      if (!hadPosition) this.onResync();
    };
    source.onerror = () => {
      if (generation !== this.generation) return;
      source.close();
      this.source = null;
      this.retryLater();
    };
    const track = (event) => {
      const seq = Number(event.lastEventId);
      if (Number.isFinite(seq) && event.lastEventId !== '') this.lastSeq = seq;
    };
    for (const type of ['task.changed', 'notification.created']) {
      source.addEventListener(type, (event) => {
        if (generation !== this.generation) return;
        track(event);
        let data;
        try {
          data = JSON.parse(event.data);
        } catch {
          return;
        }
        this.onUpdate(type, data);
      });
    }
    source.addEventListener('resync', (event) => {
      if (generation !== this.generation) return;
      try {
        const data = JSON.parse(event.data);
        if (typeof data.seq === 'number') this.lastSeq = data.seq;
      } catch {
        // keep the old position
      }
      this.onResync();
    });
  }

  retryLater() {
    if (!this.running) return;
    this.failures += 1;
    if (!navigator.onLine) {
      this.setState(SyncState.OFFLINE);
      return;
    }
    this.setState(SyncState.RECONNECTING);
    const base = Math.min(15000, 250 * 2 ** Math.min(this.failures, 8));
    const delay = base / 2 + Math.random() * (base / 2);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }
}
