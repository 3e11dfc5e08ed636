#!/usr/bin/env node
// A real OpenID Connect provider for quarry's integration tests of OIDC bearer-token sign-in.
//
// Two tenants, each its own oidc-provider instance with its own issuer, keys and state, are
// mounted under /tenant-a and /tenant-b of one loopback HTTP server. Access tokens for the
// resource api://quarry are JWTs (RFC 9068), shaped like Entra ID tokens for an API. Routes
// under /__test/ let a test run the authorization code flow, forge tokens, rotate keys, take a
// tenant's metadata down and count metadata fetches. README.md in this directory lists them.
//
// Needs the pinned npm packages in this directory (npm ci); runs on Node 20 and later.
// Licence: MIT, like the rest of quarry.

import http from 'node:http';
import crypto from 'node:crypto';

import * as jose from 'jose';
import { Provider, errors as oidcErrors } from 'oidc-provider';

// oidc-provider prints its development notices with console.info, i.e. on stdout, where the
// fixture expects the one "listening" line only.
console.info = (...args) => console.error(...args);

const TENANTS = ['tenant-a', 'tenant-b'];
const AUDIENCE = 'api://quarry';
const API_SCOPES = 'quarry.search quarry.chat';
const CLIENT_ID = 'quarry-addin';
const REDIRECT_URI = 'http://127.0.0.1/callback';
const ACCESS_TOKEN_TTL = 300;
const DEFAULT_FLOW_SCOPE = 'openid quarry.search quarry.chat';
const MAX_BODY_BYTES = 1024 * 1024;
// The access token's signing algorithm -> the tenant's key slot that signs it.
const ALG_SLOT = { RS256: 'rs', PS256: 'ps', ES256: 'es' };

// ---------------------------------------------------------------------------
// Command line

function usage() {
  return [
    'usage: node server.js [--port N] [--host ADDR] [--watch-pid PID]',
    '',
    '  --port N        port to listen on; 0 (default) picks a free port',
    '  --host ADDR     address to bind (default 127.0.0.1)',
    '  --watch-pid PID exit when process PID no longer exists',
    '',
    'Prints "listening http://HOST:PORT" on stdout once both tenants are ready.',
  ].join('\n');
}

