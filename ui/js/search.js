// search.js: the search screen. POST /v1/search with the query, the mode and the filters quarry
// knows (filters.content_type, filters.uri_prefix, filters.updated_after); results show their
// snippets with quarry's <mark> highlights (built as DOM nodes, never as HTML) and further pages
// come from next_cursor, sent back with the same query and filters.

import { h, replace, markedText, announce } from './dom.js';
import { api } from './api.js';
import { safeHref } from './chat-core.js';

const TYPES = ['text/markdown', 'text/plain', 'text/html', 'application/pdf',
  'application/vnd.openxmlformats-officedocument.wordprocessingml.document'];

export function createSearch() {
  let last = null; // the body of the last search, for the next page
  const status = h('p', { class: 'notice', role: 'status', hidden: true });
  const query = h('input', { id: 'search-input', type: 'search', 'data-testid': 'search-input', autocomplete: 'off', required: true });
  const type = h('select', { id: 'search-type' }, h('option', { value: '' }, 'Any type'), TYPES.map((t) => h('option', { value: t }, t)));
  const prefix = h('input', { id: 'search-prefix', type: 'text', placeholder: 'e.g. policies/', autocomplete: 'off' });
  const after = h('input', { id: 'search-after', type: 'date' });
  // no mode sent by default: the server's retrieval.mode (bm25 with the built-in embedder)
  const mode = h('select', { id: 'search-mode' },
    h('option', { value: '' }, 'Default'),
    h('option', { value: 'hybrid' }, 'Hybrid'),
    h('option', { value: 'bm25' }, 'Words (BM25)'),
    h('option', { value: 'vector' }, 'Meaning (vectors)'));
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'search-submit' }, 'Search');
  const form = h('form', { class: 'search-form', role: 'search', 'aria-label': 'Search documents' },
    h('div', { class: 'field grow' }, h('label', { for: 'search-input' }, 'Search for'),
      h('div', { class: 'row nowrap' }, query, submit)),
    h('details', { class: 'filters' }, h('summary', {}, 'Filters'),
      h('div', { class: 'grid' },
        h('div', { class: 'field' }, h('label', { for: 'search-type' }, 'Type'), type),
        h('div', { class: 'field' }, h('label', { for: 'search-prefix' }, 'Source starts with'), prefix),
        h('div', { class: 'field' }, h('label', { for: 'search-after' }, 'Updated after'), after),
        h('div', { class: 'field' }, h('label', { for: 'search-mode' }, 'Ranking'), mode))));
  const results = h('ol', { class: 'results', 'aria-label': 'Results' });
  const more = h('button', { type: 'button', class: 'btn', hidden: true, 'data-testid': 'search-more' }, 'More results');

  function resultItem(r) {
    const href = safeHref(r.uri);
    return h('li', { class: 'result', 'data-testid': 'result', 'data-doc-id': r.doc_id },
      h('h2', { class: 'result-title' }, href ? h('a', { href, target: '_blank', rel: 'noopener noreferrer' }, r.title || r.doc_id) : r.title || r.doc_id),
      r.headings ? h('p', { class: 'headings' }, r.headings) : null,
      h('p', { class: 'snippet' }, markedText(r.snippet)),
      h('p', { class: 'meta' }, h('span', { class: 'doc-id' }, r.doc_id), r.uri && !href ? ` - ${r.uri}` : ''));
  }

  async function run(body, append) {
    submit.disabled = true;
    more.disabled = true;
    announce(status, 'Searching...');
    try {
      const page = await api('/v1/search', { method: 'POST', json: body, what: 'search' });
      const items = (page.results || []).map(resultItem);
      if (append) results.append(...items);
      else replace(results, items);
      last = { ...body, cursor: page.next_cursor || null };
      more.hidden = !page.next_cursor;
      const n = results.children.length;
      announce(status, n ? `${n} result${n === 1 ? '' : 's'}${page.next_cursor ? ', more available' : ''}.` : 'No results. Try other words or fewer filters.');
    } catch (e) {
      announce(status, e.message, 'error');
    } finally {
      submit.disabled = false;
      more.disabled = false;
    }
  }

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = query.value.trim();
    if (!q) {
      announce(status, 'Type what to search for.', 'error');
      query.focus();
      return;
    }
    const filters = {};
    if (type.value) filters.content_type = type.value;
    if (prefix.value.trim()) filters.uri_prefix = prefix.value.trim();
    if (after.value) filters.updated_after = after.value;
    const body = { query: q, k: 10 };
    if (mode.value) body.mode = mode.value;
    if (Object.keys(filters).length) body.filters = filters;
    run(body, false);
  });
  more.addEventListener('click', () => {
    if (last?.cursor) run(last, true);
  });

  const el = h('section', { class: 'screen screen-search', 'aria-labelledby': 'search-title' },
    h('h1', { id: 'search-title' }, 'Search'), form, status, results, more);
  return { el, show() { query.focus(); } };
}
