#!/usr/bin/env node
// Tests of the fake inference server and its shell fixture.
//
// Run with `node tests/fake_inference/test_server.js` (exits non-zero on
// failure) or `node --test tests/fake_inference/test_server.js`.
// Uses only node: built-ins; works on Node 18 and later.
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');

const SERVER_JS = path.join(__dirname, 'server.js');
const FIXTURE_SH = path.join(__dirname, '..', 'fixtures', 'fake-inference-fixture.sh');
const NON_ASCII = 'café – 東京 🙂';

// ---------------------------------------------------------------------------
// Helpers

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function waitExit(proc, ms) {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      resolve({ code: proc.exitCode, signal: proc.signalCode });
      return;
    }
    const timer = setTimeout(() => resolve(null), ms);
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal });
    });
  });
}

// A zombie (exited, not yet reaped by its new parent) counts as gone.
function processGone(pid) {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return err.code === 'ESRCH';
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch (_) {
    return false;
  }
}

async function waitGone(pid, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (processGone(pid)) return true;
    await sleep(25);
  }
  return processGone(pid);
}

// Starts server.js on port 0 and resolves once it prints its listening line.
function startServer(args = []) {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [SERVER_JS, '--port', '0', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    let settled = false;
    const fail = (msg) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      proc.kill('SIGKILL');
      reject(new Error(`${msg}\nstdout: ${out}\nstderr: ${err}`));
    };
    const timer = setTimeout(() => fail('server did not start within 10 s'), 10000);
    proc.stderr.on('data', (d) => {
      err += d;
    });
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/^listening (http:\/\/127\.0\.0\.1:(\d+))\n/);
      if (m && !settled) {
        settled = true;
        clearTimeout(timer);
        const server = {
          proc,
          url: m[1],
          port: Number(m[2]),
          stderr: () => err,
          async stop() {
            if (proc.exitCode !== null || proc.signalCode !== null) return;
            proc.kill('SIGTERM');
            if ((await waitExit(proc, 3000)) === null) {
              proc.kill('SIGKILL');
              await waitExit(proc, 3000);
            }
          },
        };
        resolve(server);
      }
    });
    proc.once('exit', (code) => fail(`server exited early with ${code}`));
  });
}

// Minimal HTTP client. Resolves with the whole response; rejects with the
// socket error (err.code) if the connection fails, or with code
// CLIENT_TIMEOUT after opts.timeout ms. opts.onChunk sees each body chunk.
function request(port, opts) {
  return new Promise((resolve, reject) => {
    const headers = Object.assign({}, opts.headers || {});
    let data;
    if (opts.body !== undefined) {
      data = typeof opts.body === 'string' ? Buffer.from(opts.body, 'utf8') : Buffer.from(JSON.stringify(opts.body), 'utf8');
      headers['content-type'] = headers['content-type'] || 'application/json';
      headers['content-length'] = data.length;
    }
    let settled = false;
    let timer = null;
    const chunks = [];
    const times = [];
    const settle = (fn, v) => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      fn(v);
    };
    const req = http.request({
      host: '127.0.0.1',
      port,
      method: opts.method || 'GET',
      path: opts.path,
      headers,
      agent: false,
    });
    if (opts.timeout) {
      timer = setTimeout(() => {
        const e = new Error(`client timeout after ${opts.timeout} ms`);
        e.code = 'CLIENT_TIMEOUT';
        e.chunks = chunks;
        settle(reject, e);
        req.destroy();
      }, opts.timeout);
    }
    req.on('error', (e) => {
      e.chunks = chunks;
      settle(reject, e);
    });
    req.on('response', (res) => {
      res.on('data', (c) => {
        chunks.push(c);
        times.push(Date.now());
        if (opts.onChunk) opts.onChunk(c, req);
      });
      res.on('error', (e) => {
        e.chunks = chunks;
        settle(reject, e);
      });
      res.on('aborted', () => {
        const e = new Error('response aborted');
        e.code = 'ECONNRESET';
        e.chunks = chunks;
        settle(reject, e);
      });
      res.on('end', () => {
        const buf = Buffer.concat(chunks);
        settle(resolve, {
          status: res.statusCode,
          headers: res.headers,
          buf,
          text: buf.toString('utf8'),
          chunks,
          times,
          json() {
            return JSON.parse(buf.toString('utf8'));
          },
        });
      });
    });
    if (data) req.write(data);
    req.end();
  });
}

// Incremental SSE parser working on bytes: events are cut at the blank line
// before any UTF-8 decoding, so split multi-byte characters reassemble.
class SseParser {
  constructor() {
    this.pending = Buffer.alloc(0);
    this.events = []; // data payloads (strings)
    this.comments = 0;
  }

  push(chunk) {
    this.pending = Buffer.concat([this.pending, chunk]);
    let idx;
    while ((idx = this.pending.indexOf('\n\n')) !== -1) {
      const block = this.pending.subarray(0, idx).toString('utf8');
      this.pending = this.pending.subarray(idx + 2);
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) this.comments += 1;
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length > 0) this.events.push(data.join('\n'));
    }
  }
}

function parseSse(chunks) {
  const p = new SseParser();
  for (const c of chunks) p.push(c);
  return p;
}

// Content of the deltas of a list of chunk payloads (ending in [DONE]).
function deltaText(events) {
  return events
    .filter((e) => e !== '[DONE]')
    .map((e) => JSON.parse(e))
    .map((c) => (c.choices[0] && c.choices[0].delta && c.choices[0].delta.content) || '')
    .join('');
}