function die(msg) {
  process.stderr.write(`oidc-provider-fixture: ${msg}\n${usage()}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { port: 0, host: '127.0.0.1', watchPid: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    let name = arg;
    let inline;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) {
      name = arg.slice(0, eq);
      inline = arg.slice(eq + 1);
    }
    const value = () => {
      if (inline !== undefined) return inline;
      if (i + 1 >= argv.length) die(`missing value for ${name}`);
      return argv[++i];
    };
    switch (name) {
      case '--port': {
        const v = value();
        if (!/^\d+$/.test(v) || Number(v) > 65535) die(`invalid port: ${v}`);
        opts.port = Number(v);
        break;
      }
      case '--host':
        opts.host = value();
        break;
      case '--watch-pid': {
        const v = value();
        if (!/^\d+$/.test(v) || Number(v) <= 0) die(`invalid pid: ${v}`);
        opts.watchPid = Number(v);
        break;
      }
      case '-h':
      case '--help':
        process.stdout.write(usage() + '\n');
        process.exit(0);
        break;
      default:
        die(`unknown argument: ${arg}`);
    }
  }
  return opts;
}

// ---------------------------------------------------------------------------
// Small helpers

const b64url = (buf) => Buffer.from(buf).toString('base64url');

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function sendJson(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(body);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const parts = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new HttpError(413, 'request body too large'));
        req.destroy();
        return;
      }
      parts.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
    req.on('error', reject);
  });
}

async function readJson(req) {
  const text = await readBody(req);
  if (text.trim() === '') return {};
  let obj;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    throw new HttpError(400, `body is not JSON: ${err.message}`);
  }
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new HttpError(400, 'body must be a JSON object');
  }
  return obj;
}

// Copies base, then lays over's keys on it; a null in over removes that key.
function overlay(base, over, what) {
  if (over === undefined || over === null) return { ...base };
  if (typeof over !== 'object' || Array.isArray(over)) {
    throw new HttpError(400, `${what} must be a JSON object`);
  }
  const out = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (v === null) delete out[k];
    else out[k] = v;
  }
  return out;
}

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// Login names become account ids "sub-<name>", so that a test can tell sub from the name.
const accountIdFor = (name) => `sub-${name}`;
const nameOf = (accountId) => (accountId.startsWith('sub-') ? accountId.slice(4) : accountId);

// ---------------------------------------------------------------------------
// Keys

// One signing or encryption key: its kid, the private KeyObject (for forging) and the private
// JWK handed to oidc-provider (which publishes only the public members).
async function makeKey(kid, alg, use) {
  const genAlg = use === 'enc' ? 'RS256' : alg;
  const options = { extractable: true };
  if (genAlg !== 'ES256') options.modulusLength = 2048;
  const { privateKey, publicKey } = await jose.generateKeyPair(genAlg, options);
  const jwk = { ...(await jose.exportJWK(privateKey)), kid, use };
  // The encryption key carries no alg on purpose: a verifier must refuse it for its use alone.
  if (use === 'sig') jwk.alg = alg;
  return { kid, alg, privateKey, publicKey, jwk };
}

async function makeSigningKeys(tenant, generation) {
  const [rs, ps, es] = await Promise.all([
    makeKey(`${tenant}-rs-${generation}`, 'RS256', 'sig'),
    makeKey(`${tenant}-ps-${generation}`, 'PS256', 'sig'),
    makeKey(`${tenant}-es-${generation}`, 'ES256', 'sig'),
  ]);
  return { rs, ps, es };
}

// Signs data the way alg's JWS algorithm does; the key alone decides, whatever the header says.
function rawSign(alg, key, data) {
  switch (alg) {
    case 'RS256':
      return crypto.sign('sha256', data, { key, padding: crypto.constants.RSA_PKCS1_PADDING });
    case 'PS256':
      return crypto.sign('sha256', data, {
        key,
        padding: crypto.constants.RSA_PKCS1_PSS_PADDING,
        saltLength: 32,
      });
    case 'ES256':
      return crypto.sign('sha256', data, { key, dsaEncoding: 'ieee-p1363' });
    case 'HS256':
      return crypto.createHmac('sha256', key).update(data).digest();
    case 'none':
      return Buffer.alloc(0);
    default:
      throw new Error(`no signer for ${alg}`);
  }
}

// ---------------------------------------------------------------------------
// Tenants

const tenants = new Map();
let baseUrl;

function tenantFrom(name) {
  if (name === undefined || name === null) throw new HttpError(400, 'missing "tenant"');
  const t = tenants.get(name);
  if (!t) throw new HttpError(404, `unknown tenant '${name}' (have: ${TENANTS.join(', ')})`);
  return t;
}

// Runs fn after everything queued on tenant t before it: a code flow sets t.tokenAlg for the
// token endpoint to read, and a rotation replaces t.provider, so neither may overlap another.
function serial(t, fn) {
  const run = t.queue.then(fn);
  t.queue = run.catch(() => {});
  return run;
}

function buildProvider(t) {
  const keys = [t.keys.rs, t.keys.ps, t.keys.es, t.enc].map((k) => k.jwk);
  const provider = new Provider(t.issuer, {
    clients: [
      {
        client_id: CLIENT_ID,
        token_endpoint_auth_method: 'none',
        redirect_uris: [REDIRECT_URI],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
      },
    ],
    jwks: { keys },
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'upn'],
      email: ['email', 'email_verified'],
    },
    scopes: ['openid', 'offline_access', 'profile', 'email'],
    async findAccount(ctx, id) {
      const name = nameOf(id);
      return {
        accountId: id,
        async claims() {
          return {
            sub: id,
            preferred_username: name,
            upn: `${name}@example.com`,
            email: `${name}@example.com`,
            email_verified: true,
          };
        },
      };
    },
    // Entra-style claims in access tokens; scope stays there too (RFC 9068).
    async extraTokenClaims(ctx, token) {
      if (!token.accountId) return undefined;
      const name = nameOf(token.accountId);
      return { preferred_username: name, upn: `${name}@example.com`, scp: token.scope };
    },
    features: {
      devInteractions: { enabled: false }, // ours below log "alice" in as "sub-alice"
      // Lets the keystore hold (and jwks publish) the use=enc key; it decrypts nothing here.
      encryption: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => AUDIENCE,
        useGrantedResource: () => true,
        getResourceServerInfo(ctx, indicator) {
          if (indicator !== AUDIENCE) throw new oidcErrors.InvalidTarget();
          const key = t.keys[ALG_SLOT[t.tokenAlg]];
          return {
            scope: API_SCOPES,
            audience: AUDIENCE,
            accessTokenTTL: ACCESS_TOKEN_TTL,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: key.alg, kid: key.kid } },
          };
        },
      },
    },
    interactions: { url: (ctx, interaction) => `/${t.name}/interaction/${interaction.uid}` },
    pkce: { methods: ['S256'], required: () => true },
    clientBasedCORS: () => true,
    ttl: {
      AccessToken: ACCESS_TOKEN_TTL,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
      RefreshToken: 3600,
    },
    async renderError(ctx, out) {
      ctx.type = 'json';
      ctx.body = out;
    },
  });
  t.provider = provider;
  t.handler = provider.callback();
}

async function initTenants() {
  await Promise.all(
    TENANTS.map(async (name) => {
      const [keys, enc, rogue] = await Promise.all([
        makeSigningKeys(name, 1),
        makeKey(`${name}-enc-1`, 'RS256', 'enc'),
        jose.generateKeyPair('RS256', { modulusLength: 2048 }),
      ]);
      const t = {
        name,
        issuer: `${baseUrl}/${name}`,
        generation: 1,
        keys,
        enc,
        rogue: rogue.privateKey,
        tokenAlg: 'RS256',
        down: false,
        stats: { jwks: 0, discovery: 0 },
        queue: Promise.resolve(),
        provider: null,
        handler: null,
      };
      buildProvider(t);
      tenants.set(name, t);
    }),
  );
}

// ---------------------------------------------------------------------------
// Interactions: a bare login form (any name, no password) and a consent button

async function handleInteraction(t, req, res) {
  const details = await t.provider.interactionDetails(req, res);
  const { uid, prompt, params } = details;
  if (req.method === 'GET') {
    const action = `/${t.name}/interaction/${uid}`;
    const field =
      prompt.name === 'login'
        ? '<input type="text" name="login" placeholder="any name" autofocus required>'
        : `<p>${escapeHtml(params.client_id)} asks for ${escapeHtml(params.scope || '')}</p>`;
    const html =
      `<!DOCTYPE html><html><head><title>${prompt.name}</title></head><body>` +
      `<form method="post" action="${escapeHtml(action)}">` +
      `<input type="hidden" name="prompt" value="${escapeHtml(prompt.name)}">${field}` +
      '<button type="submit">Continue</button></form></body></html>';
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(html);
    return;
  }
  if (req.method !== 'POST') throw new HttpError(405, 'method not allowed');
  const form = new URLSearchParams(await readBody(req));
  if (form.get('prompt') !== prompt.name) {
    throw new HttpError(400, `this interaction asks for ${prompt.name}, not ${form.get('prompt')}`);
  }
  if (prompt.name === 'login') {
    const login = (form.get('login') || '').trim();
    if (!login) throw new HttpError(400, 'missing login');
    await t.provider.interactionFinished(
      req,
      res,
      { login: { accountId: accountIdFor(login) } },
      { mergeWithLastSubmission: false },
    );
    return;
  }
  if (prompt.name === 'consent') {
    const { Grant } = t.provider;
    const grant = details.grantId
      ? await Grant.find(details.grantId)
      : new Grant({ accountId: details.session.accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    await t.provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }
  throw new HttpError(501, `prompt ${prompt.name} not implemented`);
}

// ---------------------------------------------------------------------------
// The authorization code flow with PKCE, run over HTTP against our own providers

// Just enough of a browser's cookie store for one flow: name, value, path, deletion.
class CookieJar {
  constructor() {
    this.cookies = new Map(); // "name path" -> { name, value, path }
  }

  store(res) {
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      let path = '/';
      let gone = value === '';
      for (const attr of attrs) {
        const i = attr.indexOf('=');
        const key = (i < 0 ? attr : attr.slice(0, i)).trim().toLowerCase();
        const v = i < 0 ? '' : attr.slice(i + 1).trim();
        if (key === 'path' && v.startsWith('/')) path = v;
        else if (key === 'expires' && Date.parse(v) <= Date.now()) gone = true;
        else if (key === 'max-age' && Number(v) <= 0) gone = true;
      }
      if (gone) this.cookies.delete(`${name} ${path}`);
      else this.cookies.set(`${name} ${path}`, { name, value, path });
    }
  }

  headerFor(url) {
    const p = url.pathname;
    const pairs = [];
    for (const c of this.cookies.values()) {
      const prefix = c.path.endsWith('/') ? c.path : `${c.path}/`;
      if (p === c.path || p.startsWith(prefix)) pairs.push(`${c.name}=${c.value}`);
    }
    return pairs.join('; ');
  }

  async fetch(url, init = {}) {
    const headers = { ...(init.headers || {}) };
    const cookie = this.headerFor(url);
    if (cookie) headers.cookie = cookie;
    const res = await fetch(url, { ...init, headers, redirect: 'manual' });
    this.store(res);
    return res;
  }
}

async function runCodeFlow(t, user, scope) {
  const jar = new CookieJar();
  const verifier = b64url(crypto.randomBytes(32));
  const challenge = b64url(crypto.createHash('sha256').update(verifier).digest());
  const state = b64url(crypto.randomBytes(16));
  const nonce = b64url(crypto.randomBytes(16));

  let url = new URL(`${t.issuer}/auth`);
  url.search = new URLSearchParams({
    client_id: CLIENT_ID,
    response_type: 'code',
    redirect_uri: REDIRECT_URI,
    scope,
    state,
    nonce,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    resource: AUDIENCE,
  }).toString();

  let res = await jar.fetch(url);
  let callback = null;
  for (let step = 0; step < 20 && !callback; step++) {
    if (res.status >= 300 && res.status < 400) {
      const next = new URL(res.headers.get('location'), url);
      await res.arrayBuffer();
      if (`${next.origin}${next.pathname}` === REDIRECT_URI) {
        callback = next; // the client's redirect: read it, do not follow it
        break;
      }
      url = next;
      res = await jar.fetch(url);
      continue;
    }
    const text = await res.text();
    if (res.status === 200 && url.pathname.startsWith(`/${t.name}/interaction/`)) {
      const prompt = /name="prompt" value="([a-z]+)"/.exec(text)?.[1];
      const form = prompt === 'login' ? { prompt, login: user } : { prompt };
      res = await jar.fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(form).toString(),
      });
      continue;
    }
    throw new Error(`authorization stopped at ${url.pathname}: HTTP ${res.status} ${text.slice(0, 300)}`);
  }
  if (!callback) throw new Error('authorization did not reach the redirect URI in 20 steps');
  const cb = callback.searchParams;
  if (cb.get('error')) {
    throw new Error(`authorization failed: ${cb.get('error')}: ${cb.get('error_description') || ''}`);
  }
  if (cb.get('state') !== state) throw new Error('authorization answered another state');
  if (!cb.get('code')) throw new Error('authorization answered no code');

  const tokenRes = await fetch(`${t.issuer}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code: cb.get('code'),
      redirect_uri: REDIRECT_URI,
      client_id: CLIENT_ID,
      code_verifier: verifier,
      resource: AUDIENCE,
    }).toString(),
  });
  const tokens = await tokenRes.json().catch(() => ({}));
  if (!tokenRes.ok || !tokens.access_token) {
    throw new Error(`token endpoint: HTTP ${tokenRes.status} ${JSON.stringify(tokens)}`);
  }
  const out = {
    access_token: tokens.access_token,
    id_token: tokens.id_token ?? null,
    expires_in: tokens.expires_in,
    token_type: tokens.token_type,
    scope: tokens.scope,
  };
  if (tokens.refresh_token) out.refresh_token = tokens.refresh_token;
  return out;
}

