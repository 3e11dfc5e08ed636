#!/usr/bin/env node
// Fake OpenAI-compatible inference server for quarry's tests.
//
// Only node: built-ins are used; runs on Node 18 and later.
// See README.md in this directory for the routes, control API and fault modes.
'use strict';

const http = require('node:http');
const fs = require('node:fs');

const FAULT_MODES = [
  '500',
  '429',
  'stall_first_byte',
  'stall_mid_stream',
  'malformed_json',
  'reset_mid_stream',
  'split_events',
];
const DEFAULT_STALL_MS = 30000;
const DEFAULT_RETRY_AFTER = 1;
const DEFAULT_DIMENSIONS = 384;
const MAX_DIMENSIONS = 8192;
const MAX_BODY_BYTES = 16 * 1024 * 1024;
const MODEL_CREATED = 1700000000;
const NON_ASCII_SAMPLE = 'café – 東京 🙂';
const NO_SOURCE_ANSWER = 'This is a deterministic answer from the fake inference server.';

// ---------------------------------------------------------------------------
// Command line

function usage() {
  return [
    'usage: node server.js [--port N] [--host ADDR] [--record FILE] [--api-key KEY]',
    '                      [--model ID]... [--watch-pid PID]',
    '',
    '  --port N        port to listen on; 0 (default) picks a free port',
    '  --host ADDR     address to bind (default 127.0.0.1)',
    '  --record FILE   append every received request as a JSON line to FILE',
    '  --api-key KEY   require "Authorization: Bearer KEY" or "api-key: KEY" on /v1 routes',
    '  --model ID      model id listed by GET /v1/models (repeatable; replaces the defaults)',
    '  --watch-pid PID exit when process PID no longer exists',
    '',
    'Prints "listening http://HOST:PORT" on stdout once ready.',
  ].join('\n');
}

