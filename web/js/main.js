// Starts the UI: sign-in, the task list, the editor, live sync and notifications.

import { ApiError, api, whenUnauthorized } from './api.js';
import { byId, openDialog, setMessage, toast } from './dom.js';
import { TaskEditor } from './editor.js';
import { LiveSync, SyncState } from './live.js';
import { NotificationBell } from './notifications.js';
import * as session from './session.js';
import { TaskList } from './tasks.js';

const SYNC_LABELS = {
  [SyncState.CONNECTING]: 'Connecting…',
  [SyncState.CONNECTED]: 'Live',
  [SyncState.RECONNECTING]: 'Reconnecting…',
  [SyncState.OFFLINE]: 'Offline',
};

/** Asks a yes/no question in the confirm dialog. */
function confirmAction(message) {
  const dialog = byId('confirm');
  byId('confirm-text').textContent = message;
  return new Promise((resolve) => {
    const yes = byId('confirm-yes');
    const no = byId('confirm-no');
    const finish = (answer) => {
      yes.removeEventListener('click', onYes);
      no.removeEventListener('click', onNo);
      dialog.removeEventListener('close', onClose);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const onYes = () => finish(true);
    const onNo = () => finish(false);
    const onClose = () => finish(false);
    yes.addEventListener('click', onYes);
    no.addEventListener('click', onNo);
    dialog.addEventListener('close', onClose);
    openDialog(dialog);
    no.focus();
  });
}

const tasks = new TaskList({ edit: (task) => editor.openEdit(task), confirm: confirmAction });
const editor = new TaskEditor((task) => tasks.apply(task));
const bell = new NotificationBell();
const live = new LiveSync({
  onUpdate(type, data) {
    if (type === 'task.changed') {
      tasks.changed(data);
      if (data.task) editor.changedElsewhere(data.task);
    } else if (type === 'notification.created') {
      bell.received(data.notification || data);
    }
  },
  onResync() {
    tasks.reload();
    bell.refresh();
  },
  onState(state) {
    const indicator = byId('sync');
    indicator.dataset.state = state;
    byId('sync-label').textContent = SYNC_LABELS[state] || state;
    indicator.title = state === SyncState.CONNECTED
      ? 'Changes from your other tabs and devices appear here as they happen.'
      : 'Changes made elsewhere will appear once the connection is back.';
  },
});

let expiryTimer = null;

async function enter() {
  byId('auth').hidden = true;
  byId('workspace').hidden = false;
  byId('top-actions').hidden = false;
  clearTimeout(expiryTimer);
  expiryTimer = setTimeout(() => leave('Your session has expired; please sign in again.'), Math.min(session.expiresInMs(), 2 ** 31 - 1));
  try {
    const { data: me } = await api('/api/v1/me');
    byId('who').textContent = me.display_name || me.email;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return;
    console.debug('account not loaded', error);
  }
  tasks.activate();
  live.start();
  tasks.reload();
  bell.start();
}

function leave(message) {
  clearTimeout(expiryTimer);
  live.stop();
  bell.stop();
  tasks.clear();
  session.signOut();
  for (const dialog of document.querySelectorAll('dialog[open]')) dialog.close();
  byId('workspace').hidden = true;
  byId('top-actions').hidden = true;
  byId('auth').hidden = false;
  setAuthMode(false);
  setMessage(byId('auth-error'), message || '');
  byId('auth-email').focus();
}

// Sign in / create an account ---------------------------------------------------------------

let creating = false;

function setAuthMode(create) {
  creating = create;
  byId('auth-title').textContent = create ? 'Create an account' : 'Sign in';
  byId('auth-submit').textContent = create ? 'Create account' : 'Sign in';
  byId('auth-switch').textContent = create ? 'I have an account' : 'Create an account';
  byId('auth-name-field').hidden = !create;
  byId('auth-password').autocomplete = create ? 'new-password' : 'current-password';
  setMessage(byId('auth-error'), '');
}

byId('auth-switch').addEventListener('click', () => setAuthMode(!creating));
byId('auth-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const email = byId('auth-email').value.trim();
  const password = byId('auth-password').value;
  const error = byId('auth-error');
  if (!email || !password) {
    setMessage(error, 'Enter your e-mail address and password.');
    return;
  }
  const submit = byId('auth-submit');
  submit.disabled = true;
  try {
    if (creating) {
      await session.signUp(email, password, byId('auth-name').value.trim());
    } else {
      await session.signIn(email, password);
    }
    byId('auth-password').value = '';
    setMessage(error, '');
    await enter();
  } catch (failure) {
    if (failure instanceof ApiError) {
      const text = failure.status === 401 ? 'Wrong e-mail address or password.' : failure.message;
      setMessage(error, text);
    } else {
      setMessage(error, 'Could not reach the server; check your connection.');
    }
  } finally {
    submit.disabled = false;
  }
});

byId('sign-out').addEventListener('click', () => leave(''));
byId('new-task').addEventListener('click', () => editor.openNew());
whenUnauthorized(() => leave('Your session has expired; please sign in again.'));

// "n" opens a new task when no field has focus.
document.addEventListener('keydown', (event) => {
  if (event.key !== 'n' || event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement) return;
  if (document.querySelector('dialog[open]') || byId('workspace').hidden) return;
  event.preventDefault();
  editor.openNew();
});

window.addEventListener('unhandledrejection', (event) => {
  // Report failures to the user instead of leaving them in the console.
  event.preventDefault();
  const reason = event.reason;
  console.debug('unhandled', reason);
  toast(reason instanceof ApiError ? reason.message : 'Something went wrong; please try again.', { error: true });
});

if (session.restore()) {
  enter();
} else {
  leave('');
}