// ---------------------------------------------------------------------------
// Forged tokens

// key name -> { alg the signature really uses, kid, signing key }
function forgeSigner(t, keyName) {
  switch (keyName) {
    case 'rs256':
    case 'ps256':
    case 'es256': {
      const k = t.keys[keyName.slice(0, 2)];
      return { alg: k.alg, kid: k.kid, key: k.privateKey };
    }
    case 'enc':
      return { alg: 'RS256', kid: t.enc.kid, key: t.enc.privateKey };
    case 'rogue':
      return { alg: 'RS256', kid: t.keys.rs.kid, key: t.rogue };
    case 'hs256-public':
      // The classic confusion: HMAC keyed with the published RSA key's PEM text.
      return {
        alg: 'HS256',
        kid: t.keys.rs.kid,
        key: Buffer.from(t.keys.rs.publicKey.export({ type: 'spki', format: 'pem' })),
      };
    case 'none':
      return { alg: 'none', kid: t.keys.rs.kid, key: null };
    default:
      throw new HttpError(
        400,
        `unknown key '${keyName}' (rs256, ps256, es256, enc, rogue, hs256-public, none)`,
      );
  }
}

function forgeToken(t, body) {
  const user = body.user ?? 'alice';
  const signer = forgeSigner(t, body.key ?? 'rs256');
  const now = Math.floor(Date.now() / 1000);
  const claims = overlay(
    {
      iss: t.issuer,
      aud: AUDIENCE,
      sub: accountIdFor(user),
      preferred_username: user,
      iat: now,
      exp: now + ACCESS_TOKEN_TTL,
      scp: API_SCOPES,
    },
    body.claims,
    'claims',
  );
  const header = overlay({ alg: signer.alg, kid: signer.kid, typ: 'at+jwt' }, body.header, 'header');
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  return `${input}.${b64url(rawSign(signer.alg, signer.key, Buffer.from(input)))}`;
}

