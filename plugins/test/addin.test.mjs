// The Outlook/Word task pane in Node: Office.js mocked with office-addin-mock (SSO token, Word
// selection, Outlook message), a tiny DOM, and a local HTTP server that streams like quarry's
// POST /v1/chat/completions (SSE chat.completion.chunk events, citations, [DONE]) or refuses.
// Run: node --test plugins/test/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createRequire } from 'node:module';

import {
  buildChatRequest, buildUserMessage, clipUtf8, createSSEParser, streamChat, QuarryError, MAX_CONTEXT_BYTES,
} from '../outlook-word-addin/quarry-chat.js';
import { createTaskpane, readSelection, getToken, renderCitations } from '../outlook-word-addin/taskpane.js';

const require = createRequire(import.meta.url);
const { OfficeMockObject } = require('office-addin-mock');

// ---- a DOM just big enough for the task pane --------------------------------------------------
class El {
  constructor(tag, id = '') {
    this.tagName = tag.toUpperCase();
    this.id = id;
    this.children = [];
    this.attributes = {};
    this.listeners = {};
    this.hidden = false;
    this.disabled = false;
    this.className = '';
    this.value = '';
    this.checked = false;
    this._text = '';
  }
  get textContent() {
    return this.children.length ? this.children.map((c) => c.textContent).join('') : this._text;
  }
  set textContent(t) {
    this.children = [];
    this._text = String(t);
  }
  appendChild(c) {
    this.children.push(c);
    return c;
  }
  replaceChildren(...cs) {
    this.children = cs;
    this._text = '';
  }
  setAttribute(k, v) {
    this.attributes[k] = String(v);
  }
  getAttribute(k) {
    return this.attributes[k] ?? null;
  }
  addEventListener(type, fn) {
    (this.listeners[type] ||= []).push(fn);
  }
  click() {
    for (const fn of this.listeners.click || []) fn();
  }
}
function makeDoc() {
  const els = Object.fromEntries(
    [['question', 'textarea'], ['use-context', 'input'], ['ask', 'button'], ['stop', 'button'], ['answer', 'div'], ['citations', 'ol'], ['status', 'div']]
      .map(([id, tag]) => [id, new El(tag, id)]));
  return { els, getElementById: (id) => els[id] || null, createElement: (tag) => new El(tag) };
}

// ---- a server that talks like quarry ----------------------------------------------------------
const CITATIONS = [
  { number: 1, chunk_id: 7, doc_id: 'policies/travel.md', title: 'Travel policy', uri: 'https://intranet.example.com/travel',
    headings: 'Meals', snippet: 'Dinner is reimbursed up to 40 EUR.', start: 0, end: 36, score: 0.9 },
  { number: 2, chunk_id: 9, doc_id: 'faq.md', title: 'Expenses FAQ', uri: 'javascript:alert(1)', headings: '', snippet: 'Keep receipts.', start: 0, end: 14, score: 0.5 },
];
const requests = [];
let server, baseUrl;