// True if buf ends inside a multi-byte UTF-8 sequence.
function endsMidChar(buf) {
  for (let back = 1; back <= 4 && back <= buf.length; back++) {
    const b = buf[buf.length - back];
    if ((b & 0xc0) === 0x80) continue; // continuation byte
    if (b < 0x80) return false;
    const len = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2;
    return back < len;
  }
  return false;
}

function assertErrorObject(obj) {
  assert.ok(obj && typeof obj.error === 'object', 'has an error object');
  assert.deepEqual(Object.keys(obj.error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(typeof obj.error.message, 'string');
  assert.equal(typeof obj.error.type, 'string');
}

function chatBody(extra) {
  return Object.assign({
    model: 'fake-chat-model',
    messages: [
      { role: 'system', content: 'Answer from the sources.\n[1] Alpha handbook.\n[2] Beta guide.\n[3] Gamma notes.' },
      { role: 'user', content: 'What does the alpha handbook say?' },
    ],
  }, extra || {});
}

function post(port, p, body, headers, extra) {
  return request(port, Object.assign({ method: 'POST', path: p, body, headers }, extra || {}));
}

function cosine(a, b) {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

// All tests are subtests of one root test, awaited one after the other, so
// they run sequentially on every Node version.
const suites = [];
function suite(name, options, fn) {
  suites.push({ name, options, fn });
}

// ---------------------------------------------------------------------------
// Tests against one shared server

suite('shared server', {}, async (t) => {
  const recordFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'fake-inf-test-')), 'requests.jsonl');
  const srv = await startServer(['--record', recordFile]);
  const port = srv.port;
  const reset = () => post(port, '/_fake/reset', {});
  try {
    await t.test('health', async () => {
      const r = await request(port, { path: '/_fake/health' });
      assert.equal(r.status, 200);
      assert.equal(r.text, 'ok');
    });

    await t.test('non-streaming chat completion shape and citations', async () => {
      await reset();
      const r = await post(port, '/v1/chat/completions', chatBody());
      assert.equal(r.status, 200);
      assert.match(r.headers['content-type'], /^application\/json/);
      const c = r.json();
      assert.match(c.id, /^chatcmpl-/);
      assert.equal(c.object, 'chat.completion');
      assert.equal(typeof c.created, 'number');
      assert.equal(c.model, 'fake-chat-model');
      assert.equal(c.choices.length, 1);
      assert.equal(c.choices[0].index, 0);
      assert.equal(c.choices[0].message.role, 'assistant');
      assert.equal(c.choices[0].finish_reason, 'stop');
      const content = c.choices[0].message.content;
      assert.match(content, /^According to the sources \[1\].*\[2\]/);
      assert.ok(!content.includes('[3]'));
      const u = c.usage;
      assert.ok(u.prompt_tokens > 0 && u.completion_tokens > 0);
      assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
      // Deterministic.
      const again = (await post(port, '/v1/chat/completions', chatBody())).json();
      assert.equal(again.choices[0].message.content, content);
    });

    await t.test('answer without sources and forced answers', async () => {
      await reset();
      const body = chatBody({ messages: [{ role: 'user', content: 'hello' }] });
      const plain = (await post(port, '/v1/chat/completions', body)).json().choices[0].message.content;
      assert.equal(plain, 'This is a deterministic answer from the fake inference server.');
      const one = chatBody({ messages: [{ role: 'user', content: 'see [4] only' }] });
      assert.match((await post(port, '/v1/chat/completions', one)).json().choices[0].message.content, /source \[4\]/);

      const forced = `Forced answer ${NON_ASCII}`;
      assert.equal((await post(port, '/_fake/answer', { content: forced })).status, 200);
      assert.equal((await post(port, '/v1/chat/completions', body)).json().choices[0].message.content, forced);
      const s = await post(port, '/v1/chat/completions', chatBody({ stream: true }));
      assert.equal(deltaText(parseSse(s.chunks).events), forced);
      assert.equal((await request(port, { method: 'DELETE', path: '/_fake/answer' })).status, 200);
      assert.equal((await post(port, '/v1/chat/completions', body)).json().choices[0].message.content, plain);
    });

    await t.test('max_tokens truncates with finish_reason length', async () => {
      const c = (await post(port, '/v1/chat/completions', chatBody({ max_tokens: 3 }))).json();
      assert.equal(c.choices[0].finish_reason, 'length');
      assert.equal(c.usage.completion_tokens, 3);
      assert.equal(c.choices[0].message.content, 'According to the');
    });

    await t.test('streaming chunk sequence matches the non-streaming answer', async () => {
      const full = (await post(port, '/v1/chat/completions', chatBody())).json();
      const r = await post(port, '/v1/chat/completions', chatBody({ stream: true }));
      assert.equal(r.status, 200);
      assert.match(r.headers['content-type'], /^text\/event-stream/);
      const sse = parseSse(r.chunks);
      const events = sse.events;
      assert.equal(sse.pending.length, 0, 'no trailing partial event');
      assert.equal(events[events.length - 1], '[DONE]');
      const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
      assert.ok(chunks.length >= 4);
      for (const c of chunks) {
        assert.equal(c.object, 'chat.completion.chunk');
        assert.equal(c.id, chunks[0].id);
        assert.equal(c.model, 'fake-chat-model');
        assert.equal(c.choices.length, 1);
        assert.ok(!('usage' in c), 'no usage without include_usage');
      }
      assert.equal(chunks[0].choices[0].delta.role, 'assistant');
      assert.equal(chunks[0].choices[0].finish_reason, null);
      const last = chunks[chunks.length - 1];
      assert.equal(last.choices[0].finish_reason, 'stop');
      assert.deepEqual(last.choices[0].delta, {});
      for (const c of chunks.slice(1, -1)) {
        assert.equal(c.choices[0].finish_reason, null);
        assert.equal(typeof c.choices[0].delta.content, 'string');
      }
      assert.equal(deltaText(events), full.choices[0].message.content);
    });

    await t.test('stream_options.include_usage', async () => {
      const full = (await post(port, '/v1/chat/completions', chatBody())).json();
      const r = await post(port, '/v1/chat/completions', chatBody({ stream: true, stream_options: { include_usage: true } }));
      const events = parseSse(r.chunks).events;
      assert.equal(events[events.length - 1], '[DONE]');
      const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
      const usageChunk = chunks[chunks.length - 1];
      assert.deepEqual(usageChunk.choices, []);
      assert.deepEqual(usageChunk.usage, full.usage);
      for (const c of chunks.slice(0, -1)) assert.equal(c.usage, null);
      assert.equal(chunks[chunks.length - 2].choices[0].finish_reason, 'stop');
      const bad = await post(port, '/v1/chat/completions', chatBody({ stream_options: { include_usage: true } }));
      assert.equal(bad.status, 400);
      assertErrorObject(bad.json());
    });

    await t.test('embeddings: shape, dimensions, normalisation, determinism', async () => {
      const inputs = [
        'The alpha handbook describes retrieval pipelines.',
        'The alpha handbook describes retrieval pipeline stages.',
        'Bananas grow in warm tropical climates.',
      ];
      const r = await post(port, '/v1/embeddings', { model: 'fake-embedding-model', input: inputs });
      assert.equal(r.status, 200);
      const e = r.json();
      assert.equal(e.object, 'list');
      assert.equal(e.model, 'fake-embedding-model');
      assert.equal(e.data.length, 3);
      e.data.forEach((d, i) => {
        assert.equal(d.object, 'embedding');
        assert.equal(d.index, i);
        assert.equal(d.embedding.length, 384);
        const norm = Math.sqrt(cosine(d.embedding, d.embedding));
        assert.ok(Math.abs(norm - 1) < 1e-5, `norm ${norm}`);
      });
      assert.ok(e.usage.prompt_tokens > 0);
      assert.equal(e.usage.total_tokens, e.usage.prompt_tokens);
      const [a, b, c] = e.data.map((d) => d.embedding);
      assert.ok(cosine(a, b) > 0.6, `similar texts: ${cosine(a, b)}`);
      assert.ok(cosine(a, b) > cosine(a, c) + 0.3, `dissimilar texts: ${cosine(a, c)}`);

      const single = (await post(port, '/v1/embeddings', { model: 'm', input: inputs[0] })).json();
      assert.equal(single.data.length, 1);
      assert.deepEqual(single.data[0].embedding, a);

      const small = (await post(port, '/v1/embeddings', { model: 'm', input: inputs[0], dimensions: 64 })).json();
      assert.equal(small.data[0].embedding.length, 64);
      assert.ok(Math.abs(cosine(small.data[0].embedding, small.data[0].embedding) - 1) < 1e-5);

      const b64 = (await post(port, '/v1/embeddings', { model: 'm', input: inputs[0], dimensions: 64, encoding_format: 'base64' })).json();
      const raw = Buffer.from(b64.data[0].embedding, 'base64');
      assert.equal(raw.length, 64 * 4);
      for (let i = 0; i < 64; i++) assert.equal(raw.readFloatLE(i * 4), small.data[0].embedding[i]);

      const bad = await post(port, '/v1/embeddings', { model: 'm', input: 'x', dimensions: 0 });
      assert.equal(bad.status, 400);
      assert.equal(bad.json().error.param, 'dimensions');
      const missing = await post(port, '/v1/embeddings', { model: 'm' });
      assert.equal(missing.status, 400);
      assert.equal(missing.json().error.param, 'input');
    });

    await t.test('embeddings: Azure, Ollama and TEI shapes give the /v1 vectors', async () => {
      await reset();
      const text = 'The alpha handbook describes retrieval pipelines.';
      const ref = (await post(port, '/v1/embeddings', { model: 'm', input: [text] })).json().data[0].embedding;
      const azurePath = '/openai/deployments/dep/embeddings?api-version=2024-10-21';
      const azure = await request(port, { method: 'POST', path: azurePath, headers: { 'api-key': 'k' }, body: { input: [text] } });
      assert.equal(azure.status, 200);
      assert.equal(azure.json().model, 'dep-model');
      assert.deepEqual(azure.json().data[0].embedding, ref);
      const noKey = await request(port, { method: 'POST', path: azurePath, headers: { authorization: 'Bearer k' }, body: { input: [text] } });
      assert.equal(noKey.status, 401);
      const noVersion = await request(port, { method: 'POST', path: '/openai/deployments/dep/embeddings', headers: { 'api-key': 'k' }, body: { input: [text] } });
      assert.equal(noVersion.status, 404);
      assert.equal(noVersion.json().error.message, 'Resource not found');
      const ollama = await post(port, '/api/embed', { model: 'fake-embedding-model', input: [text, text] });
      assert.equal(ollama.status, 200);
      assert.deepEqual(ollama.json().embeddings, [ref, ref]);
      const unknown = await post(port, '/api/embed', { model: 'nope', input: [text] });
      assert.equal(unknown.status, 404);
      assert.match(unknown.json().error, /try pulling it first/);
      const tei = await post(port, '/embed', { inputs: [text], normalize: true, truncate: true });
      assert.equal(tei.status, 200);
      assert.deepEqual(tei.json(), [ref]);
      const raw = await post(port, '/embed', { inputs: [text], normalize: false });
      assert.ok(Math.abs(Math.sqrt(cosine(raw.json()[0], raw.json()[0])) - 3) < 1e-5);
      const big = await post(port, '/embed', { inputs: new Array(33).fill('x') });
      assert.equal(big.status, 422);
      assert.equal(big.json().error_type, 'Validation');
      const paths = JSON.parse((await request(port, { path: '/_fake/requests' })).text).map((r) => r.path);
      assert.ok(paths.includes('/api/embed') && paths.includes('/embed') && paths.includes('/openai/deployments/dep/embeddings'));
    });

    await t.test('embeddings: llama.cpp and vLLM flavours, hostile answers', async () => {
      await reset();
      assert.equal((await post(port, '/_fake/embed_shape', { flavor: 'llamacpp', dim: 8 })).status, 200);
      const l = (await post(port, '/v1/embeddings', { model: 'm', input: ['a b'], dimensions: 64 })).json();
      assert.equal(l.usage, undefined);
      assert.equal(l.data[0].embedding.length, 8);
      await post(port, '/_fake/embed_shape', { flavor: 'vllm', dim: 8 });
      const v = (await post(port, '/v1/embeddings', { model: 'm', input: ['a b'] })).json();
      assert.equal(v.usage.completion_tokens, 0);
      assert.match(v.id, /^embd-/);
      const refused = await post(port, '/v1/embeddings', { model: 'm', input: ['a b'], dimensions: 4 });
      assert.equal(refused.status, 400);
      assert.match(refused.json().error.message, /matryoshka/);
      await post(port, '/_fake/embed_shape', { hostile: 'nan', dim: 4 });
      const nan = await post(port, '/embed', { inputs: ['a', 'b'] });
      assert.match(nan.text, /^\[\[NaN,/);
      await post(port, '/_fake/embed_shape', { hostile: 'wrong_count', dim: 4 });
      assert.equal((await post(port, '/api/embed', { model: 'fake-embedding-model', input: ['a', 'b'] })).json().embeddings.length, 1);
      await post(port, '/_fake/embed_shape', { hostile: 'ragged', dim: 4 });
      const ragged = (await post(port, '/embed', { inputs: ['a', 'b'] })).json();
      assert.deepEqual(ragged.map((x) => x.length), [4, 3]);
      await post(port, '/_fake/embed_shape', { hostile: 'huge' });
      assert.ok((await post(port, '/v1/embeddings', { model: 'm', input: ['a'] })).text.length > 8 * 1024 * 1024);
      assert.equal((await post(port, '/_fake/embed_shape', { hostile: 'bogus' })).status, 400);
      await reset();
      assert.deepEqual((await request(port, { path: '/_fake/embed_shape' })).json(), { flavor: 'openai', hostile: null, dim: 384 });
    });

    await t.test('embeddings: zero vectors for named inputs', async () => {
      await reset();
      const norm = (v) => Math.sqrt(cosine(v, v));
      const before = (await post(port, '/v1/embeddings', { model: 'm', input: ['x', 'y'] })).json();
      assert.ok(Math.abs(norm(before.data[0].embedding) - 1) < 1e-5, 'an ordinary vector for "x" by default');
      assert.equal((await post(port, '/_fake/embeddings', { zero: ['x', ' ! '] })).status, 200);
      assert.deepEqual((await request(port, { path: '/_fake/embeddings' })).json().zero, ['x', '!']);
      const r = (await post(port, '/v1/embeddings', { model: 'm', input: ['\n\nx', 'y', '!'] })).json();
      assert.ok(r.data[0].embedding.every((v) => v === 0));
      assert.ok(r.data[2].embedding.every((v) => v === 0));
      assert.deepEqual(r.data[1].embedding, before.data[1].embedding);
      assert.equal((await post(port, '/_fake/embeddings', { zero: 'x' })).status, 400);
      assert.equal((await request(port, { method: 'DELETE', path: '/_fake/embeddings' })).status, 200);
      const after = (await post(port, '/v1/embeddings', { model: 'm', input: 'x' })).json();
      assert.deepEqual(after.data[0].embedding, before.data[0].embedding);
      await post(port, '/_fake/embeddings', { zero: ['x'] });
      await reset();
      assert.deepEqual((await request(port, { path: '/_fake/embeddings' })).json().zero, []);
    });

    await t.test('models list', async () => {
      const r = await request(port, { path: '/v1/models' });
      assert.equal(r.status, 200);
      const m = r.json();
      assert.equal(m.object, 'list');
      assert.ok(m.data.length >= 1);
      for (const d of m.data) {
        assert.deepEqual(Object.keys(d).sort(), ['created', 'id', 'object', 'owned_by']);
        assert.equal(d.object, 'model');
      }
      const one = await request(port, { path: `/v1/models/${m.data[0].id}` });
      assert.equal(one.json().id, m.data[0].id);
      const none = await request(port, { path: '/v1/models/no-such-model' });
      assert.equal(none.status, 404);
      assertErrorObject(none.json());
    });

    await t.test('400 on bad JSON and missing fields, 404 on unknown routes', async () => {
      const bad = await post(port, '/v1/chat/completions', '{"model": "m", "messages": [');
      assert.equal(bad.status, 400);
      assertErrorObject(bad.json());
      assert.equal(bad.json().error.type, 'invalid_request_error');
      const noMessages = await post(port, '/v1/chat/completions', { model: 'm' });
      assert.equal(noMessages.status, 400);
      assert.equal(noMessages.json().error.param, 'messages');
      const noModel = await post(port, '/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }] });
      assert.equal(noModel.status, 400);
      assert.equal(noModel.json().error.param, 'model');
      const empty = await post(port, '/v1/embeddings', '');
      assert.equal(empty.status, 400);
      const unknown = await request(port, { path: '/v1/nope' });
      assert.equal(unknown.status, 404);
      assertErrorObject(unknown.json());
      const wrongMethod = await request(port, { path: '/v1/chat/completions' });
      assert.equal(wrongMethod.status, 405);
      assertErrorObject(wrongMethod.json());
      const badFault = await post(port, '/v1/chat/completions', chatBody(), { 'X-Fake-Fault': 'nonsense' });
      assert.equal(badFault.status, 400);
    });

    await t.test('fault 500', async () => {
      const r = await post(port, '/v1/chat/completions', chatBody(), { 'X-Fake-Fault': '500' });
      assert.equal(r.status, 500);
      assertErrorObject(r.json());
      assert.equal(r.json().error.type, 'server_error');
      const e = await post(port, '/v1/embeddings', { model: 'm', input: 'x' }, { 'X-Fake-Fault': '500' });
      assert.equal(e.status, 500);
    });

    await t.test('fault 429 with Retry-After', async () => {
      await reset();
      const r = await post(port, '/v1/chat/completions', chatBody(), { 'X-Fake-Fault': '429' });
      assert.equal(r.status, 429);
      assert.equal(r.headers['retry-after'], '1');
      assertErrorObject(r.json());
      assert.equal(r.json().error.code, 'rate_limit_exceeded');
      const h = await post(port, '/v1/chat/completions', chatBody(), { 'X-Fake-Fault': '429', 'X-Fake-Retry-After': '5' });
      assert.equal(h.headers['retry-after'], '5');
      assert.equal((await post(port, '/_fake/faults', { mode: '429', retry_after: 7 })).status, 200);
      const s = await post(port, '/v1/chat/completions', chatBody());
      assert.equal(s.status, 429);
      assert.equal(s.headers['retry-after'], '7');
      assert.equal((await post(port, '/v1/chat/completions', chatBody())).status, 200);
    });

    await t.test('fault times counting', async () => {
      await reset();
      let r = await post(port, '/_fake/faults', { mode: '500', times: 2 });
      assert.equal(r.status, 200);
      assert.deepEqual(r.json().fault, { mode: '500', times: 2, retry_after: 1, stall_ms: 30000 });
      // Control and models requests do not consume it.
      assert.equal((await request(port, { path: '/v1/models' })).status, 200);
      assert.equal((await post(port, '/v1/chat/completions', chatBody())).status, 500);
      assert.equal((await request(port, { path: '/_fake/faults' })).json().fault.times, 1);
      assert.equal((await post(port, '/v1/embeddings', { model: 'm', input: 'x' })).status, 500);
      assert.equal((await request(port, { path: '/_fake/faults' })).json().fault, null);
      assert.equal((await post(port, '/v1/chat/completions', chatBody())).status, 200);

      await post(port, '/_fake/faults', { mode: '500' });
      assert.equal((await post(port, '/v1/chat/completions', chatBody())).status, 500);
      assert.equal((await post(port, '/v1/chat/completions', chatBody())).status, 200);

      await post(port, '/_fake/faults', { mode: '500', times: -1 });
      for (let i = 0; i < 4; i++) {
        assert.equal((await post(port, '/v1/chat/completions', chatBody())).status, 500);
      }
      assert.equal((await request(port, { method: 'DELETE', path: '/_fake/faults' })).status, 200);
      assert.equal((await post(port, '/v1/chat/completions', chatBody())).status, 200);

      const bad = await post(port, '/_fake/faults', { mode: 'bogus' });
      assert.equal(bad.status, 400);
    });

    await t.test('stall_first_byte is detected by a client timeout', async () => {
      await reset();
      const t0 = Date.now();
      await assert.rejects(
        post(port, '/v1/chat/completions', chatBody(), { 'X-Fake-Fault': 'stall_first_byte' }, { timeout: 300 }),
        (err) => err.code === 'CLIENT_TIMEOUT' && err.chunks.length === 0,
      );
      assert.ok(Date.now() - t0 < 2000);
      // A short configured stall delays and then answers normally.
      await post(port, '/_fake/faults', { mode: 'stall_first_byte', stall_ms: 250 });
      const t1 = Date.now();
      const r = await post(port, '/v1/chat/completions', chatBody());
      assert.ok(Date.now() - t1 >= 200, 'response was delayed');
      assert.equal(r.status, 200);
      assert.equal(r.json().object, 'chat.completion');
      // The server is still responsive.
      assert.equal((await request(port, { path: '/_fake/health' })).status, 200);
    });

    await t.test('stall_mid_stream', async () => {
      // Default stall: two events arrive, then nothing.
      const parser = new SseParser();
      await assert.rejects(
        post(port, '/v1/chat/completions', chatBody({ stream: true }), { 'X-Fake-Fault': 'stall_mid_stream' }, {
          timeout: 600,
          onChunk: (c) => parser.push(c),
        }),
        (err) => err.code === 'CLIENT_TIMEOUT',
      );
      assert.equal(parser.events.length, 2);
      assert.equal(JSON.parse(parser.events[0]).choices[0].delta.role, 'assistant');
      assert.equal(typeof JSON.parse(parser.events[1]).choices[0].delta.content, 'string');

      // Short stall: the stream resumes and completes.
      const full = (await post(port, '/v1/chat/completions', chatBody())).json().choices[0].message.content;
      const r = await post(port, '/v1/chat/completions', chatBody({ stream: true }), {
        'X-Fake-Fault': 'stall_mid_stream',
        'X-Fake-Stall-Ms': '400',
      });
      const events = parseSse(r.chunks).events;
      assert.equal(events[events.length - 1], '[DONE]');
      assert.equal(deltaText(events), full);
      assert.ok(r.times[r.times.length - 1] - r.times[0] >= 350, 'stream paused');
    });

    await t.test('malformed_json', async () => {
      const r = await post(port, '/v1/chat/completions', chatBody(), { 'X-Fake-Fault': 'malformed_json' });
      assert.equal(r.status, 200);
      assert.match(r.headers['content-type'], /^application\/json/);
      assert.throws(() => r.json(), SyntaxError);
      const e = await post(port, '/v1/embeddings', { model: 'm', input: 'x' }, { 'X-Fake-Fault': 'malformed_json' });
      assert.throws(() => e.json(), SyntaxError);

      const s = await post(port, '/v1/chat/completions', chatBody({ stream: true }), { 'X-Fake-Fault': 'malformed_json' });
      assert.equal(s.status, 200);
      const events = parseSse(s.chunks).events;
      assert.equal(events[events.length - 1], '[DONE]');
      const bad = events.slice(0, -1).filter((ev) => {
        try {
          JSON.parse(ev);
          return false;
        } catch (_) {
          return true;
        }
      });
      assert.ok(bad.length >= 1, 'an event with invalid JSON data');
    });

    await t.test('reset_mid_stream gives a connection reset', async () => {
      await assert.rejects(
        post(port, '/v1/chat/completions', chatBody({ stream: true }), { 'X-Fake-Fault': 'reset_mid_stream' }, { timeout: 5000 }),
        (err) => {
          assert.equal(err.code, 'ECONNRESET');
          assert.ok(!Buffer.concat(err.chunks).toString('utf8').includes('[DONE]'));
          return true;
        },
      );
      await assert.rejects(
        post(port, '/v1/chat/completions', chatBody(), { 'X-Fake-Fault': 'reset_mid_stream' }, { timeout: 5000 }),
        (err) => err.code === 'ECONNRESET',
      );
      assert.equal((await request(port, { path: '/_fake/health' })).status, 200);
    });

    await t.test('split_events reassembles to the right UTF-8 text', async () => {
      const expected = (await post(port, '/v1/chat/completions', chatBody(), { 'X-Fake-Fault': 'split_events' }))
        .json().choices[0].message.content;
      assert.ok(expected.includes(NON_ASCII));
      const normal = (await post(port, '/v1/chat/completions', chatBody())).json().choices[0].message.content;
      assert.equal(expected, `${normal} (${NON_ASCII})`);

      const r = await post(port, '/v1/chat/completions', chatBody({ stream: true }), { 'X-Fake-Fault': 'split_events' });
      assert.equal(r.status, 200);
      assert.ok(r.chunks.length > 20, `arrived in many pieces (${r.chunks.length})`);
      assert.ok(r.chunks.slice(0, -1).some(endsMidChar), 'a piece ends inside a multi-byte character');
      assert.ok(r.chunks.some((c) => /(^|\n)da$/.test(c.toString('latin1'))), 'a piece ends inside "data:"');
      const sse = parseSse(r.chunks);
      assert.ok(sse.comments >= 2, 'keep-alive comments present');
      assert.equal(sse.events[sse.events.length - 1], '[DONE]');
      assert.equal(deltaText(sse.events), expected);
      assert.ok(!deltaText(sse.events).includes('\ufffd'));
    });

    await t.test('requests are recorded', async () => {
      assert.equal((await request(port, { method: 'DELETE', path: '/_fake/requests' })).status, 200);
      assert.deepEqual((await request(port, { path: '/_fake/requests' })).json(), []);
      await post(port, '/v1/chat/completions', chatBody(), { 'X-Test-Marker': 'one' });
      await post(port, '/v1/embeddings', '{broken', { 'X-Test-Marker': 'two' });
      await post(port, '/v1/chat/completions', chatBody(), { 'X-Fake-Fault': '500' });
      const recs = (await request(port, { path: '/_fake/requests' })).json();
      assert.equal(recs.length, 3, 'control requests are not recorded');
      assert.equal(recs[0].method, 'POST');
      assert.equal(recs[0].path, '/v1/chat/completions');
      assert.equal(recs[0].headers['x-test-marker'], 'one');
      assert.deepEqual(recs[0].body, chatBody());
      assert.ok(!Number.isNaN(Date.parse(recs[0].time)));
      assert.equal(recs[1].body, null);
      assert.equal(recs[1].raw_body, '{broken');
      assert.equal(recs[2].fault, '500');
      assert.equal(recs[0].fault, null);

      const lines = fs.readFileSync(recordFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      const last = lines.slice(-3);
      assert.deepEqual(last.map((l) => l.seq), recs.map((l) => l.seq));
      assert.equal(last[2].fault, '500');
      assert.equal(last[0].headers['x-test-marker'], 'one');
    });
  } finally {
    await srv.stop();
    fs.rmSync(path.dirname(recordFile), { recursive: true, force: true });
  }
});

suite('--api-key requires a matching key on /v1 routes', {}, async (t) => {
  const srv = await startServer(['--api-key', 'sekret']);
  try {
    const port = srv.port;
    const none = await post(port, '/v1/chat/completions', chatBody());
    assert.equal(none.status, 401);
    assertErrorObject(none.json());
    assert.equal(none.json().error.code, 'invalid_api_key');
    const wrong = await request(port, { path: '/v1/models', headers: { Authorization: 'Bearer nope' } });
    assert.equal(wrong.status, 401);
    const bearer = await post(port, '/v1/chat/completions', chatBody(), { Authorization: 'Bearer sekret' });
    assert.equal(bearer.status, 200);
    const azure = await request(port, { path: '/v1/models', headers: { 'api-key': 'sekret' } });
    assert.equal(azure.status, 200);
    assert.equal((await request(port, { path: '/_fake/health' })).status, 200);
  } finally {
    await srv.stop();
  }
});

suite('SIGTERM stops the server promptly with a stalled connection open', {}, async () => {
  const srv = await startServer();
  const stalled = post(srv.port, '/v1/chat/completions', chatBody({ stream: true }), { 'X-Fake-Fault': 'stall_first_byte' }, { timeout: 10000 });
  stalled.catch(() => {});
  // Wait until the server has the stalled request.
  const end = Date.now() + 5000;
  for (;;) {
    const recs = (await request(srv.port, { path: '/_fake/requests' })).json();
    if (recs.length > 0) break;
    assert.ok(Date.now() < end, 'stalled request never arrived');
    await sleep(20);
  }
  const t0 = Date.now();
  srv.proc.kill('SIGTERM');
  const exit = await waitExit(srv.proc, 2000);
  const elapsed = Date.now() - t0;
  if (exit === null) srv.proc.kill('SIGKILL');
  assert.ok(exit !== null, 'server exited within 2 s');
  assert.equal(exit.code, 0);
  assert.ok(elapsed < 2000);
  await assert.rejects(stalled, (err) => err.code !== 'CLIENT_TIMEOUT');
});

// ---------------------------------------------------------------------------
// Rerank routes: both wire shapes, the scoring tests predict, recording,
// faults and the wrong replies of /_fake/rerank

suite('rerank routes', {}, async (t) => {
  const srv = await startServer(['--api-key', 'rk']);
  const port = srv.port;
  const auth = { Authorization: 'Bearer rk' };
  const docs = ['a dog', 'the red fox', 'red'];
  try {
    await t.test('cohere shape: sorted by word overlap, ties by index, top_n', async () => {
      const r = await post(port, '/v1/rerank', { model: 'm', query: 'Red fox', documents: docs, top_n: 2 }, auth);
      assert.equal(r.status, 200);
      const j = r.json();
      assert.deepEqual(j.results, [{ index: 1, relevance_score: 1 }, { index: 2, relevance_score: 0.5 }]);
      const all = (await post(port, '/v1/rerank', { model: 'm', query: 'cat', documents: docs }, auth)).json();
      assert.deepEqual(all.results.map((x) => x.index), [0, 1, 2]);
    });

    await t.test('tei shape and its key', async () => {
      const r = await post(port, '/rerank', { query: 'red fox', texts: docs, raw_scores: false }, auth);
      assert.equal(r.status, 200);
      assert.deepEqual(r.json(), [{ index: 1, score: 1 }, { index: 2, score: 0.5 }, { index: 0, score: 0 }]);
      assert.equal((await post(port, '/rerank', { query: 'x', texts: docs })).status, 401);
    });

    await t.test('bad requests are 400 with OpenAI error objects', async () => {
      for (const [p, body] of [
        ['/v1/rerank', { query: 'x', documents: docs }],
        ['/v1/rerank', { model: 'm', query: 'x', documents: [] }],
        ['/v1/rerank', { model: 'm', query: 'x', documents: [1] }],
        ['/v1/rerank', { model: 'm', query: 'x', documents: docs, top_n: 0 }],
        ['/rerank', { query: 1, texts: docs }],
        ['/rerank', { query: 'x', texts: docs, raw_scores: 'no' }],
      ]) {
        const r = await post(port, p, body, auth);
        assert.equal(r.status, 400, `${p} ${JSON.stringify(body)}`);
        assertErrorObject(r.json());
      }
    });

    await t.test('recorded, faults apply, wrong replies', async () => {
      await post(port, '/_fake/reset', {});
      await post(port, '/rerank', { query: 'q', texts: ['only this'] }, auth);
      const recs = (await request(port, { path: '/_fake/requests' })).json();
      assert.equal(recs.length, 1);
      assert.deepEqual(recs[0].body.texts, ['only this']);
      await post(port, '/_fake/faults', { mode: '500' });
      assert.equal((await post(port, '/v1/rerank', { model: 'm', query: 'q', documents: docs }, auth)).status, 500);
      const want = {
        out_of_range_index: (j) => j.results.some((x) => x.index === 3),
        negative_index: (j) => j.results.some((x) => x.index === -1),
        duplicate_index: (j) => new Set(j.results.map((x) => x.index)).size < j.results.length,
        missing_index: (j) => j.results.length === 2,
        string_score: (j) => j.results.every((x) => typeof x.relevance_score === 'string'),
        huge_array: (j) => j.results.length === 100000,
      };
      for (const [reply, check] of Object.entries(want)) {
        assert.equal((await post(port, '/_fake/rerank', { reply })).status, 200);
        const r = await post(port, '/v1/rerank', { model: 'm', query: 'red', documents: docs }, auth);
        assert.ok(check(r.json()), reply);
        // times defaults to 1
        const ok = (await post(port, '/v1/rerank', { model: 'm', query: 'red', documents: docs }, auth)).json();
        assert.equal(ok.results.length, 3);
      }
      await post(port, '/_fake/rerank', { reply: 'nan_score' });
      const nan = await post(port, '/rerank', { query: 'red', texts: docs }, auth);
      assert.match(nan.text, /"score":NaN/);
      assert.throws(() => JSON.parse(nan.text));
      assert.equal((await post(port, '/_fake/rerank', { reply: 'nope' })).status, 400);
    });
  } finally {
    await srv.stop();
  }
});

const fixtureSkip = process.platform === 'win32' || !fs.existsSync(FIXTURE_SH) ? 'needs bash and the fixture script' : false;

// Each fixture run gets its own TMPDIR, removed once the run has exited, so
// that even a fixture killed with SIGKILL leaves nothing behind.
const fixtureTmpDirs = [];

function runFixture(args) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fake-inf-fixture-test-'));
  fixtureTmpDirs.push(tmp);
  const proc = spawn('bash', [FIXTURE_SH, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: Object.assign({}, process.env, { NODE: process.execPath, TMPDIR: tmp }),
  });
  proc.once('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
  const out = { stdout: '', stderr: '' };
  proc.stdout.on('data', (d) => {
    out.stdout += d;
  });
  proc.stderr.on('data', (d) => {
    out.stderr += d;
  });
  return { proc, out };
}

suite('fixture script exports the URL, propagates status and stops the server', { skip: fixtureSkip }, async () => {
  const script = [
    "const http = require('node:http');",
    'const url = process.env.QUARRY_TEST_INFERENCE_URL;',
    "http.get(url + '/_fake/health', (res) => {",
    "  let b = ''; res.on('data', (d) => { b += d; });",
    "  res.on('end', () => { console.log(JSON.stringify({ url, pid: process.env.QUARRY_TEST_INFERENCE_PID, status: res.statusCode, body: b })); process.exit(3); });",
    '});',
  ].join('\n');
  const { proc, out } = runFixture(['--model', 'x', '--', process.execPath, '-e', script]);
  const exit = await waitExit(proc, 15000);
  assert.ok(exit, 'fixture finished');
  assert.equal(exit.code, 3, out.stderr);
  const info = JSON.parse(out.stdout.trim());
  assert.match(info.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(info.status, 200);
  assert.equal(info.body, 'ok');
  assert.ok(await waitGone(Number(info.pid), 2000), 'server stopped');

  const usage = runFixture(['--port', '0']);
  const ue = await waitExit(usage.proc, 5000);
  assert.equal(ue.code, 2);
});

suite('fixture script stops server and command when it is terminated', { skip: fixtureSkip }, async () => {
  const script = "console.log(process.env.QUARRY_TEST_INFERENCE_PID + ' ' + process.pid); setInterval(() => {}, 1000);";
  // node runs as a grandchild (under sh), which must be stopped too.
  const { proc, out } = runFixture(['--', 'sh', '-c', '"$0" -e "$1"; echo after', process.execPath, script]);
  const end = Date.now() + 10000;
  while (!/^\d+ \d+\n/.test(out.stdout)) {
    assert.ok(Date.now() < end, `command did not start: ${out.stderr}`);
    await sleep(20);
  }
  const [serverPid, cmdPid] = out.stdout.trim().split(' ').map(Number);
  proc.kill('SIGTERM');
  const exit = await waitExit(proc, 5000);
  try {
    assert.ok(exit, 'fixture exited');
    assert.equal(exit.code, 143);
    assert.ok(await waitGone(serverPid, 2000), 'server stopped');
    assert.ok(await waitGone(cmdPid, 2000), 'command (a grandchild) stopped');
  } finally {
    for (const pid of [serverPid, cmdPid]) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch (_) {
        // already gone
      }
    }
    if (!exit) proc.kill('SIGKILL');
  }
});

suite('server exits when the fixture is killed with SIGKILL (--watch-pid)', { skip: fixtureSkip }, async () => {
  const script = "console.log(process.env.QUARRY_TEST_INFERENCE_PID + ' ' + process.pid); setTimeout(() => {}, 20000);";
  const { proc, out } = runFixture(['--', process.execPath, '-e', script]);
  const end = Date.now() + 10000;
  while (!/^\d+ \d+\n/.test(out.stdout)) {
    assert.ok(Date.now() < end, `command did not start: ${out.stderr}`);
    await sleep(20);
  }
  const [serverPid, cmdPid] = out.stdout.trim().split(' ').map(Number);
  proc.kill('SIGKILL');
  try {
    assert.ok(await waitGone(serverPid, 3000), 'server exited after its watched pid died');
  } finally {
    for (const pid of [serverPid, cmdPid]) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch (_) {
        // already gone
      }
    }
  }
});

test('fake inference server', async (t) => {
  try {
    for (const s of suites) await t.test(s.name, s.options, s.fn);
  } finally {
    for (const dir of fixtureTmpDirs) fs.rmSync(dir, { recursive: true, force: true });
  }
});