// ---------------------------------------------------------------------------
// /__test/ routes

async function handleControl(req, res, url) {
  const route = `${req.method} ${url.pathname}`;
  switch (route) {
    case 'POST /__test/token': {
      const body = await readJson(req);
      const t = tenantFrom(body.tenant);
      const user = body.user ?? 'alice';
      const scope = body.scope ?? DEFAULT_FLOW_SCOPE;
      const alg = body.alg ?? 'RS256';
      if (typeof user !== 'string' || !user) throw new HttpError(400, '"user" must be a non-empty string');
      if (typeof scope !== 'string') throw new HttpError(400, '"scope" must be a string');
      if (!ALG_SLOT[alg]) throw new HttpError(400, `"alg" must be one of ${Object.keys(ALG_SLOT).join(', ')}`);
      const tokens = await serial(t, async () => {
        t.tokenAlg = alg;
        try {
          return await runCodeFlow(t, user, scope);
        } finally {
          t.tokenAlg = 'RS256';
        }
      });
      return sendJson(res, 200, tokens);
    }
    case 'POST /__test/sign': {
      const body = await readJson(req);
      const t = tenantFrom(body.tenant);
      return sendJson(res, 200, { token: forgeToken(t, body) });
    }
    case 'POST /__test/rotate': {
      const body = await readJson(req);
      const t = tenantFrom(body.tenant);
      const kids = await serial(t, async () => {
        t.generation += 1;
        t.keys = await makeSigningKeys(t.name, t.generation);
        buildProvider(t);
        return [t.keys.rs.kid, t.keys.ps.kid, t.keys.es.kid];
      });
      return sendJson(res, 200, { kids, jwks_kids: [...kids, t.enc.kid] });
    }
    case 'POST /__test/outage': {
      const body = await readJson(req);
      const t = tenantFrom(body.tenant);
      if (typeof body.down !== 'boolean') throw new HttpError(400, '"down" must be true or false');
      t.down = body.down;
      return sendJson(res, 200, { tenant: t.name, down: t.down });
    }
    case 'GET /__test/stats': {
      const view = (t) => ({ jwks_fetches: t.stats.jwks, discovery_fetches: t.stats.discovery });
      const name = url.searchParams.get('tenant');
      if (name !== null) return sendJson(res, 200, view(tenantFrom(name)));
      return sendJson(res, 200, Object.fromEntries([...tenants.values()].map((t) => [t.name, view(t)])));
    }
    case 'POST /__test/reset-stats': {
      const body = await readJson(req);
      const list = body.tenant === undefined ? [...tenants.values()] : [tenantFrom(body.tenant)];
      for (const t of list) t.stats = { jwks: 0, discovery: 0 };
      return sendJson(res, 200, { reset: list.map((t) => t.name) });
    }
    default:
      throw new HttpError(404, `no test route ${route}`);
  }
}

