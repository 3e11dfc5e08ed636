// taskpane.js: the Office side of the quarry task pane (Outlook and Word). It gets the user's token
// through Office single sign-on, reads the selection or the open message, and renders what
// quarry-chat.js streams. Plain ES module, no build step; every function takes its Office objects
// and document as arguments so that tests run it in Node with office-addin-mock and a small DOM.

import { buildChatRequest, streamChat, QuarryError, safeHref } from './quarry-chat.js';

/** Office SSO error codes (Office.auth.getAccessToken) and what the user should do. */
const SSO_ERRORS = {
  13001: 'You are not signed in to Office. Sign in with your work account and try again.',
  13002: 'Sign-in or consent was cancelled. Ask again to retry.',
  13003: 'Sign in with your work or school account: personal Microsoft accounts cannot use quarry.',
  13005: 'Your administrator has not granted this add-in access to quarry yet (consent missing).',
  13006: 'Office could not get a sign-in token. Restart Office and try again.',
  13007: 'Office could not get a sign-in token. Try again later, or ask your administrator to check the add-in registration.',
  13008: 'A sign-in is already in progress. Wait for it to finish.',
  13010: 'Single sign-on needs Microsoft Edge WebView2 or Internet Explorer 11 support in this Office version.',
  13012: 'Single sign-on is not available in this Office client or platform.',
  13013: 'Too many sign-in attempts in a short time. Wait a moment and try again.',
};

/** A fresh access token for quarry's API from Office SSO; kept only in memory for one request. */
export async function getToken(office) {
  try {
    return await office.auth.getAccessToken({ allowSignInPrompt: true, allowConsentPrompt: true, forMSGraphAccess: false });
  } catch (e) {
    const code = Number(e?.code);
    throw new QuarryError(SSO_ERRORS[code] || `Sign-in failed${e?.message ? `: ${e.message}` : ''}.`, {
      status: 401,
      code: `sso_${code || 'error'}`,
    });
  }
}

/** Office's callback style (asyncResult.status, .value, .error) as a promise. */
function officeAsync(office, call) {
  return new Promise((resolve, reject) => {
    call((r) => {
      const ok = r && (r.status === (office.AsyncResultStatus?.Succeeded ?? 'succeeded') || r.status === 'succeeded');
      if (ok) resolve(r.value);
      else reject(new Error(r?.error?.message || 'Office could not read the item'));
    });
  });
}

/**
 * The text to send as context, and what it is:
 *   Word: the selection in the document (Word.run, getSelection, load text, sync);
 *   Outlook: the selected text while composing, else the open message's body as plain text.
 * Resolves to {text, source}; text is '' when there is nothing.
 */
export async function readSelection({ host, office, word }) {
  if (host === 'Word') {
    const text = await word.run(async (ctx) => {
      const range = ctx.document.getSelection();
      range.load('text');
      await ctx.sync();
      return range.text;
    });
    return { text: typeof text === 'string' ? text : '', source: 'the selected text in the document' };
  }
  if (host === 'Outlook') {
    const item = office.context.mailbox.item;
    if (!item) return { text: '', source: '' };
    const coercion = office.CoercionType?.Text ?? 'text';
    if (typeof item.getSelectedDataAsync === 'function') {
      // compose mode only; read mode has no selection API
      try {
        const sel = await officeAsync(office, (cb) => item.getSelectedDataAsync(coercion, cb));
        if (sel?.data && sel.data.trim()) return { text: sel.data, source: 'the selected text of the message' };
      } catch {
        /* nothing selected: fall back to the body */
      }
    }
    const body = await officeAsync(office, (cb) => item.body.getAsync(coercion, cb));
    const subject = typeof item.subject === 'string' && item.subject ? `Subject: ${item.subject}\n\n` : '';
    return { text: body ? subject + body : '', source: 'the open e-mail' };
  }
  return { text: '', source: '' };
}

/** The answer as plain text (never innerHTML: the model's text is not trusted markup). */
export function renderAnswer(el, text) {
  el.textContent = text;
}

