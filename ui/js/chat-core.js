// chat-core.js: quarry's streamed, cited chat from a browser (or Node 20+), with no dependency,
// no DOM and no Office.js. The single copy: quarry's web console (ui/, served by quarry at
// /ui/js/chat-core.js) imports it, and so does the Outlook/Word task pane (through
// plugins/outlook-word-addin/quarry-chat.js). It knows quarry's HTTP API (POST /v1/chat/completions with stream:true, the SSE
// chunks, the citations, the error object) and nothing about where the token or the text come from.
//
// Tokens are passed in by the caller for each request and never stored (no localStorage,
// sessionStorage or cookies): a token in storage is readable by any script on the origin.

/** The most UTF-8 bytes of selected text sent as context. quarry refuses a last user message over
 * 16 KiB and searches with its first 4 KiB, so the question goes first and the context is cut. */
export const MAX_CONTEXT_BYTES = 8000;

/** An error with what the user should read (message), the HTTP status and quarry's error code. */
export class QuarryError extends Error {
  constructor(message, { status = 0, code = '', retryAfter = null, requestId = null } = {}) {
    super(message);
    this.name = 'QuarryError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
    this.requestId = requestId;
  }
}

/** The longest prefix of text whose UTF-8 encoding fits in maxBytes, cut at a character. */
export function clipUtf8(text, maxBytes) {
  const bytes = new TextEncoder().encode(text);
  if (bytes.length <= maxBytes) return { text, clipped: false };
  let end = maxBytes;
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--; // do not split a character
  return { text: new TextDecoder().decode(bytes.subarray(0, end)), clipped: true };
}

/**
 * The user message quarry gets: the question first (quarry searches with the message's first
 * 4 KiB), then the selected text as quoted context. quarry ignores system messages (its own
 * prompt governs), so the context has to travel in the user message.
 */
export function buildUserMessage(question, context = '', source = 'the selected text') {
  const q = String(question || '').trim();
  const c = String(context || '').trim();
  if (!c) return q;
  const { text, clipped } = clipUtf8(c, MAX_CONTEXT_BYTES);
  const quoted = text.split(/\r?\n/).map((l) => `> ${l}`).join('\n');
  return `${q}\n\nContext (${source}${clipped ? ', shortened' : ''}):\n${quoted}`;
}

/** The request body for POST /v1/chat/completions. history: earlier {role, content} turns. */
export function buildChatRequest({ question, context = '', source, history = [], k } = {}) {
  const body = {
    model: 'quarry',
    stream: true,
    messages: [...history, { role: 'user', content: buildUserMessage(question, context, source) }],
  };
  if (k) body.k = k;
  return body;
}

/**
 * An incremental parser of a text/event-stream. push() takes decoded text as it arrives (any
 * split, CRLF or LF), end() flushes the last event; onData gets each event's data (its data: lines
 * joined with \n). Comments (":") and other fields (event:, id:, retry:) are ignored.
 */
export function createSSEParser(onData) {
  let buf = '';
  let data = [];
  const line = (l) => {
    if (l === '') {
      if (data.length) onData(data.join('\n'));
      data = [];
    } else if (l.startsWith('data:')) {
      data.push(l.slice(l[5] === ' ' ? 6 : 5));
    }
  };
  return {
    push(text) {
      buf += text;
      let i;
      while ((i = buf.search(/\r\n|\r|\n/)) >= 0) {
        if (buf[i] === '\r' && i + 1 === buf.length) break; // a CR that may be the start of CRLF
        const nl = buf[i] === '\r' && buf[i + 1] === '\n' ? 2 : 1;
        line(buf.slice(0, i));
        buf = buf.slice(i + nl);
      }
    },
    end() {
      if (buf) line(buf.replace(/\r$/, ''));
      buf = '';
      line('');
    },
  };
}

/** Citations from a chunk: quarry's top-level citations, or Azure-style delta.context.citations. */
export function citationsOf(chunk) {
  if (Array.isArray(chunk?.citations)) return chunk.citations;
  const ctx = chunk?.choices?.[0]?.delta?.context ?? chunk?.choices?.[0]?.message?.context;
  return Array.isArray(ctx?.citations) ? ctx.citations : null;
}

/** Citations numbered and trimmed to what a list shows: [{number, title, uri, headings, snippet}]. */
export function normalizeCitations(citations) {
  return (citations || []).map((c, i) => ({
    number: Number.isInteger(c.number) ? c.number : i + 1,
    title: c.title || c.doc_id || c.uri || `Source ${i + 1}`,
    uri: typeof c.uri === 'string' ? c.uri : typeof c.url === 'string' ? c.url : '',
    headings: typeof c.headings === 'string' ? c.headings : '',
    snippet: typeof c.snippet === 'string' ? c.snippet : typeof c.content === 'string' ? c.content : '',
    docId: c.doc_id || '',
  }));
}

/** Only http(s) links become clickable: a javascript: or data: uri from a document must not. */
export function safeHref(uri) {
  try {
    const u = new URL(uri);
    return u.protocol === 'https:' || u.protocol === 'http:' ? u.href : null;
  } catch {
    return null;
  }
}

