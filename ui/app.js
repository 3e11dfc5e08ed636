// app.js: quarry's web console. One page, hash routes (#/signin, #/chat, #/search, #/admin), plain
// ES modules and no build step. Every screen is built once and kept (a conversation survives a
// visit to the search screen); the router only shows one and hides the others.

import { api, getSession, setSession, clearSession, setUnauthorizedHandler } from './js/api.js';
import { completeSignIn } from './js/oidc.js';
import { createSignIn } from './js/signin.js';
import { createChat } from './js/chat.js';
import { createSearch } from './js/search.js';
import { createAdmin } from './js/admin.js';

const main = document.getElementById('main');
const nav = document.querySelector('.nav');
const account = document.querySelector('.account');
const adminLink = nav.querySelector('[data-route="admin"]');

const state = { config: { oidc: null, version: '' }, me: null, screens: {} };

async function loadConfig() {
  try {
    const res = await fetch('/ui/config.json', { cache: 'no-store', credentials: 'omit' });
    if (res.ok) state.config = { oidc: null, version: '', ...(await res.json()) };
  } catch {
    /* no configuration: password sign-in only */
  }
  document.querySelector('.version').textContent = state.config.version ? `quarry ${state.config.version}` : '';
}

function screen(name) {
  if (!state.screens[name]) {
    const ctx = { state, signedIn, signOut, go };
    const make = { signin: createSignIn, chat: createChat, search: createSearch, admin: createAdmin }[name];
    state.screens[name] = make(ctx);
    main.append(state.screens[name].el);
  }
  return state.screens[name];
}

function go(route) {
  if (location.hash !== `#/${route}`) location.hash = `#/${route}`;
  else render();
}

function render() {
  const hash = location.hash;
  if (hash && !hash.startsWith('#/')) return; // the skip link: not a route
  let route = hash.slice(2) || 'chat';
  if (!['signin', 'chat', 'search', 'admin'].includes(route)) route = 'chat';
  if (!getSession() || !state.me) route = 'signin';
  else if (route === 'signin') route = 'chat';
  const shown = screen(route);
  for (const [name, s] of Object.entries(state.screens)) s.el.hidden = name !== route;
  for (const a of nav.querySelectorAll('a')) {
    if (a.dataset.route === route) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const titles = { signin: 'Sign in', chat: 'Chat', search: 'Search', admin: 'Administration' };
  document.title = `${titles[route]} - quarry`;
  shown.show?.();
}

/** After a token was obtained: who is this (GET /v1/me), then the screens they may use. */
async function signedIn(session, { message } = {}) {
  setSession(session);
  try {
    state.me = await api('/v1/me');
  } catch (e) {
    clearSession();
    state.me = null;
    screen('signin').setMessage(e.message, 'error');
    render();
    return;
  }
  nav.hidden = false;
  account.hidden = false;
  adminLink.hidden = !state.me.is_admin;
  account.querySelector('.who').textContent = state.me.display_name || state.me.uid;
  if (message) screen('signin').setMessage(message);
  render();
}

function signOut(message = '', kind = 'info') {
  clearSession();
  state.me = null;
  // nothing of the last user may stay in the page for the next one
  for (const s of Object.values(state.screens)) s.el.remove();
  state.screens = {};
  nav.hidden = true;
  account.hidden = true;
  adminLink.hidden = true;
  location.hash = '#/signin';
  render();
  if (message) screen('signin').setMessage(message, kind);
}

setUnauthorizedHandler(() => signOut('Your session has expired. Sign in again.', 'error'));
account.querySelector('[data-testid="signout"]').addEventListener('click', () => signOut('You are signed out.'));
window.addEventListener('hashchange', render);

async function start() {
  await loadConfig();
  let oidcError = '';
  try {
    const s = await completeSignIn();
    if (s) setSession({ token: s.token, expiresAt: s.expiresAt, via: 'oidc' });
  } catch (e) {
    oidcError = `Sign-in failed: ${e.message}.`;
  }
  const s = getSession();
  if (s) await signedIn(s);
  else render();
  if (oidcError) screen('signin').setMessage(oidcError, 'error');
}

start();
