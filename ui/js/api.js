// api.js: the console's session and its calls to quarry. The page is served by quarry itself, so
// every call goes to the page's own origin (relative paths, no CORS). The bearer token lives in
// sessionStorage (this tab only, gone when it closes; never localStorage, never a cookie) so that a
// reload or the OpenID Connect redirect does not sign the user out.

import { QuarryError, describeError } from './chat-core.js';

const KEY = 'quarry.session';
let current = null;
let onUnauthorized = () => {};

/** The session: {token, expiresAt (Unix s or 0), via ('password' | 'oidc')}, or null. */
export function getSession() {
  if (current) return current;
  try {
    const raw = sessionStorage.getItem(KEY);
    const s = raw ? JSON.parse(raw) : null;
    if (s && typeof s.token === 'string' && (!s.expiresAt || s.expiresAt * 1000 > Date.now())) current = s;
  } catch {
    current = null;
  }
  return current;
}

export function setSession(s) {
  current = s;
  try {
    sessionStorage.setItem(KEY, JSON.stringify(s));
  } catch {
    /* storage refused (a sandboxed frame): the session lives in memory only */
  }
}

export function clearSession() {
  current = null;
  try {
    sessionStorage.removeItem(KEY);
  } catch {
    /* nothing stored */
  }
}

/** Called (with the QuarryError) when quarry answers 401 to a signed-in call: the session is over. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

/**
 * fetch without credentials: quarry answers every 401 with a Basic challenge, and for a request
 * that may carry credentials the browser would answer it with its own login dialog (and the
 * request would hang until someone closed it). The console sends bearer tokens, never cookies.
 */
export function plainFetch(url, init = {}) {
  return fetch(url, { ...init, credentials: 'omit' });
}

/** A call made elsewhere (the chat stream) was answered 401: the session is over. */
export function sessionExpired(err) {
  if (getSession()) onUnauthorized(err);
}

/** A sentence for an error of a route other than chat (describeError speaks of questions). */
function describe(status, body, retryAfter, what) {
  if (status === 401) return 'Your session has expired or was revoked. Sign in again.';
  if (status === 403) return `You may not ${what} (quarry refused: ${body?.error?.message || 'permission denied'}).`;
  if (status === 400 || status === 404 || status === 409 || status === 413 || status === 415)
    return `quarry refused: ${body?.error?.message || `HTTP ${status}`}.`;
  return describeError(status, body, retryAfter);
}

/**
 * Calls quarry. opts: method, json (a body sent as JSON), form (a FormData), signal, what (the
 * action named in a 403 sentence), auth (false for the token route). Resolves to the parsed JSON
 * body ({} for an empty one); rejects with a QuarryError whose message a user can read.
 */
export async function api(path, { method = 'GET', json, form, signal, what = 'do this', auth = true } = {}) {
  const headers = { Accept: 'application/json' };
  const s = getSession();
  if (auth && s) headers.Authorization = `Bearer ${s.token}`;
  let body;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (form) {
    body = form; // the browser writes the multipart boundary
  }
  let res;
  try {
    res = await fetch(path, { method, headers, body, signal, cache: 'no-store', credentials: 'omit' });
  } catch (e) {
    if (e?.name === 'AbortError') throw e;
    throw new QuarryError('quarry could not be reached. Check the network connection and try again.', {
      status: 0,
      code: 'network',
    });
  }
  let data = null;
  const text = await res.text();
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = null;
  }
  if (!res.ok) {
    const retryAfter = res.headers.get('Retry-After');
    const err = new QuarryError(describe(res.status, data, retryAfter, what), {
      status: res.status,
      code: data?.error?.code || '',
      retryAfter,
      requestId: res.headers.get('X-Request-Id'),
    });
    if (res.status === 401 && auth && s) onUnauthorized(err);
    throw err;
  }
  return data ?? {};
}

/** A sentence for a failed sign-in (401 is the credentials here, not an expired session). */
export function describeSignInError(e) {
  if (e?.status === 401) return 'Wrong user name or password.';
  if (e?.status === 429)
    return `Too many failed sign-ins. Wait${e.retryAfter ? ` ${e.retryAfter} seconds` : ' a while'} and try again.`;
  if (e?.status === 503) return 'quarry cannot check passwords right now (its directory is unreachable). Try again later.';
  return e?.message || 'Sign-in failed.';
}