/** The sentence a user reads for a failed request (status 0: the network, CORS or TLS). */
export function describeError(status, body = null, retryAfter = null) {
  const server = body?.error?.message;
  const code = body?.error?.code || '';
  switch (status) {
    case 0:
      return 'quarry could not be reached. Check the network, and that quarry lists this page\'s origin in server.cors_origins.';
    case 400:
      return `quarry refused the question: ${server || 'invalid request'}.`;
    case 401:
      return 'You are not signed in to quarry, or your sign-in has expired. Sign in again and retry.';
    case 403:
      return code === 'cors_refused'
        ? 'quarry does not accept requests from this page (its origin is not in server.cors_origins).'
        : 'You may not ask quarry questions (your account lacks the chat permission).';
    case 413:
      return 'The question with the selected text is too long for quarry. Select less text.';
    case 429:
      return `quarry is handling too many of your requests. Try again${retryAfter ? ` in ${retryAfter} s` : ' shortly'}.`;
    case 503:
      return code === 'overloaded'
        ? 'quarry is busy right now. Try again in a moment.'
        : 'quarry is unavailable right now (a service it depends on is down). Try again later.';
    case 504:
      return 'quarry took too long to search. Try a shorter or more specific question.';
    default:
      return status >= 500
        ? `quarry failed to answer (HTTP ${status}${server ? `: ${server}` : ''}).`
        : `quarry refused the request (HTTP ${status}${server ? `: ${server}` : ''}).`;
  }
}

async function errorFromResponse(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    /* not JSON: a proxy's page */
  }
  const retryAfter = res.headers.get('Retry-After');
  return new QuarryError(describeError(res.status, body, retryAfter), {
    status: res.status,
    code: body?.error?.code || '',
    retryAfter,
    requestId: res.headers.get('X-Request-Id'),
  });
}

/**
 * Ask quarry and stream the answer.
 *   baseUrl   quarry's origin, e.g. https://quarry.contoso.com (no trailing /v1)
 *   token     the bearer token for this request (an Entra access token for quarry's API)
 *   request   the body, from buildChatRequest()
 *   signal    an AbortSignal: aborting stops the stream (the promise then rejects with AbortError)
 *   onDelta(text, fullText)   each piece of the answer as it arrives
 *   onCitations(citations)    the normalized citations when they arrive
 *   fetchImpl                 defaults to globalThis.fetch
 * Resolves to {text, citations, finishReason, mode, reason} (mode "extractive", with its reason,
 * when no model answered and quarry quoted the passages instead); rejects with a QuarryError for an HTTP error,
 * an error event in the stream or a stream that ends without [DONE].
 */
export async function streamChat({ baseUrl, token, request, signal, onDelta = () => {}, onCitations = () => {}, fetchImpl }) {
  const doFetch = fetchImpl || globalThis.fetch;
  const url = `${String(baseUrl).replace(/\/+$/, '')}/v1/chat/completions`;
  let res;
  try {
    res = await doFetch(url, {
      method: 'POST',
      headers: {
        Authorization: `Bearer ${token}`,
        'Content-Type': 'application/json',
        Accept: 'text/event-stream',
      },
      body: JSON.stringify(request),
      signal,
    });
  } catch (e) {
    if (e?.name === 'AbortError') throw e;
    throw new QuarryError(describeError(0), { status: 0, code: 'network' });
  }
  if (!res.ok) throw await errorFromResponse(res);

  const type = res.headers.get('Content-Type') || '';
  if (!type.startsWith('text/event-stream')) {
    // a server (or proxy) that answered without streaming: take the whole chat.completion
    const body = await res.json();
    const text = body?.choices?.[0]?.message?.content || '';
    const citations = normalizeCitations(citationsOf(body));
    if (text) onDelta(text, text);
    onCitations(citations);
    return {
      text,
      citations,
      finishReason: body?.choices?.[0]?.finish_reason || null,
      mode: body?.quarry?.mode || null,
      reason: body?.quarry?.reason || null,
    };
  }

  const out = { text: '', citations: [], finishReason: null, mode: null, reason: null };
  let done = false;
  let failure = null;
  const parser = createSSEParser((data) => {
    if (done || failure) return;
    if (data.trim() === '[DONE]') {
      done = true;
      return;
    }
    let chunk;
    try {
      chunk = JSON.parse(data);
    } catch {
      return; // not JSON: skip, as OpenAI clients do
    }
    if (chunk.error) {
      failure = new QuarryError(
        `quarry stopped the answer: ${chunk.error.message || chunk.error.code || 'error'}.`,
        { status: res.status, code: chunk.error.code || 'stream_error', requestId: res.headers.get('X-Request-Id') });
      return;
    }
    const choice = chunk.choices?.[0];
    const piece = choice?.delta?.content;
    if (typeof piece === 'string' && piece) {
      out.text += piece;
      onDelta(piece, out.text);
    }
    if (choice?.finish_reason) out.finishReason = choice.finish_reason;
    if (chunk.quarry?.mode) out.mode = chunk.quarry.mode;
    if (chunk.quarry?.reason) out.reason = chunk.quarry.reason;
    const cites = citationsOf(chunk);
    if (cites) {
      out.citations = normalizeCitations(cites);
      onCitations(out.citations);
    }
  });

  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  try {
    for (;;) {
      const { value, done: eof } = await reader.read();
      if (eof) break;
      parser.push(decoder.decode(value, { stream: true }));
      if (done || failure) break;
    }
    if (!done && !failure) {
      parser.push(decoder.decode());
      parser.end();
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  if (failure) throw failure;
  if (!done)
    throw new QuarryError('The answer was cut off (the connection closed early). Try again.', {
      status: res.status,
      code: 'incomplete',
      requestId: res.headers.get('X-Request-Id'),
    });
  return out;
}