// ---------------------------------------------------------------------------
// Dispatch

async function handle(req, res) {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (url.pathname.startsWith('/__test/')) return handleControl(req, res, url);

  const name = url.pathname.split('/')[1];
  const t = tenants.get(name);
  if (!t) throw new HttpError(404, `no tenant at ${url.pathname}`);
  const rest = url.pathname.slice(name.length + 1) || '/';
  const metadata = rest === '/.well-known/openid-configuration' || rest === '/jwks';
  if (metadata && (req.method === 'GET' || req.method === 'HEAD')) {
    // Counted before the outage check: a test wants to see retries against a tenant that is down.
    if (rest === '/jwks') t.stats.jwks += 1;
    else t.stats.discovery += 1;
    if (t.down) {
      return sendJson(res, 503, {
        error: 'temporarily_unavailable',
        error_description: `${t.name} is down (test outage)`,
      });
    }
  }
  if (rest.startsWith('/interaction/')) return handleInteraction(t, req, res);

  // Mount the provider under /<tenant>: it derives its own URLs from originalUrl minus url.
  req.originalUrl = req.url;
  req.url = req.url.slice(name.length + 1) || '/';
  if (req.url.startsWith('?')) req.url = `/${req.url}`;
  return t.handler(req, res);
}

let shuttingDown = false;
const sockets = new Set();

