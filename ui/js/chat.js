// chat.js: the chat screen. Each question goes to POST /v1/chat/completions with stream:true and
// the conversation so far (chat-core.js streams it); the answer is shown as it arrives, then its
// [n] markers become links to the numbered citations, each of which opens the cited passage.
// Answers quarry wrote without a model (mode "extractive") are labelled as such.

import { h, replace, markedText, announce } from './dom.js';
import { buildChatRequest, streamChat, safeHref } from './chat-core.js';
import { getSession, sessionExpired, plainFetch } from './api.js';

let seq = 0;

/** The answer's text with each [n] that names a citation made into a link to it. */
function linkedAnswer(text, citations, turnId) {
  const frag = document.createDocumentFragment();
  const numbers = new Set(citations.map((c) => c.number));
  const re = /\[(\d+)\]/g;
  let last = 0;
  let m;
  while ((m = re.exec(text))) {
    const n = Number(m[1]);
    if (!numbers.has(n)) continue;
    if (m.index > last) frag.append(text.slice(last, m.index));
    frag.append(h('a', { class: 'cite-ref', href: `#${turnId}-c${n}`, 'data-cite': String(n), 'aria-label': `Source ${n}` }, `[${n}]`));
    last = re.lastIndex;
  }
  frag.append(text.slice(last));
  return frag;
}

function citationItem(c, turnId) {
  const detailsId = `${turnId}-c${c.number}`;
  const toggle = h('button', {
    type: 'button', class: 'citation-toggle', 'data-testid': 'citation', 'aria-expanded': 'false', 'aria-controls': `${detailsId}-body`,
  }, h('span', { class: 'cite-num' }, String(c.number)), h('span', { class: 'cite-title' }, c.title));
  const href = safeHref(c.uri);
  const body = h('div', { class: 'citation-body', id: `${detailsId}-body`, hidden: true },
    c.headings ? h('p', { class: 'headings' }, c.headings) : null,
    h('blockquote', { class: 'snippet' }, markedText(c.snippet)),
    href ? h('p', {}, h('a', { href, target: '_blank', rel: 'noopener noreferrer' }, 'Open the source')) : c.uri ? h('p', { class: 'muted uri' }, c.uri) : null,
  );
  toggle.addEventListener('click', () => {
    const open = toggle.getAttribute('aria-expanded') !== 'true';
    toggle.setAttribute('aria-expanded', String(open));
    body.hidden = !open;
  });
  return h('li', { class: 'citation', id: detailsId }, toggle, body);
}

