// oidc.js: "Sign in with <provider>" in the browser: OpenID Connect authorization code flow with
// PKCE (S256), state and nonce, as a public client (no secret). The provider's discovery document
// gives the endpoints; the page redirects to the provider and back to itself, then exchanges the
// code at the token endpoint with fetch. The access token is what quarry checks (oidc.audience);
// the ID token is read only for its nonce. The verifier, state and nonce wait in sessionStorage
// across the redirect and are removed as soon as the page is back.

const PENDING = 'quarry.oidc.pending';

function b64url(bytes) {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function randomString(bytes = 32) {
  return b64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

export async function pkceChallenge(verifier) {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier));
  return b64url(new Uint8Array(digest));
}

async function discover(issuer) {
  const url = `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
  const res = await fetch(url, { cache: 'no-store' });
  if (!res.ok) throw new Error(`the provider's discovery document answered HTTP ${res.status}`);
  const doc = await res.json();
  if (!doc.authorization_endpoint || !doc.token_endpoint) throw new Error('the provider publishes no authorization or token endpoint');
  return doc;
}

/** Where the provider sends the browser back: this page, without query or fragment. */
export function redirectUri() {
  return `${location.origin}${location.pathname}`;
}

/** Starts the sign-in: remembers verifier, state and nonce, then leaves for the provider. */
export async function beginSignIn(oidc) {
  const doc = await discover(oidc.issuer);
  const verifier = randomString(48);
  const state = randomString();
  const nonce = randomString();
  sessionStorage.setItem(
    PENDING,
    JSON.stringify({ verifier, state, nonce, issuer: oidc.issuer, tokenEndpoint: doc.token_endpoint, clientId: oidc.client_id }),
  );
  const url = new URL(doc.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: 'code',
    client_id: oidc.client_id,
    redirect_uri: redirectUri(),
    scope: oidc.scope || 'openid',
    state,
    nonce,
    code_challenge: await pkceChallenge(verifier),
    code_challenge_method: 'S256',
  }).toString();
  location.assign(url.href);
}

function jwtPayload(jwt) {
  try {
    const part = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return null;
  }
}

/**
 * When the page is the provider's redirect (?code=&state= or ?error=): checks the state,
 * exchanges the code, checks the ID token's nonce and clears the query from the address bar.
 * Resolves to null when this is no redirect, else {token, expiresAt}; rejects with a readable Error.
 */
export async function completeSignIn() {
  const params = new URLSearchParams(location.search);
  if (!params.has('code') && !params.has('error')) return null;
  const pending = JSON.parse(sessionStorage.getItem(PENDING) || 'null');
  sessionStorage.removeItem(PENDING);
  history.replaceState(null, '', redirectUri() + location.hash);
  if (params.has('error'))
    throw new Error(`the provider refused the sign-in: ${params.get('error_description') || params.get('error')}`);
  if (!pending || params.get('state') !== pending.state) throw new Error('the sign-in answer does not match a sign-in started here (state)');
  const res = await fetch(pending.tokenEndpoint, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code: params.get('code'),
      redirect_uri: redirectUri(),
      client_id: pending.clientId,
      code_verifier: pending.verifier,
    }),
  });
  const body = await res.json().catch(() => null);
  if (!res.ok || !body?.access_token)
    throw new Error(`the provider did not give a token (${body?.error_description || body?.error || `HTTP ${res.status}`})`);
  if (body.id_token) {
    const claims = jwtPayload(body.id_token);
    if (!claims || claims.nonce !== pending.nonce) throw new Error('the ID token does not carry this sign-in\'s nonce');
  }
  const expiresAt = body.expires_in ? Math.floor(Date.now() / 1000) + Number(body.expires_in) : 0;
  return { token: body.access_token, expiresAt };
}