/** The numbered sources as <li><a href=uri>[n] title</a> <span>headings</span></li>. */
export function renderCitations(doc, listEl, citations) {
  listEl.replaceChildren();
  for (const c of citations) {
    const li = doc.createElement('li');
    li.setAttribute('value', String(c.number));
    const href = safeHref(c.uri);
    const link = doc.createElement(href ? 'a' : 'span');
    link.textContent = `[${c.number}] ${c.title}`;
    if (href) {
      link.setAttribute('href', href);
      link.setAttribute('target', '_blank');
      link.setAttribute('rel', 'noopener noreferrer');
    }
    li.appendChild(link);
    if (c.headings) {
      const h = doc.createElement('span');
      h.className = 'headings';
      h.textContent = ` — ${c.headings}`;
      li.appendChild(h);
    }
    if (c.snippet) li.setAttribute('title', c.snippet);
    listEl.appendChild(li);
  }
  listEl.hidden = citations.length === 0;
}

/**
 * The task pane's behaviour on a document holding #question, #use-context, #ask, #stop, #answer,
 * #citations and #status. Returns {ask, stop}; ask() resolves when the answer is complete,
 * stopped or failed (failures are shown in #status, never thrown).
 */
export function createTaskpane({ doc, host, office, word, quarryUrl, fetchImpl }) {
  const $ = (id) => doc.getElementById(id);
  const ui = {
    question: $('question'),
    useContext: $('use-context'),
    ask: $('ask'),
    stop: $('stop'),
    answer: $('answer'),
    citations: $('citations'),
    status: $('status'),
  };
  let controller = null;
  const history = []; // this pane's conversation, in memory only

  const setStatus = (text, kind = 'info') => {
    ui.status.textContent = text;
    ui.status.className = `status ${kind}`;
  };
  const busy = (on) => {
    ui.ask.disabled = on;
    ui.stop.disabled = !on;
  };

  async function ask() {
    const question = (ui.question.value || '').trim();
    if (!question) {
      setStatus('Type a question first.', 'error');
      return;
    }
    controller = new AbortController();
    busy(true);
    renderAnswer(ui.answer, '');
    renderCitations(doc, ui.citations, []);
    try {
      setStatus('Signing in…');
      const token = await getToken(office);
      let context = { text: '', source: '' };
      if (ui.useContext.checked) {
        setStatus('Reading the selection…');
        context = await readSelection({ host, office, word });
      }
      setStatus('Asking quarry…');
      const request = buildChatRequest({ question, context: context.text, source: context.source, history });
      const result = await streamChat({
        baseUrl: quarryUrl,
        token,
        request,
        signal: controller.signal,
        fetchImpl,
        onDelta: (_piece, text) => renderAnswer(ui.answer, text),
        onCitations: (cites) => renderCitations(doc, ui.citations, cites),
      });
      history.push(request.messages[request.messages.length - 1], { role: 'assistant', content: result.text });
      setStatus(result.mode === 'extractive' ? 'Answered with quoted passages (no model was available).' : '', 'info');
    } catch (e) {
      if (e?.name === 'AbortError') setStatus('Stopped.', 'info');
      else setStatus(e instanceof QuarryError ? e.message : `Something went wrong: ${e?.message || e}`, 'error');
    } finally {
      controller = null;
      busy(false);
    }
  }

  function stop() {
    if (controller) controller.abort();
  }

  ui.ask.addEventListener('click', () => { ask(); });
  ui.stop.addEventListener('click', stop);
  busy(false);
  return { ask, stop };
}

// In Office: start once Office.js is ready. quarry's address comes from <meta name="quarry-url">.
if (typeof document !== 'undefined' && typeof Office !== 'undefined') {
  Office.onReady((info) => {
    const meta = document.querySelector('meta[name="quarry-url"]');
    createTaskpane({
      doc: document,
      host: String(info.host),
      office: Office,
      word: typeof Word !== 'undefined' ? Word : undefined,
      quarryUrl: meta ? meta.content : '',
    });
  });
}