function die(msg) {
  process.stderr.write(`fake-inference: ${msg}\n${usage()}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    port: 0,
    host: '127.0.0.1',
    record: null,
    apiKey: null,
    models: [],
    watchPid: null,
  };
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
      case '--record':
        opts.record = value();
        break;
      case '--api-key':
        opts.apiKey = value();
        break;
      case '--model':
        opts.models.push(value());
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
  if (opts.models.length === 0) opts.models = ['fake-chat-model', 'fake-embedding-model'];
  return opts;
}

// ---------------------------------------------------------------------------
// State

const state = {
  seq: 0,
  requests: [],
  fault: null, // { mode, remaining (-1 = until reset), retry_after, stall_ms }
  answer: null,
  zeroInputs: new Set(), // embedding inputs answered with an all-zero vector
  embedShape: null, // /_fake/embed_shape: { flavor, hostile, dim } or null (see embedShapeOf)
};

let opts;
let shuttingDown = false;
const sockets = new Set();

function faultView() {
  if (!state.fault) return null;
  const f = state.fault;
  return { mode: f.mode, times: f.remaining, retry_after: f.retry_after, stall_ms: f.stall_ms };
}

// Takes one use of the configured fault, if any.
function consumeFault() {
  const f = state.fault;
  if (!f) return null;
  const taken = { mode: f.mode, retry_after: f.retry_after, stall_ms: f.stall_ms };
  if (f.remaining > 0) {
    f.remaining -= 1;
    if (f.remaining === 0) state.fault = null;
  }
  return taken;
}

// ---------------------------------------------------------------------------
// Text helpers

function messageText(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((part) => {
        if (typeof part === 'string') return part;
        if (part && typeof part === 'object' && typeof part.text === 'string') return part.text;
        return '';
      })
      .join('\n');
  }
  return '';
}

function wordsOf(text) {
  return text.toLowerCase().match(/[\p{L}\p{N}]+/gu) || [];
}

// Rough, deterministic token count: words plus punctuation marks.
function countTokens(text) {
  const m = text.match(/[\p{L}\p{N}]+|[^\s\p{L}\p{N}]/gu);
  return m ? m.length : 0;
}

// Splits text into stream deltas whose concatenation is exactly the text.
function deltaPieces(text) {
  return text.match(/\s*\S+|\s+$/gu) || [];
}

function isAscii(text) {
  return /^[\x00-\x7f]*$/.test(text);
}

function sourceMarkers(text) {
  const seen = [];
  const re = /\[(\d+)\]/g;
  let m;
  while ((m = re.exec(text)) !== null) {
    const n = Number(m[1]);
    if (!seen.includes(n)) seen.push(n);
  }
  return seen;
}

function defaultAnswer(messages) {
  let lastUser = null;
  let lastSystem = null;
  for (const msg of messages) {
    if (!msg || typeof msg !== 'object') continue;
    if (msg.role === 'user') lastUser = msg;
    else if (msg.role === 'system' || msg.role === 'developer') lastSystem = msg;
  }
  const text = [lastSystem, lastUser]
    .filter(Boolean)
    .map((m) => messageText(m.content))
    .join('\n');
  const markers = sourceMarkers(text);
  if (markers.length >= 2) {
    return `According to the sources [${markers[0]}] and [${markers[1]}], the fake inference server found the answer.`;
  }
  if (markers.length === 1) {
    return `According to the source [${markers[0]}], the fake inference server found the answer.`;
  }
  return NO_SOURCE_ANSWER;
}

// ---------------------------------------------------------------------------
// Embeddings: feature hashing over words, word bigrams and character trigrams,
// so texts sharing vocabulary get nearby vectors.

function fnv1a(str, seed) {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < str.length; i++) {
    h ^= str.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

function embed(text, dim) {
  const v = new Float64Array(dim);
  const add = (feature, weight) => {
    for (let k = 0; k < 3; k++) {
      const h = fnv1a(feature, k * 0x9e3779b1);
      const idx = h % dim;
      const sign = (h >>> 31) & 1 ? -1 : 1;
      v[idx] += sign * weight;
    }
  };
  const words = wordsOf(text);
  for (let i = 0; i < words.length; i++) {
    const w = words[i];
    add('w:' + w, 1.0);
    if (i + 1 < words.length) add('b:' + w + ' ' + words[i + 1], 0.5);
    const padded = '^' + w + '$';
    if (padded.length > 3) {
      for (let j = 0; j + 3 <= padded.length; j++) add('c:' + padded.slice(j, j + 3), 0.2);
    }
  }
  let norm = 0;
  for (let i = 0; i < dim; i++) norm += v[i] * v[i];
  norm = Math.sqrt(norm);
  const out = new Array(dim);
  if (norm === 0) {
    for (let i = 0; i < dim; i++) out[i] = 0;
    out[0] = 1; // empty text: a fixed unit vector
    return out;
  }
  for (let i = 0; i < dim; i++) out[i] = Math.fround(v[i] / norm);
  return out;
}

function embeddingToBase64(vec) {
  const buf = Buffer.alloc(vec.length * 4);
  for (let i = 0; i < vec.length; i++) buf.writeFloatLE(vec[i], i * 4);
  return buf.toString('base64');
}

// ---------------------------------------------------------------------------
// Response helpers

function errorObject(message, type, param, code) {
  return { error: { message, type, param: param === undefined ? null : param, code: code === undefined ? null : code } };
}

function sendRaw(res, status, headers, body) {
  if (res.headersSent || res.destroyed) return;
  const buf = Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
  res.writeHead(status, Object.assign({ 'Content-Length': buf.length }, headers));
  res.end(buf);
}

function sendJson(res, status, obj, headers) {
  sendRaw(res, status, Object.assign({ 'Content-Type': 'application/json' }, headers || {}), JSON.stringify(obj));
}

function sendError(res, status, message, type, param, code, headers) {
  sendJson(res, status, errorObject(message, type, param, code), headers);
}

function resetSocket(res) {
  const sock = res.socket;
  if (!sock) return;
  if (typeof sock.resetAndDestroy === 'function') {
    try {
      sock.resetAndDestroy();
      return;
    } catch (_) {
      // fall through
    }
  }
  sock.destroy();
}

// Runs fn after ms unless the response's connection closes first.
function afterDelay(res, ms, fn) {
  const onClose = () => clearTimeout(timer);
  const timer = setTimeout(() => {
    res.removeListener('close', onClose);
    if (!res.writableEnded && !(res.socket && res.socket.destroyed)) fn();
  }, ms);
  res.once('close', onClose);
}

// Byte offsets at which split_events cuts the output: a cycling set of small
// steps plus a cut inside every multi-byte UTF-8 character and every "data:".
function splitPieces(buf) {
  const cuts = new Set();
  const steps = [1, 3, 8, 2, 13, 5, 21, 4];
  let pos = 0;
  for (let i = 0; pos < buf.length; i++) {
    pos += steps[i % steps.length];
    if (pos < buf.length) cuts.add(pos);
  }
  for (let i = 0; i < buf.length; i++) {
    if (buf[i] >= 0xc0) {
      cuts.add(i + 1);
      if (buf[i] >= 0xf0) cuts.add(i + 3);
    }
  }
  let at = buf.indexOf('data:');
  while (at !== -1) {
    cuts.add(at + 2);
    at = buf.indexOf('data:', at + 1);
  }
  const sorted = Array.from(cuts).filter((c) => c > 0 && c < buf.length).sort((a, b) => a - b);
  const pieces = [];
  let start = 0;
  for (const c of sorted) {
    pieces.push(buf.subarray(start, c));
    start = c;
  }
  pieces.push(buf.subarray(start));
  return pieces;
}

function writeSplit(res, buf, done) {
  const pieces = splitPieces(buf);
  let i = 0;
  const step = () => {
    if (res.destroyed || res.writableEnded) return;
    if (i >= pieces.length) {
      done();
      return;
    }
    res.write(pieces[i++]);
    afterDelay(res, 1, step);
  };
  step();
}

// Sends a complete, non-streamed JSON success body, applying body-level faults.
function sendBody(res, obj, fault, headers) {
  const text = typeof obj === 'string' ? obj : JSON.stringify(obj);
  const buf = Buffer.from(text, 'utf8');
  const baseHeaders = Object.assign({ 'Content-Type': 'application/json' }, headers || {});
  const mode = fault ? fault.mode : null;
  if (mode === 'malformed_json') {
    sendRaw(res, 200, baseHeaders, buf.subarray(0, Math.max(1, Math.floor(buf.length / 2))));
    return;
  }
  if (mode !== 'stall_mid_stream' && mode !== 'reset_mid_stream' && mode !== 'split_events') {
    sendRaw(res, 200, baseHeaders, buf);
    return;
  }
  res.writeHead(200, Object.assign({ 'Content-Length': buf.length }, baseHeaders));
  if (res.socket) res.socket.setNoDelay(true);
  const half = Math.floor(buf.length / 2);
  if (mode === 'stall_mid_stream') {
    res.write(buf.subarray(0, half));
    afterDelay(res, fault.stall_ms, () => res.end(buf.subarray(half)));
  } else if (mode === 'reset_mid_stream') {
    res.write(buf.subarray(0, half), () => afterDelay(res, 50, () => resetSocket(res)));
  } else {
    writeSplit(res, buf, () => res.end());
  }
}

// ---------------------------------------------------------------------------
// Request recording

function recordRequest(req, url, body, raw, jsonError) {
  state.seq += 1;
  const entry = {
    seq: state.seq,
    time: new Date().toISOString(),
    method: req.method,
    path: url.pathname,
    query: url.search ? url.search.slice(1) : '',
    headers: Object.assign({}, req.headers),
    body: jsonError ? null : body,
    fault: null,
  };
  if (jsonError) {
    entry.raw_body = raw.subarray(0, 65536).toString('utf8');
  }
  state.requests.push(entry);
  // Everything that sets entry.fault runs synchronously in this tick.
  if (opts.record) {
    process.nextTick(() => {
      try {
        fs.appendFileSync(opts.record, JSON.stringify(entry) + '\n');
      } catch (err) {
        process.stderr.write(`fake-inference: cannot write ${opts.record}: ${err.message}\n`);
      }
    });
  }
  return entry;
}

// ---------------------------------------------------------------------------
// Faults

function intHeader(req, name) {
  const v = req.headers[name];
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(String(v).trim())) return null;
  return Number(String(v).trim());
}

// Returns { fault } or { error } for a /v1 request. Header faults apply to any
// /v1 route and do not consume the configured fault; configured faults apply
// only to model requests (chat completions and embeddings).
function pickFault(req, isModelRequest) {
  const header = req.headers['x-fake-fault'];
  let fault = null;
  if (header !== undefined) {
    const mode = String(header).trim();
    if (!FAULT_MODES.includes(mode)) {
      return { error: `unknown X-Fake-Fault mode '${mode}'; expected one of ${FAULT_MODES.join(', ')}` };
    }
    fault = { mode, retry_after: DEFAULT_RETRY_AFTER, stall_ms: DEFAULT_STALL_MS };
  } else if (isModelRequest) {
    fault = consumeFault();
  }
  if (fault) {
    const ra = intHeader(req, 'x-fake-retry-after');
    const st = intHeader(req, 'x-fake-stall-ms');
    if (ra === null) return { error: 'X-Fake-Retry-After must be a non-negative integer' };
    if (st === null) return { error: 'X-Fake-Stall-Ms must be a non-negative integer' };
    if (ra !== undefined) fault.retry_after = ra;
    if (st !== undefined) fault.stall_ms = st;
  }
  return { fault };
}

// Handles the faults that replace the response entirely. Returns true if the
// response was taken over; otherwise the caller produces the normal response
// (possibly after a first-byte stall) and applies body-level faults itself.
function applyLeadingFault(res, fault, proceed) {
  if (!fault) {
    proceed(null);
    return;
  }
  switch (fault.mode) {
    case '500':
      sendError(res, 500, 'The server had an error while processing your request (fake fault).', 'server_error', null, null);
      return;
    case '429':
      sendError(
        res,
        429,
        'Rate limit reached for requests (fake fault).',
        'requests',
        null,
        'rate_limit_exceeded',
        { 'Retry-After': String(fault.retry_after), 'x-ratelimit-remaining-requests': '0' },
      );
      return;
    case 'stall_first_byte':
      afterDelay(res, fault.stall_ms, () => proceed(null));
      return;
    default:
      proceed(fault);
  }
}

// ---------------------------------------------------------------------------
// /v1 routes

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function validateCommon(body, res) {
  if (!isObject(body)) {
    sendError(res, 400, 'The request body must be a JSON object.', 'invalid_request_error', null, null);
    return false;
  }
  if (typeof body.model !== 'string' || body.model.length === 0) {
    sendError(res, 400, 'you must provide a model parameter', 'invalid_request_error', 'model', 'missing_required_parameter');
    return false;
  }
  return true;
}

function validateChat(body, res) {
  if (!validateCommon(body, res)) return false;
  if (!Array.isArray(body.messages) || body.messages.length === 0) {
    const msg = body.messages === undefined
      ? "Missing required parameter: 'messages'."
      : "Invalid 'messages': expected a non-empty array of message objects.";
    const code = body.messages === undefined ? 'missing_required_parameter' : 'invalid_value';
    sendError(res, 400, msg, 'invalid_request_error', 'messages', code);
    return false;
  }
  for (let i = 0; i < body.messages.length; i++) {
    const m = body.messages[i];
    if (!isObject(m) || typeof m.role !== 'string') {
      sendError(res, 400, `Invalid 'messages[${i}]': each message needs a string 'role'.`, 'invalid_request_error', `messages[${i}]`, 'invalid_value');
      return false;
    }
  }
  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== 'boolean') {
    sendError(res, 400, "Invalid 'stream': expected a boolean.", 'invalid_request_error', 'stream', 'invalid_type');
    return false;
  }
  if (body.stream_options !== undefined && body.stream_options !== null && body.stream !== true) {
    sendError(res, 400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.", 'invalid_request_error', 'stream_options', null);
    return false;
  }
  return true;
}

function buildAnswer(body, fault) {
  let content = state.answer !== null ? state.answer : defaultAnswer(body.messages);
  if (fault && fault.mode === 'split_events' && isAscii(content)) {
    content = `${content} (${NON_ASCII_SAMPLE})`;
  }
  let pieces = deltaPieces(content);
  let finish = 'stop';
  const limit = Number.isInteger(body.max_completion_tokens) ? body.max_completion_tokens
    : Number.isInteger(body.max_tokens) ? body.max_tokens : null;
  if (limit !== null && limit > 0 && limit < pieces.length) {
    pieces = pieces.slice(0, limit);
    content = pieces.join('');
    finish = 'length';
  }
  let promptTokens = 0;
  for (const m of body.messages) promptTokens += 3 + countTokens(messageText(m.content));
  const usage = {
    prompt_tokens: promptTokens,
    completion_tokens: pieces.length,
    total_tokens: promptTokens + pieces.length,
  };
  return { content, pieces, finish, usage };
}

function sseEvent(obj) {
  return `data: ${typeof obj === 'string' ? obj : JSON.stringify(obj)}\n\n`;
}

function handleChat(req, res, body, entry) {
  if (!validateChat(body, res)) return;
  const picked = pickFault(req, true);
  if (picked.error) {
    sendError(res, 400, picked.error, 'invalid_request_error', null, null);
    return;
  }
  entry.fault = picked.fault ? picked.fault.mode : null;
  const id = `chatcmpl-fake-${entry.seq}`;
  const created = Math.floor(Date.now() / 1000);
  const headers = { 'x-request-id': `req_fake_${entry.seq}` };

  applyLeadingFault(res, picked.fault, (fault) => {
    const ans = buildAnswer(body, picked.fault);
    if (body.stream !== true) {
      sendBody(res, {
        id,
        object: 'chat.completion',
        created,
        model: body.model,
        system_fingerprint: 'fp_fake',
        choices: [{
          index: 0,
          message: { role: 'assistant', content: ans.content, refusal: null },
          logprobs: null,
          finish_reason: ans.finish,
        }],
        usage: ans.usage,
      }, fault, headers);
      return;
    }
    const includeUsage = isObject(body.stream_options) && body.stream_options.include_usage === true;
    const chunk = (delta, finish) => {
      const o = {
        id,
        object: 'chat.completion.chunk',
        created,
        model: body.model,
        system_fingerprint: 'fp_fake',
        choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
      };
      if (includeUsage) o.usage = null;
      return o;
    };
    const events = [sseEvent(chunk({ role: 'assistant', content: '' }, null))];
    for (const p of ans.pieces) events.push(sseEvent(chunk({ content: p }, null)));
    events.push(sseEvent(chunk({}, ans.finish)));
    if (includeUsage) {
      events.push(sseEvent({
        id, object: 'chat.completion.chunk', created, model: body.model, system_fingerprint: 'fp_fake',
        choices: [], usage: ans.usage,
      }));
    }
    events.push(sseEvent('[DONE]'));
    streamEvents(res, events, fault, headers, id);
  });
}

function streamEvents(res, events, fault, headers, id) {
  res.writeHead(200, Object.assign({
    'Content-Type': 'text/event-stream; charset=utf-8',
    'Cache-Control': 'no-cache',
    Connection: 'keep-alive',
  }, headers));
  if (res.socket) res.socket.setNoDelay(true);
  const mode = fault ? fault.mode : null;
  // First two events: the role chunk and (usually) one content chunk.
  const head = events.slice(0, 2).join('');
  const rest = events.slice(2).join('');
  switch (mode) {
    case 'stall_mid_stream':
      res.write(head);
      afterDelay(res, fault.stall_ms, () => res.end(rest));
      return;
    case 'reset_mid_stream':
      res.write(head, () => afterDelay(res, 50, () => resetSocket(res)));
      return;
    case 'malformed_json':
      res.write(events[0]);
      res.write(`data: {"id":"${id}","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"trunc\n\n`);
      res.end(events[events.length - 1]);
      return;
    case 'split_events': {
      const parts = [];
      events.forEach((ev, i) => {
        if (i % 2 === 0) parts.push(': keep-alive\n\n');
        else parts.push(': keep-alive\n');
        parts.push(ev);
      });
      writeSplit(res, Buffer.from(parts.join(''), 'utf8'), () => res.end());
      return;
    }
    default:
      res.end(events.join(''));
  }
}

function embeddingInputs(input) {
  if (typeof input === 'string') return [input];
  if (Array.isArray(input) && input.length > 0) {
    if (input.every((x) => typeof x === 'string')) return input;
    if (input.every((x) => Number.isInteger(x))) return [input.join(' ')];
    if (input.every((x) => Array.isArray(x) && x.length > 0 && x.every((y) => Number.isInteger(y)))) {
      return input.map((x) => x.join(' '));
    }
  }
  return null;
}

function handleEmbeddings(req, res, body, entry) {
  if (!validateCommon(body, res)) return;
  if (body.input === undefined) {
    sendError(res, 400, "Missing required parameter: 'input'.", 'invalid_request_error', 'input', 'missing_required_parameter');
    return;
  }
  const inputs = embeddingInputs(body.input);
  if (!inputs) {
    sendError(res, 400, "Invalid 'input': expected a string, an array of strings, or token arrays.", 'invalid_request_error', 'input', 'invalid_value');
    return;
  }
  let dim = DEFAULT_DIMENSIONS;
  if (body.dimensions !== undefined && body.dimensions !== null) {
    if (!Number.isInteger(body.dimensions) || body.dimensions < 1 || body.dimensions > MAX_DIMENSIONS) {
      sendError(res, 400, `Invalid 'dimensions': expected an integer between 1 and ${MAX_DIMENSIONS}.`, 'invalid_request_error', 'dimensions', 'invalid_value');
      return;
    }
    dim = body.dimensions;
  }
  const format = body.encoding_format === undefined || body.encoding_format === null ? 'float' : body.encoding_format;
  if (format !== 'float' && format !== 'base64') {
    sendError(res, 400, "Invalid 'encoding_format': expected 'float' or 'base64'.", 'invalid_request_error', 'encoding_format', 'invalid_value');
    return;
  }
  dim = openaiFlavorDim(body, dim, res);
  if (dim === null) return;
  const picked = pickFault(req, true);
  if (picked.error) {
    sendError(res, 400, picked.error, 'invalid_request_error', null, null);
    return;
  }
  entry.fault = picked.fault ? picked.fault.mode : null;
  applyLeadingFault(res, picked.fault, (fault) => {
    let tokens = 0;
    const data = inputs.map((text, index) => {
      tokens += countTokens(text);
      // some models answer text they have no token for with all zeros: the control route
      // /_fake/embeddings names such inputs (compared after trimming white space)
      const vec = state.zeroInputs.has(text.trim()) ? new Array(dim).fill(0) : embed(text, dim);
      return { object: 'embedding', index, embedding: format === 'base64' ? embeddingToBase64(vec) : vec };
    });
    sendBody(res, openaiFlavorBody({
      object: 'list',
      data,
      model: body.model,
      usage: { prompt_tokens: tokens, total_tokens: tokens },
    }, entry), fault, { 'x-request-id': `req_fake_${entry.seq}` });
  });
}

// ---------------------------------------------------------------------------
// Embedding wire shapes beyond OpenAI's (Azure OpenAI deployments, Ollama's
// /api/embed, text-embeddings-inference's /embed), the OpenAI-shaped answers of
// llama.cpp's server and vLLM, and hostile answers. Set with /_fake/embed_shape.

const EMBED_FLAVORS = ['openai', 'llamacpp', 'vllm'];
const EMBED_HOSTILE = ['wrong_count', 'ragged', 'nan', 'overflow', 'huge'];
const TEI_MAX_BATCH = 32; // text-embeddings-inference's default --max-client-batch-size
const HUGE_PADDING_BYTES = 8 * 1024 * 1024;

function embedShapeOf() {
  return Object.assign({ flavor: 'openai', hostile: null, dim: DEFAULT_DIMENSIONS }, state.embedShape || {});
}

// Vectors made hostile as the configured mode says; placeholders stand for what
// JSON.stringify cannot write (NaN, a number beyond float range).
function hostileVectors(vectors) {
  const mode = embedShapeOf().hostile;
  const out = vectors.map((v) => v.slice());
  if (mode === 'wrong_count') out.pop();
  else if (mode === 'ragged' && out.length > 0) out[out.length - 1].pop();
  else if (mode === 'nan' && out.length > 0) out[0][0] = '__FAKE_NAN__';
  else if (mode === 'overflow' && out.length > 0) out[0][0] = '__FAKE_OVERFLOW__';
  return out;
}

// JSON text of an answer, with the placeholders written as Python's json does (NaN) and as a
// double that no float holds; 'huge' puts megabytes of padding in front of the vectors.
function hostileJson(obj) {
  let text = JSON.stringify(obj)
    .replace(/"__FAKE_NAN__"/g, 'NaN')
    .replace(/"__FAKE_OVERFLOW__"/g, '1e39');
  if (embedShapeOf().hostile === 'huge') {
    const pad = JSON.stringify({ padding: ' '.repeat(HUGE_PADDING_BYTES) });
    text = Array.isArray(obj) ? `[${pad},${text.slice(1)}` : `{${pad.slice(1, -1)},${text.slice(1)}`;
  }
  return text;
}

// /v1/embeddings: llama.cpp's server ignores `dimensions` (the model's size is the answer's);
// vLLM refuses one that is not the model's unless the model is matryoshka-trained. Returns the
// dimension to answer in, or null after sending the refusal.
function openaiFlavorDim(body, dim, res) {
  const shape = embedShapeOf();
  const asked = body.dimensions !== undefined && body.dimensions !== null;
  if (shape.flavor === 'llamacpp') return shape.dim;
  if (shape.flavor === 'vllm') {
    if (asked && body.dimensions !== shape.dim) {
      sendJson(res, 400, {
        error: {
          message: `Model "${body.model}" does not support matryoshka representation, changing output dimensions will lead to poor results.`,
          type: 'BadRequestError',
          param: null,
          code: 400,
        },
      });
      return null;
    }
    return shape.dim;
  }
  return dim;
}

// /v1/embeddings answer as the flavor writes it: llama.cpp without usage, vLLM with an id,
// created and usage's completion_tokens; vectors made hostile when asked.
function openaiFlavorBody(obj, entry) {
  const shape = embedShapeOf();
  const vectors = hostileVectors(obj.data.map((d) => d.embedding));
  const data = vectors.map((embedding, index) => ({ object: 'embedding', index, embedding }));
  let out;
  if (shape.flavor === 'llamacpp') {
    out = { model: obj.model, object: 'list', data };
  } else if (shape.flavor === 'vllm') {
    out = {
      id: `embd-fake${entry.seq}`,
      object: 'list',
      created: MODEL_CREATED,
      model: obj.model,
      data,
      usage: { prompt_tokens: obj.usage.prompt_tokens, total_tokens: obj.usage.total_tokens, completion_tokens: 0 },
    };
  } else {
    out = Object.assign({}, obj, { data });
  }
  return hostileJson(out);
}

function embedTexts(texts, dim) {
  return texts.map((t) => (state.zeroInputs.has(t.trim()) ? new Array(dim).fill(0) : embed(t, dim)));
}

function stringList(v) {
  if (typeof v === 'string') return [v];
  if (Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string')) return v;
  return null;
}

// Runs a model request of a native shape through the failure switches, then answers with make().
function answerModelRequest(req, res, entry, make, refuse) {
  const picked = pickFault(req, true);
  if (picked.error) return refuse(400, picked.error);
  entry.fault = picked.fault ? picked.fault.mode : null;
  applyLeadingFault(res, picked.fault, (fault) => sendBody(res, make(), fault));
}

// Azure OpenAI: POST /openai/deployments/{deployment}/embeddings?api-version=V, key in the
// api-key header (Authorization: Bearer would be an Entra ID token, which the fake does not
// take); the body's model is optional and ignored, the deployment decides.
function handleAzureEmbeddings(req, res, url, body, entry, deployment) {
  const azureError = (status, code, message) => sendJson(res, status, { error: { code, message } });
  const key = req.headers['api-key'];
  if (typeof key !== 'string' || (opts.apiKey !== null && key.trim() !== opts.apiKey)) {
    return azureError(401, '401', 'Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.');
  }
  if (!url.searchParams.get('api-version')) return azureError(404, '404', 'Resource not found');
  if (!isObject(body)) return azureError(400, 'BadRequest', 'The request body must be a JSON object.');
  const inputs = embeddingInputs(body.input);
  if (!inputs) return azureError(400, 'BadRequest', "'input' is a required property: a string or an array of strings.");
  let dim = DEFAULT_DIMENSIONS;
  if (body.dimensions !== undefined && body.dimensions !== null) {
    if (!Number.isInteger(body.dimensions) || body.dimensions < 1 || body.dimensions > MAX_DIMENSIONS) {
      return azureError(400, 'BadRequest', `'dimensions' must be an integer between 1 and ${MAX_DIMENSIONS}.`);
    }
    dim = body.dimensions;
  }
  answerModelRequest(req, res, entry, () => {
    const tokens = inputs.reduce((n, t) => n + countTokens(t), 0);
    const vectors = hostileVectors(embedTexts(inputs, dim));
    return hostileJson({
      object: 'list',
      data: vectors.map((embedding, index) => ({ object: 'embedding', index, embedding })),
      model: `${deployment}-model`,
      usage: { prompt_tokens: tokens, total_tokens: tokens },
    });
  }, (status, msg) => azureError(status, 'BadRequest', msg));
}

// Ollama: POST /api/embed {model, input: string | [string], truncate, dimensions} ->
// {model, embeddings: [[...]], total_duration, load_duration, prompt_eval_count}; errors are
// {"error": "..."}.
function handleOllamaEmbed(req, res, body, entry) {
  const ollamaError = (status, message) => sendJson(res, status, { error: message });
  if (!isObject(body)) return ollamaError(400, 'invalid request body');
  if (typeof body.model !== 'string' || body.model.length === 0) return ollamaError(400, 'model is required');
  if (!opts.models.includes(body.model)) {
    return ollamaError(404, `model "${body.model}" not found, try pulling it first`);
  }
  const inputs = stringList(body.input);
  if (!inputs) return ollamaError(400, 'invalid input type');
  let dim = embedShapeOf().dim;
  if (body.dimensions !== undefined) {
    if (!Number.isInteger(body.dimensions) || body.dimensions < 1 || body.dimensions > MAX_DIMENSIONS) {
      return ollamaError(400, 'dimensions must be a positive integer');
    }
    dim = body.dimensions;
  }
  answerModelRequest(req, res, entry, () => hostileJson({
    model: body.model,
    embeddings: hostileVectors(embedTexts(inputs, dim)),
    total_duration: 1000000,
    load_duration: 1000,
    prompt_eval_count: inputs.reduce((n, t) => n + countTokens(t), 0),
  }), ollamaError);
}

// text-embeddings-inference: POST /embed {inputs: string | [string], normalize (default true),
// truncate (default false)} -> [[...], ...]; errors {"error", "error_type"}, 422 for a bad or
// too large batch; a Bearer key when the server has one (--api-key).
function handleTeiEmbed(req, res, body, entry) {
  const teiError = (status, type, message) => sendJson(res, status, { error: message, error_type: type });
  if (opts.apiKey !== null) {
    const m = typeof req.headers.authorization === 'string' && req.headers.authorization.match(/^Bearer\s+(.+)$/i);
    if (!m || m[1].trim() !== opts.apiKey) return teiError(401, 'Unauthorized', 'Unauthorized');
  }
  if (!isObject(body)) return teiError(422, 'Validation', 'Failed to deserialize the JSON body');
  const inputs = stringList(body.inputs);
  if (!inputs) return teiError(422, 'Validation', '`inputs` cannot be empty');
  if (inputs.length > TEI_MAX_BATCH) {
    return teiError(422, 'Validation', `batch size ${inputs.length} > maximum allowed batch size ${TEI_MAX_BATCH}`);
  }
  if (inputs.some((t) => t.length === 0)) return teiError(422, 'Validation', '`inputs` cannot be empty');
  const normalize = body.normalize === undefined ? true : body.normalize === true;
  const dim = embedShapeOf().dim;
  answerModelRequest(req, res, entry, () => {
    // without normalize the fake's unit vectors are scaled, as a model's raw output would be
    const vectors = embedTexts(inputs, dim).map((v) => (normalize ? v : v.map((x) => x * 3)));
    return hostileJson(hostileVectors(vectors));
  }, (status, msg) => teiError(status, 'Validation', msg));
}

function handleEmbedShapeControl(req, res, body, jsonError) {
  if (req.method === 'GET') return sendJson(res, 200, embedShapeOf());
  if (req.method === 'DELETE') {
    state.embedShape = null;
    return sendJson(res, 200, { ok: true, ...embedShapeOf() });
  }
  if (req.method !== 'POST') return methodNotAllowed(res, 'GET, POST, DELETE');
  if (jsonError || !isObject(body)) {
    return sendError(res, 400, 'expected a JSON object body', 'invalid_request_error', null, null);
  }
  const next = {};
  if (body.flavor !== undefined) {
    if (!EMBED_FLAVORS.includes(body.flavor)) {
      return sendError(res, 400, `'flavor' must be one of ${EMBED_FLAVORS.join(', ')}`, 'invalid_request_error', 'flavor', null);
    }
    next.flavor = body.flavor;
  }
  if (body.hostile !== undefined && body.hostile !== null) {
    if (!EMBED_HOSTILE.includes(body.hostile)) {
      return sendError(res, 400, `'hostile' must be one of ${EMBED_HOSTILE.join(', ')}`, 'invalid_request_error', 'hostile', null);
    }
    next.hostile = body.hostile;
  }
  if (body.dim !== undefined) {
    if (!Number.isInteger(body.dim) || body.dim < 1 || body.dim > MAX_DIMENSIONS) {
      return sendError(res, 400, `'dim' must be an integer between 1 and ${MAX_DIMENSIONS}`, 'invalid_request_error', 'dim', null);
    }
    next.dim = body.dim;
  }
  state.embedShape = next;
  return sendJson(res, 200, { ok: true, ...embedShapeOf() });
}

// Routes of the shapes above; returns true when the path was one of them.
function routeEmbedShapes(req, res, url, body, entry, route, needJson) {
  const path = url.pathname;
  const azure = path.match(/^\/openai\/deployments\/([^/]+)\/embeddings$/);
  if (azure) {
    route(['POST'], () => needJson(() => handleAzureEmbeddings(req, res, url, body, entry, decodeURIComponent(azure[1]))));
    return true;
  }
  if (path === '/api/embed') {
    route(['POST'], () => needJson(() => handleOllamaEmbed(req, res, body, entry)));
    return true;
  }
  if (path === '/embed') {
    route(['POST'], () => needJson(() => handleTeiEmbed(req, res, body, entry)));
    return true;
  }
  return false;
}

function modelObject(id) {
  return { id, object: 'model', created: MODEL_CREATED, owned_by: 'quarry-fake' };
}

function handleModels(req, res, entry, id) {
  const picked = pickFault(req, false);
  if (picked.error) {
    sendError(res, 400, picked.error, 'invalid_request_error', null, null);
    return;
  }
  entry.fault = picked.fault ? picked.fault.mode : null;
  applyLeadingFault(res, picked.fault, (fault) => {
    if (id === undefined) {
      sendBody(res, { object: 'list', data: opts.models.map(modelObject) }, fault);
    } else if (opts.models.includes(id)) {
      sendBody(res, modelObject(id), fault);
    } else {
      sendError(res, 404, `The model '${id}' does not exist`, 'invalid_request_error', 'model', 'model_not_found');
    }
  });
}

function authorized(req) {
  if (opts.apiKey === null) return true;
  const auth = req.headers.authorization;
  if (typeof auth === 'string') {
    const m = auth.match(/^Bearer\s+(.+)$/i);
    if (m && m[1].trim() === opts.apiKey) return true;
  }
  const key = req.headers['api-key'];
  return typeof key === 'string' && key.trim() === opts.apiKey;
}

// ---------------------------------------------------------------------------
// Rerank: POST /v1/rerank (Cohere's shape, also Jina's, vLLM's and Infinity's)
// and POST /rerank (Hugging Face text-embeddings-inference). A document's score
// is the share of the query's distinct words (lower-cased runs of letters and
// digits) that it contains, so tests can predict the order; ties keep the
// order sent. POST /_fake/rerank {"reply": R, "times": N} makes the next N
// rerank replies invalid in one way (RERANK_BAD_REPLIES).

const RERANK_BAD_REPLIES = [
  'out_of_range_index', // an index equal to the number of documents
  'negative_index', // index -1
  'duplicate_index', // the first result repeated in place of the last
  'missing_index', // the last result dropped
  'string_score', // the scores as strings
  'nan_score', // a bare NaN where a score belongs (not JSON)
  'huge_array', // 100000 results
];
const rerankState = { bad: null }; // { reply, remaining }

function rerankWords(text) {
  return new Set(String(text).toLowerCase().match(/[\p{L}\p{N}]+/gu) || []);
}

function rerankScore(query, doc) {
  const q = rerankWords(query);
  if (q.size === 0) return 0;
  const d = rerankWords(doc);
  let shared = 0;
  for (const w of q) if (d.has(w)) shared += 1;
  return shared / q.size;
}

function takeRerankBad() {
  const b = rerankState.bad;
  if (!b) return null;
  if (b.remaining > 0) {
    b.remaining -= 1;
    if (b.remaining === 0) rerankState.bad = null;
  }
  return b.reply;
}

// Breaks a list of {index, <key>} results the way `bad` says; returns the
// reply object, or a string to send as it is.
function rerankBreak(results, key, n, bad, wrap) {
  const out = results.map((r) => Object.assign({}, r));
  switch (bad) {
    case 'out_of_range_index':
      out[0].index = n;
      break;
    case 'negative_index':
      out[0].index = -1;
      break;
    case 'duplicate_index':
      if (out.length > 1) out[out.length - 1] = Object.assign({}, out[0]);
      else out.push(Object.assign({}, out[0]));
      break;
    case 'missing_index':
      out.pop();
      break;
    case 'string_score':
      for (const r of out) r[key] = String(r[key]);
      break;
    case 'nan_score': {
      const text = JSON.stringify(wrap(out));
      return text.replace(new RegExp(`"${key}":[-0-9.eE+]+`), `"${key}":NaN`);
    }
    case 'huge_array':
      for (let i = out.length; i < 100000; i++) out.push({ index: i % n, [key]: 0 });
      break;
    default:
      break;
  }
  return wrap(out);
}

function handleRerank(req, res, body, entry, shape) {
  const cohere = shape === 'cohere';
  if (!isObject(body)) {
    sendError(res, 400, 'The request body must be a JSON object.', 'invalid_request_error', null, null);
    return;
  }
  if (cohere && (typeof body.model !== 'string' || body.model.length === 0)) {
    sendError(res, 400, 'you must provide a model parameter', 'invalid_request_error', 'model', 'missing_required_parameter');
    return;
  }
  const field = cohere ? 'documents' : 'texts';
  const docs = body[field];
  if (typeof body.query !== 'string' || !Array.isArray(docs) || docs.length === 0 || !docs.every((d) => typeof d === 'string')) {
    sendError(res, 400, `'query' must be a string and '${field}' a non-empty array of strings.`, 'invalid_request_error', field, 'invalid_value');
    return;
  }
  let topN = docs.length;
  if (cohere && body.top_n !== undefined && body.top_n !== null) {
    if (!Number.isInteger(body.top_n) || body.top_n < 1) {
      sendError(res, 400, "Invalid 'top_n': expected a positive integer.", 'invalid_request_error', 'top_n', 'invalid_value');
      return;
    }
    topN = Math.min(topN, body.top_n);
  }
  if (!cohere && body.raw_scores !== undefined && typeof body.raw_scores !== 'boolean') {
    sendError(res, 400, "Invalid 'raw_scores': expected a boolean.", 'invalid_request_error', 'raw_scores', 'invalid_value');
    return;
  }
  const picked = pickFault(req, true);
  if (picked.error) {
    sendError(res, 400, picked.error, 'invalid_request_error', null, null);
    return;
  }
  const bad = takeRerankBad();
  entry.fault = picked.fault ? picked.fault.mode : bad;
  applyLeadingFault(res, picked.fault, (fault) => {
    const key = cohere ? 'relevance_score' : 'score';
    const results = docs
      .map((d, index) => ({ index, [key]: rerankScore(body.query, d) }))
      .sort((a, b) => b[key] - a[key] || a.index - b.index)
      .slice(0, topN);
    const wrap = cohere
      ? (list) => ({ id: `rerank_fake_${entry.seq}`, results: list, meta: { billed_units: { search_units: 1 } } })
      : (list) => list;
    const reply = rerankBreak(results, key, docs.length, bad, wrap);
    if (typeof reply === 'string') {
      sendRaw(res, 200, { 'Content-Type': 'application/json' }, Buffer.from(reply, 'utf8'));
      return;
    }
    sendBody(res, reply, fault);
  });
}

// /_fake/rerank: GET shows, DELETE drops, POST {"reply": R, "times": N} sets.
function handleRerankControl(req, res, body, jsonError) {
  if (req.method === 'GET') {
    return sendJson(res, 200, rerankState.bad ? { reply: rerankState.bad.reply, times: rerankState.bad.remaining } : null);
  }
  if (req.method === 'DELETE') {
    rerankState.bad = null;
    return sendJson(res, 200, { ok: true });
  }
  if (req.method !== 'POST') return methodNotAllowed(res, 'GET, POST, DELETE');
  if (jsonError || !isObject(body) || !RERANK_BAD_REPLIES.includes(body.reply)) {
    return sendError(res, 400, `expected {"reply": one of ${RERANK_BAD_REPLIES.join(', ')}, "times": N}`, 'invalid_request_error', 'reply', null);
  }
  const times = body.times === undefined ? 1 : body.times;
  if (!Number.isInteger(times) || times < -1) {
    return sendError(res, 400, "'times' must be an integer >= -1", 'invalid_request_error', 'times', null);
  }
  rerankState.bad = times === 0 ? null : { reply: body.reply, remaining: times };
  return sendJson(res, 200, { ok: true });
}

// ---------------------------------------------------------------------------
// /_fake control routes

function handleControl(req, res, path, body, jsonError) {
  const method = req.method;
  const needObject = () => {
    if (jsonError || !isObject(body)) {
      sendError(res, 400, 'expected a JSON object body', 'invalid_request_error', null, null);
      return false;
    }
    return true;
  };
  if (path === '/_fake/health') {
    if (method !== 'GET' && method !== 'HEAD') return methodNotAllowed(res, 'GET');
    sendRaw(res, 200, { 'Content-Type': 'text/plain; charset=utf-8' }, 'ok');
    return;
  }
  if (path === '/_fake/requests') {
    if (method === 'GET') return sendJson(res, 200, state.requests);
    if (method === 'DELETE') {
      const n = state.requests.length;
      state.requests = [];
      return sendJson(res, 200, { ok: true, cleared: n });
    }
    return methodNotAllowed(res, 'GET, DELETE');
  }
  if (path === '/_fake/faults') {
    if (method === 'GET') return sendJson(res, 200, { fault: faultView() });
    if (method === 'DELETE') {
      state.fault = null;
      return sendJson(res, 200, { ok: true, fault: null });
    }
    if (method !== 'POST') return methodNotAllowed(res, 'GET, POST, DELETE');
    if (!needObject()) return;
    const mode = body.mode === undefined ? undefined : String(body.mode);
    if (!FAULT_MODES.includes(mode)) {
      return sendError(res, 400, `unknown fault mode '${mode}'; expected one of ${FAULT_MODES.join(', ')}`, 'invalid_request_error', 'mode', null);
    }
    const times = body.times === undefined ? 1 : body.times;
    if (!Number.isInteger(times) || times < -1) {
      return sendError(res, 400, "'times' must be an integer >= -1", 'invalid_request_error', 'times', null);
    }
    const num = (name, dflt) => {
      const v = body[name];
      if (v === undefined || v === null) return dflt;
      return Number.isInteger(v) && v >= 0 ? v : NaN;
    };
    const retryAfter = num('retry_after', DEFAULT_RETRY_AFTER);
    const stallMs = num('stall_ms', DEFAULT_STALL_MS);
    if (Number.isNaN(retryAfter) || Number.isNaN(stallMs)) {
      return sendError(res, 400, "'retry_after' and 'stall_ms' must be non-negative integers", 'invalid_request_error', null, null);
    }
    state.fault = times === 0 ? null : { mode, remaining: times, retry_after: retryAfter, stall_ms: stallMs };
    return sendJson(res, 200, { ok: true, fault: faultView() });
  }
  if (path === '/_fake/answer') {
    if (method === 'GET') return sendJson(res, 200, { content: state.answer });
    if (method === 'DELETE') {
      state.answer = null;
      return sendJson(res, 200, { ok: true, content: null });
    }
    if (method !== 'POST') return methodNotAllowed(res, 'GET, POST, DELETE');
    if (!needObject()) return;
    if (typeof body.content !== 'string') {
      return sendError(res, 400, "'content' must be a string", 'invalid_request_error', 'content', null);
    }
    state.answer = body.content;
    return sendJson(res, 200, { ok: true, content: state.answer });
  }
  if (path === '/_fake/embeddings') {
    const view = () => ({ zero: [...state.zeroInputs] });
    if (method === 'GET') return sendJson(res, 200, view());
    if (method === 'DELETE') {
      state.zeroInputs = new Set();
      return sendJson(res, 200, { ok: true, ...view() });
    }
    if (method !== 'POST') return methodNotAllowed(res, 'GET, POST, DELETE');
    if (!needObject()) return;
    if (!Array.isArray(body.zero) || !body.zero.every((x) => typeof x === 'string')) {
      return sendError(res, 400, "'zero' must be a list of strings", 'invalid_request_error', 'zero', null);
    }
    state.zeroInputs = new Set(body.zero.map((x) => x.trim()));
    return sendJson(res, 200, { ok: true, ...view() });
  }
  if (path === '/_fake/embed_shape') return handleEmbedShapeControl(req, res, body, jsonError);
  if (path === '/_fake/reset') {
    if (method !== 'POST') return methodNotAllowed(res, 'POST');
    state.embedShape = null;
    state.fault = null;
    state.answer = null;
    state.zeroInputs = new Set();
    state.requests = [];
    rerankState.bad = null;
    return sendJson(res, 200, { ok: true });
  }
  sendError(res, 404, `Unknown control route: ${method} ${path}`, 'invalid_request_error', null, 'unknown_url');
}

function methodNotAllowed(res, allow) {
  sendError(res, 405, `Method not allowed; use ${allow}.`, 'invalid_request_error', null, 'method_not_allowed', { Allow: allow });
}

// ---------------------------------------------------------------------------
// Dispatch

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        reject(Object.assign(new Error('body too large'), { tooLarge: true }));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

async function handle(req, res) {
  let raw;
  try {
    raw = await readBody(req);
  } catch (err) {
    if (err.tooLarge) sendError(res, 413, 'Request body too large.', 'invalid_request_error', null, null, { Connection: 'close' });
    return;
  }
  let url;
  try {
    url = new URL(req.url, 'http://fake.invalid');
  } catch (_) {
    sendError(res, 400, 'Invalid request URL.', 'invalid_request_error', null, null);
    return;
  }
  const path = url.pathname;
  let body;
  let jsonError = null;
  if (raw.length > 0) {
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch (err) {
      jsonError = err;
    }
  }

  if (path === '/_fake/rerank') {
    handleRerankControl(req, res, body, jsonError);
    return;
  }
  if (path.startsWith('/_fake/')) {
    handleControl(req, res, path, body, jsonError);
    return;
  }

  const entry = recordRequest(req, url, body, raw, jsonError);
  const isV1 = path === '/v1' || path.startsWith('/v1/');
  if (isV1 && !authorized(req)) {
    sendError(res, 401, 'Incorrect API key provided (fake server).', 'invalid_request_error', null, 'invalid_api_key');
    return;
  }

  const route = (methods, fn) => {
    if (!methods.includes(req.method)) return methodNotAllowed(res, methods.join(', '));
    return fn();
  };
  const needJson = (fn) => {
    if (jsonError || raw.length === 0) {
      sendError(
        res,
        400,
        'We could not parse the JSON body of your request. The fake server expects a JSON object body.',
        'invalid_request_error',
        null,
        null,
      );
      return;
    }
    fn();
  };

  if (path === '/v1/rerank' || path === '/rerank') {
    if (path === '/rerank' && !authorized(req)) {
      sendError(res, 401, 'Incorrect API key provided (fake server).', 'invalid_request_error', null, 'invalid_api_key');
      return;
    }
    const shape = path === '/rerank' ? 'tei' : 'cohere';
    return route(['POST'], () => needJson(() => handleRerank(req, res, body, entry, shape)));
  }
  if (path === '/v1/chat/completions') {
    return route(['POST'], () => needJson(() => handleChat(req, res, body, entry)));
  }
  if (path === '/v1/embeddings') {
    return route(['POST'], () => needJson(() => handleEmbeddings(req, res, body, entry)));
  }
  if (path === '/v1/models') {
    return route(['GET'], () => handleModels(req, res, entry));
  }
  if (routeEmbedShapes(req, res, url, body, entry, route, needJson)) return;
  const modelMatch = path.match(/^\/v1\/models\/([^/]+)$/);
  if (modelMatch) {
    return route(['GET'], () => handleModels(req, res, entry, decodeURIComponent(modelMatch[1])));
  }
  sendError(res, 404, `Invalid URL (${req.method} ${path})`, 'invalid_request_error', null, 'unknown_url');
}

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

opts = parseArgs(process.argv.slice(2));

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    process.stderr.write(`fake-inference: internal error: ${err && err.stack ? err.stack : err}\n`);
    if (!res.headersSent) sendError(res, 500, 'fake server internal error', 'server_error', null, null);
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
  process.stderr.write(`fake-inference: ${err.message}\n`);
  process.exit(1);
});

process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
process.on('SIGHUP', shutdown);

server.listen(opts.port, opts.host, () => {
  const addr = server.address();
  const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  process.stdout.write(`listening http://${host}:${addr.port}\n`);
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
