#!/usr/bin/env node
// Tests of the OIDC provider fixture (server.js), checked with jose as an independent verifier.
//
// Under tests/fixtures/oidc-fixture.sh it uses the server the fixture started
// (QUARRY_TEST_OIDC_URL); run alone (`node tests/oidc_provider/test_server.js`) it starts its
// own. Prints one line per check and exits 1 if any failed.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import * as jose from 'jose';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const AUDIENCE = 'api://quarry';

let base = process.env.QUARRY_TEST_OIDC_URL || '';
let child = null;

// Starts server.js and resolves with its base URL once it prints "listening".
function startServer() {
  return new Promise((resolve, reject) => {
    child = spawn(process.execPath, [path.join(HERE, 'server.js'), '--port', '0', '--watch-pid', String(process.pid)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    const timer = setTimeout(() => reject(new Error('server did not report listening in 20 s')), 20000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = /^listening (\S+)$/m.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited early (status ${code})`));
    });
  });
}

async function getJson(url, expectStatus = 200) {
  const res = await fetch(url);
  const body = await res.json().catch(() => null);
  assert.equal(res.status, expectStatus, `GET ${url}: HTTP ${res.status} ${JSON.stringify(body)}`);
  return body;
}

async function post(route, body, expectStatus = 200) {
  const res = await fetch(`${base}${route}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const answer = await res.json().catch(() => null);
  assert.equal(res.status, expectStatus, `POST ${route}: HTTP ${res.status} ${JSON.stringify(answer)}`);
  return answer;
}

const issuer = (tenant) => `${base}/${tenant}`;
const header = (jwt) => jose.decodeProtectedHeader(jwt);

// A fresh remote key set each time, so that no cached JWKS hides a rotation.
function verify(jwt, tenant, options = {}) {
  const keys = jose.createRemoteJWKSet(new URL(`${issuer(tenant)}/jwks`));
  return jose.jwtVerify(jwt, keys, { issuer: issuer(tenant), audience: AUDIENCE, ...options });
}

async function refused(jwt, tenant, why) {
  await assert.rejects(verify(jwt, tenant), (err) => {
    assert.ok(err instanceof jose.errors.JOSEError, `${why}: not a jose error: ${err}`);
    return true;
  }, `jose accepted a token that ${why}`);
}

const kidsOf = async (tenant) => (await getJson(`${issuer(tenant)}/jwks`)).keys.map((k) => k.kid);

// ---------------------------------------------------------------------------

const checks = [];
const check = (name, fn) => checks.push({ name, fn });

check('discovery of both tenants names its endpoints under its own issuer', async () => {
  for (const tenant of ['tenant-a', 'tenant-b']) {
    const d = await getJson(`${issuer(tenant)}/.well-known/openid-configuration`);
    assert.equal(d.issuer, issuer(tenant));
    assert.equal(d.jwks_uri, `${issuer(tenant)}/jwks`);
    assert.equal(d.authorization_endpoint, `${issuer(tenant)}/auth`);
    assert.equal(d.token_endpoint, `${issuer(tenant)}/token`);
    assert.ok(d.code_challenge_methods_supported.includes('S256'));
  }
});

check('the JWKS holds the three signing keys and the encryption key, public halves only', async () => {
  const { keys } = await getJson(`${issuer('tenant-a')}/jwks`);
  assert.deepEqual(keys.map((k) => k.kid), ['tenant-a-rs-1', 'tenant-a-ps-1', 'tenant-a-es-1', 'tenant-a-enc-1']);
  assert.deepEqual(keys.map((k) => `${k.kty}/${k.alg}/${k.use}`), [
    'RSA/RS256/sig', 'RSA/PS256/sig', 'EC/ES256/sig', 'RSA/undefined/enc',
  ]);
  for (const k of keys) {
    for (const secret of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']) assert.ok(!(secret in k), `${k.kid} has ${secret}`);
  }
  assert.deepEqual(await kidsOf('tenant-b'), ['tenant-b-rs-1', 'tenant-b-ps-1', 'tenant-b-es-1', 'tenant-b-enc-1']);
});

check('the code flow gives alice a JWT access token jose accepts', async () => {
  const t = await post('/__test/token', { tenant: 'tenant-a', user: 'alice' });
  assert.equal(t.expires_in, 300);
  const { payload, protectedHeader } = await verify(t.access_token, 'tenant-a', { typ: 'at+jwt' });
  assert.equal(protectedHeader.alg, 'RS256');
  assert.equal(protectedHeader.kid, 'tenant-a-rs-1');
  assert.equal(payload.sub, 'sub-alice');
  assert.equal(payload.preferred_username, 'alice');
  assert.equal(payload.upn, 'alice@example.com');
  assert.equal(payload.client_id, 'quarry-addin');
  assert.ok(payload.scp.split(' ').includes('quarry.search'), `scp: ${payload.scp}`);
  assert.equal(payload.scope, payload.scp);
  assert.equal(payload.exp - payload.iat, 300);
  const id = await jose.jwtVerify(t.id_token, jose.createRemoteJWKSet(new URL(`${issuer('tenant-a')}/jwks`)), {
    issuer: issuer('tenant-a'),
    audience: 'quarry-addin',
  });
  assert.equal(id.payload.sub, 'sub-alice');
});

check('a narrower scope gives a narrower scp', async () => {
  const t = await post('/__test/token', { tenant: 'tenant-a', user: 'bob', scope: 'openid quarry.search' });
  const { payload } = await verify(t.access_token, 'tenant-a');
  assert.equal(payload.scp, 'quarry.search');
  assert.equal(payload.preferred_username, 'bob');
});

check('PS256 and ES256 access tokens use their own keys', async () => {
  for (const [alg, slot] of [['PS256', 'ps'], ['ES256', 'es']]) {
    const t = await post('/__test/token', { tenant: 'tenant-a', user: 'alice', alg });
    assert.deepEqual(header(t.access_token), { alg, typ: 'at+jwt', kid: `tenant-a-${slot}-1` });
    const { payload } = await verify(t.access_token, 'tenant-a');
    assert.equal(payload.preferred_username, 'alice');
  }
  // The alg was for that one token only.
  const t = await post('/__test/token', { tenant: 'tenant-a', user: 'alice' });
  assert.equal(header(t.access_token).alg, 'RS256');
});

check('tenant-b issues its own tokens, which tenant-a does not accept', async () => {
  const t = await post('/__test/token', { tenant: 'tenant-b', user: 'carol' });
  const { payload } = await verify(t.access_token, 'tenant-b');
  assert.equal(payload.iss, issuer('tenant-b'));
  await refused(t.access_token, 'tenant-a', 'comes from the other tenant');
});

check('forged tokens signed with the published keys verify; the attacks do not', async () => {
  for (const key of ['rs256', 'ps256', 'es256']) {
    const { token } = await post('/__test/sign', { tenant: 'tenant-a', key });
    const { payload } = await verify(token, 'tenant-a');
    assert.equal(payload.sub, 'sub-alice');
    assert.equal(payload.scp, 'quarry.search quarry.chat');
  }
  const attacks = {
    rogue: 'is signed by a key outside the JWKS',
    none: 'is unsigned',
    'hs256-public': 'is an HMAC keyed with the public key',
    enc: 'is signed with the encryption key',
  };
  for (const [key, why] of Object.entries(attacks)) {
    const { token } = await post('/__test/sign', { tenant: 'tenant-a', key });
    await refused(token, 'tenant-a', why);
  }
  const { token: unsigned } = await post('/__test/sign', { tenant: 'tenant-a', key: 'none' });
  assert.ok(unsigned.endsWith('.'), 'alg none token has an empty signature');
  assert.equal(header(unsigned).alg, 'none');
});

check('sign overlays caller claims and header on the defaults', async () => {
  const now = Math.floor(Date.now() / 1000);
  const { token } = await post('/__test/sign', {
    tenant: 'tenant-a',
    user: 'dave',
    claims: { exp: now - 60, scp: null, roles: ['reader'] },
    header: { typ: null, x: 1 },
  });
  const claims = jose.decodeJwt(token);
  assert.equal(claims.exp, now - 60);
  assert.equal(claims.preferred_username, 'dave');
  assert.ok(!('scp' in claims));
  assert.deepEqual(claims.roles, ['reader']);
  assert.deepEqual(header(token), { alg: 'RS256', kid: 'tenant-a-rs-1', x: 1 });
  await assert.rejects(verify(token, 'tenant-a'), jose.errors.JWTExpired);
  await post('/__test/sign', { tenant: 'tenant-a', key: 'nope' }, 400);
  await post('/__test/sign', { tenant: 'tenant-z' }, 404);
});

check('outage: discovery and JWKS of one tenant answer 503 until restored', async () => {
  await post('/__test/outage', { tenant: 'tenant-a', down: true });
  await getJson(`${issuer('tenant-a')}/.well-known/openid-configuration`, 503);
  await getJson(`${issuer('tenant-a')}/jwks`, 503);
  await getJson(`${issuer('tenant-b')}/jwks`, 200);
  const t = await post('/__test/token', { tenant: 'tenant-a', user: 'erin' });
  assert.equal(jose.decodeJwt(t.access_token).preferred_username, 'erin');
  await post('/__test/outage', { tenant: 'tenant-a', down: false });
  await getJson(`${issuer('tenant-a')}/jwks`, 200);
});

check('stats count discovery and JWKS fetches per tenant, outages included', async () => {
  await post('/__test/reset-stats', {});
  await getJson(`${issuer('tenant-a')}/jwks`);
  await getJson(`${issuer('tenant-a')}/.well-known/openid-configuration`);
  await post('/__test/outage', { tenant: 'tenant-a', down: true });
  await getJson(`${issuer('tenant-a')}/jwks`, 503);
  await post('/__test/outage', { tenant: 'tenant-a', down: false });
  assert.deepEqual(await getJson(`${base}/__test/stats?tenant=tenant-a`), { jwks_fetches: 2, discovery_fetches: 1 });
  assert.deepEqual(await getJson(`${base}/__test/stats?tenant=tenant-b`), { jwks_fetches: 0, discovery_fetches: 0 });
});

check('rotate replaces the signing keys at once; old tokens stop verifying', async () => {
  const before = await post('/__test/token', { tenant: 'tenant-a', user: 'alice' });
  const { token: forgedBefore } = await post('/__test/sign', { tenant: 'tenant-a', key: 'es256' });
  const r = await post('/__test/rotate', { tenant: 'tenant-a' });
  assert.deepEqual(r.kids, ['tenant-a-rs-2', 'tenant-a-ps-2', 'tenant-a-es-2']);
  assert.deepEqual(await kidsOf('tenant-a'), ['tenant-a-rs-2', 'tenant-a-ps-2', 'tenant-a-es-2', 'tenant-a-enc-1']);
  assert.deepEqual(await kidsOf('tenant-b'), ['tenant-b-rs-1', 'tenant-b-ps-1', 'tenant-b-es-1', 'tenant-b-enc-1']);
  await refused(before.access_token, 'tenant-a', 'was signed by a retired key');
  await refused(forgedBefore, 'tenant-a', 'was signed by a retired key');
  const after = await post('/__test/token', { tenant: 'tenant-a', user: 'alice' });
  assert.equal(header(after.access_token).kid, 'tenant-a-rs-2');
  await verify(after.access_token, 'tenant-a');
  const d = await getJson(`${issuer('tenant-a')}/.well-known/openid-configuration`);
  assert.equal(d.issuer, issuer('tenant-a'));
  const again = await post('/__test/rotate', { tenant: 'tenant-a' });
  assert.deepEqual(again.kids, ['tenant-a-rs-3', 'tenant-a-ps-3', 'tenant-a-es-3']);
});

// ---------------------------------------------------------------------------

let failed = 0;
try {
  if (!base) base = await startServer();
  for (const { name, fn } of checks) {
    try {
      await fn();
      process.stdout.write(`ok - ${name}\n`);
    } catch (err) {
      failed += 1;
      process.stdout.write(`not ok - ${name}\n  ${String(err?.stack || err).split('\n').join('\n  ')}\n`);
    }
  }
} catch (err) {
  failed += 1;
  process.stdout.write(`not ok - setup: ${err?.message || err}\n`);
} finally {
  if (child) child.kill('SIGTERM');
}
process.stdout.write(failed ? `${failed} of ${checks.length} checks failed\n` : `all ${checks.length} checks passed\n`);
process.exit(failed ? 1 : 0);
