// dom.js: the few DOM helpers the console uses. Every piece of text from quarry (answers, titles,
// snippets, URIs) becomes a text node; the only markup ever built from quarry's text is the <mark>
// element of a search snippet (markedText), and links only for http(s) addresses (safeHref).

/** An element: h('button', {class: 'x', onclick: fn, 'data-testid': 'y'}, 'text', child, ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Removes every child of el, then appends children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/**
 * A snippet as DOM nodes: quarry marks matches with <mark>...</mark> and escapes nothing else for
 * HTML, so the text is split on exactly those two tags and every other character, '<' and '&'
 * included, stays text. An unbalanced tag is shown as text.
 */
export function markedText(snippet) {
  const frag = document.createDocumentFragment();
  const s = String(snippet ?? '');
  const re = /<mark>([\s\S]*?)<\/mark>/g;
  let last = 0;
  let m;
  while ((m = re.exec(s))) {
    if (m.index > last) frag.append(document.createTextNode(s.slice(last, m.index)));
    const mark = document.createElement('mark');
    mark.textContent = m[1];
    frag.append(mark);
    last = re.lastIndex;
  }
  if (last < s.length) frag.append(document.createTextNode(s.slice(last)));
  return frag;
}

/** A snippet without its <mark> tags (for copying and for citations shown as plain text). */
export function unmarked(snippet) {
  return String(snippet ?? '').replace(/<\/?mark>/g, '');
}

/** Announces a message in a live region (status: polite; alert: assertive). */
export function announce(el, message, kind = 'info') {
  el.textContent = message || '';
  el.className = `notice notice-${kind}`;
  el.hidden = !message;
}

/** A date as the reader's locale writes it, or '' for nothing. */
export function formatDate(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}