function chunk(delta, extra = {}, finish = null) {
  return `data: ${JSON.stringify({ id: 'chatcmpl-1', object: 'chat.completion.chunk', created: 1, model: 'quarry',
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }], ...extra })}\n\n`;
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

before(async () => {
  server = http.createServer(async (req, res) => {
    let body = '';
    for await (const c of req) body += c;
    const parsed = body ? JSON.parse(body) : null;
    requests.push({ method: req.method, url: req.url, headers: req.headers, body: parsed });
    const token = (req.headers.authorization || '').replace(/^Bearer /, '');
    const json = (status, obj, headers = {}) => {
      res.writeHead(status, { 'Content-Type': 'application/json', 'X-Request-Id': 'req-1', ...headers });
      res.end(JSON.stringify(obj));
    };
    if (req.url !== '/v1/chat/completions' || req.method !== 'POST') return json(404, { error: { message: 'no route', type: 'not_found_error', param: null, code: 'not_found' } });
    if (token === 'expired-token')
      return json(401, { error: { message: 'token expired', type: 'authentication_error', param: null, code: 'unauthenticated' } },
        { 'WWW-Authenticate': 'Bearer error="invalid_token", error_description="expired"' });
    if (token === 'busy-token')
      return json(429, { error: { message: 'too many requests', type: 'rate_limit_error', param: null, code: 'rate_limited' } }, { 'Retry-After': '3' });
    if (token === 'down-token')
      return json(503, { error: { message: 'LDAP unreachable', type: 'server_error', param: null, code: 'unavailable' } });
    res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', 'X-Request-Id': 'req-2' });
    const question = parsed.messages.at(-1).content;
    if (question.startsWith('slow')) {
      res.write(chunk({ role: 'assistant', content: '' }));
      res.write(chunk({ content: 'Partial ' }));
      for (let i = 0; i < 50 && !res.destroyed; i++) {
        await sleep(50);
        res.write(chunk({ content: '.' }));
      }
      return res.end();
    }
    if (question.startsWith('azure')) {
      // citations the Azure OpenAI "on your data" way: choices[0].delta.context.citations
      res.write(chunk({ role: 'assistant', content: '', context: { citations: CITATIONS } }));
      res.write(chunk({ content: 'From the context [1].' }));
      res.write(chunk({}, {}, 'stop'));
      return res.end('data: [DONE]\n\n');
    }
    // quarry's own shape: role, text pieces, then finish_reason with the citations, then [DONE];
    // written in awkward pieces (split inside a line, CRLF) to exercise the parser
    const stream = chunk({ role: 'assistant', content: '' }) + chunk({ content: 'Dinner is reimbursed ' }) +
      chunk({ content: 'up to 40 EUR [1].' }) + chunk({}, { citations: CITATIONS, quarry: { mode: 'generative' } }, 'stop').replace(/\n/g, '\r\n') +
      'data: [DONE]\n\n';
    for (let i = 0; i < stream.length; i += 37) {
      res.write(stream.slice(i, i + 37));
      await sleep(1);
    }
    res.end();
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  baseUrl = `http://127.0.0.1:${server.address().port}`;
});
after(() => new Promise((r) => server.close(r)));

// ---- Office mocks -------------------------------------------------------------------------------
function officeWith(token, extra = {}, host) {
  const calls = [];
  const mock = new OfficeMockObject({
    auth: {
      getAccessToken: async (opts) => {
        calls.push(opts);
        if (typeof token === 'object') throw token;
        return token;
      },
    },
    CoercionType: { Text: 'text' },
    AsyncResultStatus: { Succeeded: 'succeeded', Failed: 'failed' },
    ...extra,
  }, host);
  return { mock, calls };
}
function wordWith(selection) {
  return new OfficeMockObject({
    context: {
      document: {
        range: { text: selection },
        getSelection: function () {
          return this.range;
        },
      },
    },
    run: async function (callback) {
      return callback(this.context);
    },
  });
}
function outlookItem({ body, selected, subject = 'Trip to Lyon' }) {
  const item = {
    subject,
    body: { getAsync: (type, cb) => cb({ status: 'succeeded', value: type === 'text' ? body : `<p>${body}</p>` }) },
  };
  if (selected !== undefined) item.getSelectedDataAsync = (type, cb) => cb({ status: 'succeeded', value: { data: selected, sourceProperty: 'body' } });
  return item;
}
function pane({ host, office, word, doc = makeDoc() }) {
  const p = createTaskpane({ doc, host, office, word, quarryUrl: baseUrl });
  return { ...p, doc, els: doc.els };
}

// ---- tests ------------------------------------------------------------------------------------
test('Word: SSO token, the selection and the question are sent; the streamed answer and citations render', async () => {
  const { mock: office, calls } = officeWith('mock-token-123');
  const word = wordWith('Dinner in Lyon, 52 EUR, with a client.');
  const { els, ask } = pane({ host: 'Word', office, word });
  assert.equal(els.stop.disabled, true);
  els.question.value = 'Can I expense this dinner?';
  els['use-context'].checked = true;
  requests.length = 0;
  await ask();

  assert.deepEqual(calls, [{ allowSignInPrompt: true, allowConsentPrompt: true, forMSGraphAccess: false }]);
  assert.equal(requests.length, 1);
  const r = requests[0];
  assert.equal(r.headers.authorization, 'Bearer mock-token-123');
  assert.equal(r.headers['content-type'], 'application/json');
  assert.equal(r.body.stream, true);
  const msg = r.body.messages.at(-1);
  assert.equal(msg.role, 'user');
  assert.ok(msg.content.startsWith('Can I expense this dinner?'), 'the question comes first (quarry searches with it)');
  assert.match(msg.content, /> Dinner in Lyon, 52 EUR, with a client\./);
  assert.match(msg.content, /the selected text in the document/);

  assert.equal(els.answer.textContent, 'Dinner is reimbursed up to 40 EUR [1].');
  assert.equal(els.citations.hidden, false);
  assert.equal(els.citations.children.length, 2);
  const [c1, c2] = els.citations.children;
  assert.equal(c1.textContent, '[1] Travel policy — Meals');
  assert.equal(c1.children[0].tagName, 'A');
  assert.equal(c1.children[0].getAttribute('href'), 'https://intranet.example.com/travel');
  assert.equal(c1.children[0].getAttribute('rel'), 'noopener noreferrer');
  assert.equal(c1.getAttribute('title'), 'Dinner is reimbursed up to 40 EUR.');
  assert.equal(c2.textContent, '[2] Expenses FAQ');
  assert.equal(c2.children[0].tagName, 'SPAN', 'a javascript: uri is never a link');
  assert.equal(els.status.textContent, '');
  assert.equal(els.ask.disabled, false);
  assert.equal(els.stop.disabled, true);
});

test('Word: the follow-up carries the conversation; no selection means no context', async () => {
  const { mock: office } = officeWith('mock-token-123');
  const { els, ask } = pane({ host: 'Word', office, word: wordWith('') });
  els.question.value = 'What is the meal limit?';
  els['use-context'].checked = true;
  await ask();
  els.question.value = 'And for contractors?';
  requests.length = 0;
  await ask();
  const msgs = requests[0].body.messages;
  assert.deepEqual(msgs.map((m) => m.role), ['user', 'assistant', 'user']);
  assert.equal(msgs[0].content, 'What is the meal limit?');
  assert.equal(msgs[1].content, 'Dinner is reimbursed up to 40 EUR [1].');
  assert.equal(msgs[2].content, 'And for contractors?');
});

test('Outlook read mode: the open message body (and subject) is the context', async () => {
  const { mock: office } = officeWith('outlook-token', {
    context: { mailbox: { item: outlookItem({ body: 'Hi, can we book the Lyon hotel for 3 nights?' }) } },
  }, 'outlook');
  const sel = await readSelection({ host: 'Outlook', office });
  assert.equal(sel.source, 'the open e-mail');
  assert.equal(sel.text, 'Subject: Trip to Lyon\n\nHi, can we book the Lyon hotel for 3 nights?');

  const { els, ask } = pane({ host: 'Outlook', office });
  els.question.value = 'Is this within policy?';
  els['use-context'].checked = true;
  requests.length = 0;
  await ask();
  assert.equal(requests[0].headers.authorization, 'Bearer outlook-token');
  assert.match(requests[0].body.messages.at(-1).content, /> Hi, can we book the Lyon hotel for 3 nights\?/);
  assert.equal(els.answer.textContent, 'Dinner is reimbursed up to 40 EUR [1].');
});

test('Outlook compose mode: the selected text wins over the body', async () => {
  const { mock: office } = officeWith('t', {
    context: { mailbox: { item: outlookItem({ body: 'the whole draft', selected: 'just this sentence' }) } },
  }, 'outlook');
  assert.deepEqual(await readSelection({ host: 'Outlook', office }), { text: 'just this sentence', source: 'the selected text of the message' });
});

test('citations in choices[0].delta.context are shown too', async () => {
  const { mock: office } = officeWith('mock-token-123');
  const { els, ask } = pane({ host: 'Word', office, word: wordWith('') });
  els.question.value = 'azure style please';
  await ask();
  assert.equal(els.answer.textContent, 'From the context [1].');
  assert.equal(els.citations.children.length, 2);
  assert.equal(els.citations.children[0].textContent, '[1] Travel policy — Meals');
});

test('401 from quarry: a sign-in message, nothing rendered', async () => {
  const { mock: office } = officeWith('expired-token');
  const { els, ask } = pane({ host: 'Word', office, word: wordWith('x') });
  els.question.value = 'anything';
  await ask();
  assert.equal(els.status.textContent, 'You are not signed in to quarry, or your sign-in has expired. Sign in again and retry.');
  assert.equal(els.status.className, 'status error');
  assert.equal(els.answer.textContent, '');
  assert.equal(els.citations.hidden, true);
  assert.equal(els.ask.disabled, false);
});

test('429 and 503 from quarry: clear messages', async () => {
  for (const [token, text] of [
    ['busy-token', 'quarry is handling too many of your requests. Try again in 3 s.'],
    ['down-token', 'quarry is unavailable right now (a service it depends on is down). Try again later.'],
  ]) {
    const { mock: office } = officeWith(token);
    const { els, ask } = pane({ host: 'Word', office, word: wordWith('') });
    els.question.value = 'q';
    await ask();
    assert.equal(els.status.textContent, text);
  }
  await assert.rejects(
    streamChat({ baseUrl, token: 'busy-token', request: buildChatRequest({ question: 'q' }) }),
    (e) => e instanceof QuarryError && e.status === 429 && e.retryAfter === '3' && e.code === 'rate_limited');
});

test('Office SSO failure: the SSO message, quarry never called', async () => {
  const { mock: office } = officeWith({ code: 13001, message: 'not signed in' });
  await assert.rejects(getToken(office), /not signed in to Office/);
  const { els, ask } = pane({ host: 'Word', office, word: wordWith('') });
  els.question.value = 'q';
  requests.length = 0;
  await ask();
  assert.equal(requests.length, 0);
  assert.match(els.status.textContent, /not signed in to Office/);
});

test('Stop aborts the stream and keeps what arrived', async () => {
  const { mock: office } = officeWith('mock-token-123');
  const { els, ask, stop } = pane({ host: 'Word', office, word: wordWith('') });
  els.question.value = 'slow answer please';
  const done = ask();
  for (let i = 0; i < 100 && !els.answer.textContent.startsWith('Partial'); i++) await sleep(10);
  assert.equal(els.stop.disabled, false);
  els.stop.click();
  await done;
  assert.equal(els.status.textContent, 'Stopped.');
  assert.ok(els.answer.textContent.startsWith('Partial'));
  assert.ok(els.answer.textContent.length < 'Partial '.length + 50);
  assert.equal(els.stop.disabled, true);
  stop(); // nothing running: harmless
});

test('the SSE parser takes any split, CRLF, multi-line data and comments', () => {
  const seen = [];
  const p = createSSEParser((d) => seen.push(d));
  for (const piece of [': comment\r', '\ndata: {"a"', ':1}\r\n\r\nda', 'ta: x\ndata: y\n\nevent: e\ndata: [DONE]\n', '\n', 'data: tail'])
    p.push(piece);
  p.end();
  assert.deepEqual(seen, ['{"a":1}', 'x\ny', '[DONE]', 'tail']);
});

test('context is clipped to MAX_CONTEXT_BYTES at a character, the question first', () => {
  const long = 'é'.repeat(MAX_CONTEXT_BYTES); // 2 bytes each
  const msg = buildUserMessage('Q?', long);
  assert.ok(msg.startsWith('Q?\n\nContext (the selected text, shortened):\n> é'));
  assert.ok(new TextEncoder().encode(msg).length < MAX_CONTEXT_BYTES + 100);
  assert.equal(clipUtf8('aé', 2).text, 'a');
  assert.equal(buildUserMessage('  only a question ', '  '), 'only a question');
});

test('renderCitations hides an empty list', () => {
  const doc = makeDoc();
  renderCitations(doc, doc.els.citations, []);
  assert.equal(doc.els.citations.hidden, true);
});

test('the pane keeps no token in storage', async () => {
  const store = new Map();
  const storage = { setItem: (k, v) => store.set(k, v), getItem: (k) => store.get(k) ?? null, removeItem: (k) => store.delete(k) };
  globalThis.localStorage = storage;
  globalThis.sessionStorage = storage;
  try {
    const { mock: office } = officeWith('secret-token');
    const { els, ask } = pane({ host: 'Word', office, word: wordWith('') });
    els.question.value = 'q';
    await ask();
    assert.equal(store.size, 0);
  } finally {
    delete globalThis.localStorage;
    delete globalThis.sessionStorage;
  }
});
