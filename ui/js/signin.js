// signin.js: the sign-in screen. A user name and password go to POST /v1/auth/token (quarry checks
// them against LDAP) and come back as a quarry bearer token; when quarry is configured with an
// OpenID provider (/ui/config.json "oidc"), a button starts the browser sign-in with it instead.

import { h, announce } from './dom.js';
import { api, describeSignInError } from './api.js';
import { beginSignIn } from './oidc.js';

export function createSignIn(ctx) {
  const message = h('p', { class: 'notice', role: 'alert', hidden: true });
  const user = h('input', {
    id: 'login-user', name: 'username', type: 'text', autocomplete: 'username', required: true,
    autocapitalize: 'none', spellcheck: 'false', 'data-testid': 'login-user',
  });
  const password = h('input', {
    id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true,
    'data-testid': 'login-password',
  });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'login-submit' }, 'Sign in');
  const form = h('form', { class: 'stack', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: 'login-user' }, 'User name'), user),
    h('div', { class: 'field' }, h('label', { for: 'login-password' }, 'Password'), password),
    submit);

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!user.value.trim() || !password.value) {
      announce(message, 'Enter your user name and password.', 'error');
      (user.value.trim() ? password : user).focus();
      return;
    }
    submit.disabled = true;
    announce(message, 'Signing in...', 'info');
    try {
      const t = await api('/v1/auth/token', {
        method: 'POST', auth: false, json: { username: user.value.trim(), password: password.value },
      });
      password.value = '';
      announce(message, '');
      await ctx.signedIn({ token: t.access_token, expiresAt: t.expires_at || 0, via: 'password' });
    } catch (e) {
      announce(message, describeSignInError(e), 'error');
      password.select();
    } finally {
      submit.disabled = false;
    }
  });

  const providerBox = h('div', { class: 'stack provider', hidden: true });
  const el = h('section', { class: 'screen screen-signin', 'aria-labelledby': 'signin-title' },
    h('div', { class: 'card signin-card' },
      h('h1', { id: 'signin-title' }, 'Sign in to quarry'),
      h('p', { class: 'muted' }, 'Ask questions about the documents you may read, and search them.'),
      message, form, providerBox));

  return {
    el,
    show() {
      const oidc = ctx.state.config.oidc;
      if (oidc && oidc.issuer && oidc.client_id && providerBox.hidden) {
        let name = oidc.name;
        if (!name) {
          try {
            name = new URL(oidc.issuer).host;
          } catch {
            name = 'your organisation';
          }
        }
        const btn = h('button', { type: 'button', class: 'btn', 'data-testid': 'login-oidc' }, `Sign in with ${name}`);
        btn.addEventListener('click', async () => {
          btn.disabled = true;
          announce(message, 'Opening the sign-in page...', 'info');
          try {
            await beginSignIn(oidc);
          } catch (e) {
            announce(message, `Sign-in with ${name} failed: ${e.message}.`, 'error');
            btn.disabled = false;
          }
        });
        providerBox.append(h('p', { class: 'divider' }, 'or'), btn);
        providerBox.hidden = false;
      }
      if (!user.value) user.focus();
    },
    setMessage(text, kind = 'info') {
      announce(message, text, kind);
    },
  };
}