function shutdown() {
  if (shuttingDown) return;
  shuttingDown = true;
  try {
    server.close();
  } catch (_) {
    // ignore
  }
  for (const s of sockets) s.destroy();
  process.exit(0);
}

const opts = parseArgs(process.argv.slice(2));

const server = http.createServer((req, res) => {
  if (tenants.size !== TENANTS.length) {
    sendJson(res, 503, { error: 'starting' });
    return;
  }
  handle(req, res).catch((err) => {
    const status = err instanceof HttpError ? err.status : 500;
    if (status === 500) process.stderr.write(`oidc-provider-fixture: ${err?.stack || err}\n`);
    if (!res.headersSent) sendJson(res, status, { error: err.message || String(err) });
    else res.destroy();
  });
});
server.on('connection', (sock) => {
  sockets.add(sock);
  sock.on('close', () => sockets.delete(sock));
});
server.on('clientError', (err, sock) => {
  if (sock.writable) sock.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
  else sock.destroy();
});
server.on('error', (err) => {
  process.stderr.write(`oidc-provider-fixture: ${err.message}\n`);
  process.exit(1);
});

process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
process.on('SIGHUP', shutdown);

server.listen(opts.port, opts.host, () => {
  const addr = server.address();
  const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  baseUrl = `http://${host}:${addr.port}`;
  initTenants().then(
    () => process.stdout.write(`listening ${baseUrl}\n`),
    (err) => {
      process.stderr.write(`oidc-provider-fixture: cannot start the tenants: ${err?.stack || err}\n`);
      process.exit(1);
    },
  );
});

if (opts.watchPid !== null) {
  const watched = opts.watchPid;
  setInterval(() => {
    try {
      process.kill(watched, 0);
    } catch (err) {
      if (err.code === 'ESRCH') shutdown();
    }
  }, 500).unref();
}
