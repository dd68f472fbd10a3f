// Who is signed in. The access token lives in memory and in sessionStorage (this tab only, gone
// when the tab closes), never in localStorage or a cookie.

import { api, setToken } from './api.js';
import { browserZone } from './format.js';

const KEY = 'taskflow.session';

let current = null;

/** The session restored from this tab's storage, if any: `{token, expiresAt}`. */
export function restore() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(KEY) || 'null');
    if (saved && saved.token && saved.expiresAt > Date.now()) {
      current = saved;
      setToken(saved.token);
      return saved;
    }
  } catch {
    // A damaged entry is the same as none.
  }
  sessionStorage.removeItem(KEY);
  return null;
}

function keep(accessToken, expiresIn) {
  current = { token: accessToken, expiresAt: Date.now() + expiresIn * 1000 };
  setToken(accessToken);
  sessionStorage.setItem(KEY, JSON.stringify(current));
}

/** Signs in with e-mail and password. */
export async function signIn(email, password) {
  const { data } = await api('/api/v1/auth/login', { method: 'POST', body: { email, password }, auth: false });
  keep(data.access_token, data.expires_in);
}

/** Creates an account (with the browser's time zone) and signs in with it. */
export async function signUp(email, password, displayName) {
  const body = { email, password, time_zone: browserZone() };
  if (displayName) body.display_name = displayName;
  const { data } = await api('/api/v1/auth/register', { method: 'POST', body, auth: false });
  keep(data.access_token, data.expires_in);
}

/** Forgets the token. */
export function signOut() {
  current = null;
  setToken(null);
  sessionStorage.removeItem(KEY);
}

/** Whether a token is held. */
export function signedIn() {
  return current !== null;
}

/** Milliseconds until the token expires (0 when signed out). */
export function expiresInMs() {
  return current ? Math.max(0, current.expiresAt - Date.now()) : 0;
}