export function createChat() {
  const history = []; // {role, content} turns sent with each question
  let controller = null;

  const status = h('p', { class: 'notice', role: 'status', hidden: true });
  const log = h('ol', { class: 'conversation', 'aria-label': 'Conversation' });
  const empty = h('p', { class: 'muted empty' }, 'Ask a question about your documents. Answers cite the passages they use.');
  const input = h('textarea', {
    id: 'chat-input', rows: 3, 'data-testid': 'chat-input', placeholder: 'e.g. How are expenses reimbursed?', 'aria-describedby': 'chat-hint',
  });
  const send = h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'chat-send' }, 'Send');
  const stop = h('button', { type: 'button', class: 'btn', 'data-testid': 'chat-stop', disabled: true }, 'Stop');
  const reset = h('button', { type: 'button', class: 'btn btn-quiet' }, 'New conversation');
  const form = h('form', { class: 'composer' },
    h('label', { for: 'chat-input' }, 'Your question'),
    input,
    h('p', { id: 'chat-hint', class: 'hint' }, 'Enter sends, Shift+Enter starts a new line.'),
    h('div', { class: 'row' }, send, stop, reset));

  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });
  stop.addEventListener('click', () => controller?.abort());
  reset.addEventListener('click', () => {
    controller?.abort();
    history.length = 0;
    log.replaceChildren();
    empty.hidden = false;
    announce(status, '');
    input.focus();
  });

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const question = input.value.trim();
    if (!question || controller) return;
    const session = getSession();
    if (!session) return;
    empty.hidden = true;
    const turnId = `turn-${++seq}`;
    log.append(h('li', { class: 'turn turn-user' }, h('span', { class: 'sr-only' }, 'You asked: '), h('p', { class: 'question' }, question)));
    const answer = h('div', { class: 'answer', 'data-testid': 'answer', 'aria-busy': 'true' });
    const badge = h('p', { class: 'badge', hidden: true });
    const cites = h('ol', { class: 'citations', 'aria-label': 'Sources', hidden: true });
    const copy = h('button', { type: 'button', class: 'btn btn-quiet btn-small copy-answer', hidden: true }, 'Copy answer');
    const turn = h('li', { class: 'turn turn-assistant', id: turnId, 'aria-label': 'Answer' }, badge, answer, cites, h('div', { class: 'row' }, copy));
    log.append(turn);
    turn.scrollIntoView({ block: 'nearest' });

    const request = buildChatRequest({ question, history });
    controller = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    input.value = '';
    announce(status, 'quarry is answering...', 'info');
    let citations = [];
    try {
      const out = await streamChat({
        baseUrl: location.origin,
        token: session.token,
        request,
        signal: controller.signal,
        fetchImpl: plainFetch,
        onDelta: (_piece, full) => {
          answer.textContent = full;
        },
        onCitations: (c) => {
          citations = c;
        },
      });
      citations = out.citations;
      replace(answer, linkedAnswer(out.text, citations, turnId));
      if (out.mode === 'extractive') {
        badge.textContent = `Extractive answer: quoted from the sources without a language model${out.reason ? ` (${out.reason})` : ''}.`;
        badge.hidden = false;
        turn.classList.add('extractive');
      }
      if (citations.length) {
        replace(cites, citations.map((c) => citationItem(c, turnId)));
        cites.hidden = false;
      }
      history.push({ role: 'user', content: question }, { role: 'assistant', content: out.text });
      announce(status, out.finishReason === 'length' ? 'The answer was cut at its maximum length.' : '');
    } catch (e) {
      if (e?.name === 'AbortError') {
        answer.append(h('span', { class: 'muted' }, ' (stopped)'));
        announce(status, 'Stopped.');
        if (answer.textContent) history.push({ role: 'user', content: question }, { role: 'assistant', content: answer.textContent });
      } else {
        turn.classList.add('failed');
        if (!answer.textContent) answer.textContent = 'No answer.';
        announce(status, e.message, 'error');
        if (e.status === 401) sessionExpired(e);
      }
    } finally {
      answer.setAttribute('aria-busy', 'false');
      copy.hidden = !answer.textContent;
      controller = null;
      send.disabled = false;
      stop.disabled = true;
      input.focus();
    }
  });

  log.addEventListener('click', async (ev) => {
    const ref = ev.target.closest('a.cite-ref');
    if (ref) {
      ev.preventDefault();
      const item = document.getElementById(ref.getAttribute('href').slice(1));
      const toggle = item?.querySelector('.citation-toggle');
      if (toggle && toggle.getAttribute('aria-expanded') !== 'true') toggle.click();
      toggle?.focus();
    }
  });
  log.addEventListener('click', async (ev) => {
    const btn = ev.target.closest('button');
    if (!btn || !btn.classList.contains('copy-answer')) return;
    const text = btn.closest('.turn').querySelector('.answer').textContent;
    try {
      await navigator.clipboard.writeText(text);
      announce(status, 'Answer copied.');
    } catch {
      announce(status, 'The browser refused the clipboard: select the answer and copy it.', 'error');
    }
  });

  const el = h('section', { class: 'screen screen-chat', 'aria-labelledby': 'chat-title' },
    h('h1', { id: 'chat-title' }, 'Chat'),
    empty, log, status, form);
  return { el, show() { input.focus(); } };
}
