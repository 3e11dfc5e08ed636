// admin.js: the administration screen, shown only to administrators (GET /v1/me is_admin; quarry
// refuses these routes to everybody else anyway). Uploads (multipart POST /v1/documents: "file"
// parts and one "acl" field per principal) with their jobs followed through GET /v1/jobs/{id};
// the document list (GET /v1/documents, cursor pages) with each document's ACL edited in place
// (PATCH /v1/documents/{id}/acl) and deletion after a confirmation; the index status (/v1/status);
// service API keys (GET/POST /v1/keys, DELETE /v1/keys/{id}: a new key's secret is shown once, in
// a read-only field, and never kept); the audit log's latest records (GET /v1/audit).

import { h, replace, announce, formatDate } from './dom.js';
import { api, getSession, plainFetch } from './api.js';

const FINAL = new Set(['succeeded', 'failed', 'cancelled']);
const SCOPES = [
  ['search', 'search: POST /v1/search'],
  ['chat', 'chat: chat completions, ask, models'],
  ['admin', 'admin: documents, index, keys, audit'],
  ['on_behalf_of', 'on_behalf_of: act for the user named in X-Quarry-User'],
];
const AUDIT_ROWS = 50;
const enc = encodeURIComponent;

/** "group:staff, user:alice" (commas, semicolons or new lines) as a list of principals. */
export function parseAcl(text) {
  return String(text || '').split(/[,;\n]/).map((p) => p.trim()).filter(Boolean);
}

export function createAdmin(ctx) {
  const status = h('p', { class: 'notice', role: 'status', hidden: true });

  // ---- upload --------------------------------------------------------------------------------
  let files = [];
  const fileInput = h('input', { id: 'upload-input', type: 'file', multiple: true, 'data-testid': 'upload-input', class: 'file-input' });
  const fileList = h('ul', { class: 'file-list', 'aria-label': 'Files to upload' });
  const drop = h('div', { class: 'dropzone' },
    h('label', { for: 'upload-input' }, 'Files (drop them here, or choose)'),
    fileInput, fileList);
  const aclInput = h('input', {
    id: 'upload-acl', type: 'text', 'data-testid': 'upload-acl', placeholder: 'group:staff, user:alice', autocomplete: 'off', 'aria-describedby': 'upload-acl-hint',
  });
  const uploadBtn = h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'upload-submit' }, 'Upload');
  const jobs = h('ul', { class: 'jobs', 'aria-label': 'Uploads' });
  const uploadForm = h('form', { class: 'stack' }, drop,
    h('div', { class: 'field' }, h('label', { for: 'upload-acl' }, 'Who may read them'), aclInput,
      h('p', { id: 'upload-acl-hint', class: 'hint' }, 'Principals separated by commas: public, user:<uid>, group:<name>. Empty: administrators only.')),
    h('div', { class: 'row' }, uploadBtn), jobs);

  function setFiles(list) {
    files = Array.from(list || []);
    replace(fileList, files.map((f) => h('li', {}, `${f.name} (${Math.max(1, Math.round(f.size / 1024))} KiB)`)));
  }
  fileInput.addEventListener('change', () => setFiles(fileInput.files));
  for (const type of ['dragenter', 'dragover']) {
    drop.addEventListener(type, (ev) => {
      ev.preventDefault();
      drop.classList.add('dragging');
    });
  }
  drop.addEventListener('dragleave', () => drop.classList.remove('dragging'));
  drop.addEventListener('drop', (ev) => {
    ev.preventDefault();
    drop.classList.remove('dragging');
    setFiles(ev.dataTransfer?.files);
  });

  async function follow(jobId, stateEl, detail) {
    for (;;) {
      let job;
      try {
        job = await api(`/v1/jobs/${enc(jobId)}`, { what: 'follow uploads' });
      } catch (e) {
        stateEl.textContent = 'unknown';
        detail.textContent = e.message;
        return;
      }
      stateEl.textContent = job.state;
      stateEl.className = `job-state state-${job.state}`;
      const p = job.progress || {};
      detail.textContent = `${p.done ?? 0} of ${p.total ?? 0} documents${p.failed ? `, ${p.failed} failed` : ''}`;
      if (FINAL.has(job.state)) {
        const failed = (job.results || []).filter((r) => r.status === 'failed');
        if (failed.length) detail.textContent += `: ${failed.map((r) => `${r.doc_id}: ${r.error}`).join('; ')}`;
        loadDocs(false);
        return;
      }
      await new Promise((r) => setTimeout(r, 500));
      if (!getSession()) return;
    }
  }

  uploadForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!files.length) {
      announce(status, 'Choose or drop at least one file.', 'error');
      fileInput.focus();
      return;
    }
    const form = new FormData();
    for (const p of parseAcl(aclInput.value)) form.append('acl', p);
    for (const f of files) form.append('file', f, f.name);
    const names = files.map((f) => f.name).join(', ');
    const stateEl = h('span', { class: 'job-state', 'data-testid': 'job-state' }, 'uploading');
    const detail = h('span', { class: 'muted' });
    jobs.prepend(h('li', { class: 'job' }, h('span', { class: 'job-files' }, names), ' ', stateEl, ' ', detail));
    uploadBtn.disabled = true;
    try {
      const r = await api('/v1/documents', { method: 'POST', form, what: 'upload documents' });
      setFiles([]);
      fileInput.value = '';
      announce(status, '');
      if (r.job_id) {
        stateEl.textContent = r.state || 'queued';
        follow(r.job_id, stateEl, detail);
      } else {
        stateEl.textContent = 'succeeded';
        stateEl.className = 'job-state state-succeeded';
        detail.textContent = `${r.doc_id}: ${r.result}, ${r.chunks} chunks`;
        loadDocs(false);
      }
    } catch (e) {
      stateEl.textContent = 'failed';
      stateEl.className = 'job-state state-failed';
      detail.textContent = e.message;
    } finally {
      uploadBtn.disabled = false;
    }
  });

  // ---- documents -----------------------------------------------------------------------------
  let cursor = null;
  const docFilter = h('input', { id: 'doc-filter', type: 'search', autocomplete: 'off', placeholder: 'id, title or principal' });
  const docs = h('ul', { class: 'docs', 'aria-label': 'Documents' });
  const moreDocs = h('button', { type: 'button', class: 'btn', hidden: true }, 'More documents');
  const reloadDocs = h('button', { type: 'button', class: 'btn btn-quiet' }, 'Reload');

  function applyFilter() {
    const f = docFilter.value.trim().toLowerCase();
    for (const li of docs.children) li.hidden = !!f && !li.dataset.search.includes(f);
  }
  docFilter.addEventListener('input', applyFilter);

  function docRow(d) {
    const aclText = h('span', { class: 'acl' }, d.acl?.length ? d.acl.join(', ') : 'administrators only');
    const actions = h('div', { class: 'row' });
    const panel = h('div', { class: 'doc-panel', hidden: true });
    const li = h('li', { class: 'doc-row', 'data-testid': 'doc-row', 'data-doc-id': d.doc_id },
      h('div', { class: 'doc-main' },
        h('p', { class: 'doc-title' }, d.title || d.doc_id),
        h('p', { class: 'doc-id' }, d.doc_id),
        h('p', { class: 'doc-meta' }, h('span', { class: 'label' }, 'Readers: '), aclText),
        h('p', { class: 'muted small' }, `${d.content_type || ''} - ${d.chunk_count} chunks - updated ${formatDate(d.updated)}`)),
      actions, panel);
    li.dataset.search = `${d.doc_id} ${d.title} ${(d.acl || []).join(' ')}`.toLowerCase();

    const editBtn = h('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'acl-edit', 'aria-label': `Edit readers of ${d.doc_id}` }, 'Edit readers');
    const delBtn = h('button', { type: 'button', class: 'btn btn-small btn-danger', 'data-testid': 'doc-delete', 'aria-label': `Delete ${d.doc_id}` }, 'Delete');
    actions.append(editBtn, delBtn);

    editBtn.addEventListener('click', () => {
      const id = `acl-${Math.random().toString(36).slice(2)}`;
      const input = h('input', { id, type: 'text', value: (d.acl || []).join(', '), 'data-testid': 'acl-input', autocomplete: 'off' });
      const save = h('button', { type: 'submit', class: 'btn btn-primary btn-small', 'data-testid': 'acl-save' }, 'Save readers');
      const cancel = h('button', { type: 'button', class: 'btn btn-quiet btn-small' }, 'Cancel');
      const msg = h('p', { class: 'notice', role: 'status', hidden: true });
      const form = h('form', { class: 'stack' }, h('div', { class: 'field' }, h('label', { for: id }, `Readers of ${d.doc_id}`), input), h('div', { class: 'row' }, save, cancel), msg);
      cancel.addEventListener('click', () => {
        panel.hidden = true;
        editBtn.focus();
      });
      form.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        save.disabled = true;
        try {
          const r = await api(`/v1/documents/${enc(d.doc_id)}/acl?refresh=wait_for`, {
            method: 'PATCH', json: { acl: parseAcl(input.value) }, what: 'change who may read documents',
          });
          d.acl = r.acl || parseAcl(input.value);
          aclText.textContent = d.acl.length ? d.acl.join(', ') : 'administrators only';
          li.dataset.search = `${d.doc_id} ${d.title} ${d.acl.join(' ')}`.toLowerCase();
          panel.hidden = true;
          announce(status, `Readers of ${d.doc_id} saved.`);
          editBtn.focus();
        } catch (e) {
          announce(msg, e.message, 'error');
        } finally {
          save.disabled = false;
        }
      });
      replace(panel, form);
      panel.hidden = false;
      input.focus();
    });

    delBtn.addEventListener('click', () => {
      const yes = h('button', { type: 'button', class: 'btn btn-danger btn-small', 'data-testid': 'doc-delete-confirm' }, 'Delete for good');
      const no = h('button', { type: 'button', class: 'btn btn-quiet btn-small' }, 'Keep it');
      const msg = h('p', { class: 'notice', role: 'status', hidden: true });
      no.addEventListener('click', () => {
        panel.hidden = true;
        delBtn.focus();
      });
      yes.addEventListener('click', async () => {
        yes.disabled = true;
        try {
          await api(`/v1/documents/${enc(d.doc_id)}?refresh=wait_for`, { method: 'DELETE', what: 'delete documents' });
          li.remove();
          announce(status, `${d.doc_id} deleted.`);
          docFilter.focus();
        } catch (e) {
          announce(msg, e.message, 'error');
          yes.disabled = false;
        }
      });
      replace(panel, h('div', { class: 'confirm', role: 'group', 'aria-label': 'Confirm deletion' },
        h('p', {}, `Delete ${d.doc_id}? It disappears from every search at once.`), h('div', { class: 'row' }, yes, no), msg));
      panel.hidden = false;
      no.focus();
    });
    return li;
  }

  async function loadDocs(append) {
    try {
      const q = new URLSearchParams({ limit: '50' });
      if (append && cursor) q.set('cursor', cursor);
      const page = await api(`/v1/documents?${q}`, { what: 'list documents' });
      const rows = (page.documents || []).map(docRow);
      if (append) docs.append(...rows);
      else replace(docs, rows);
      cursor = page.next_cursor || null;
      moreDocs.hidden = !cursor;
      if (!docs.children.length) replace(docs, h('li', { class: 'muted' }, 'No documents yet.'));
      applyFilter();
    } catch (e) {
      announce(status, e.message, 'error');
    }
  }
  moreDocs.addEventListener('click', () => loadDocs(true));
  reloadDocs.addEventListener('click', () => loadDocs(false));

  // ---- index status --------------------------------------------------------------------------
  const indexInfo = h('dl', { class: 'facts' });
  const indexRefresh = h('button', { type: 'button', class: 'btn btn-quiet' }, 'Refresh');
  async function loadIndex() {
    try {
      // /v1/status answers 503 with the same body when not ready: read it either way
      const res = await plainFetch('/v1/status', { headers: { Authorization: `Bearer ${getSession()?.token}` }, cache: 'no-store' });
      const body = await res.json();
      const c = body.checks || {};
      const ix = c.indexes || {};
      const facts = [
        ['Status', body.status], ['Store', c.store], ['Directory (LDAP)', c.ldap], ['Vector index', `${c.index} (${ix.vector})`],
        ['BM25 index', ix.bm25], ['Documents', c.documents], ['Chunks', c.chunks], ['Vector generation', c.index_generation],
        ['Vectors', c.index_vectors], ['Chunks left out of vector search', ix.vectors_skipped],
        ['Maintainer', ix.maintainer_busy ? 'working' : 'idle'],
      ].filter(([, v]) => v !== undefined && v !== null);
      replace(indexInfo, facts.map(([k, v]) => [h('dt', {}, k), h('dd', {}, String(v))]));
    } catch {
      replace(indexInfo, h('dt', {}, 'Status'), h('dd', {}, 'unknown (quarry did not answer)'));
    }
  }
  indexRefresh.addEventListener('click', loadIndex);

  // ---- API keys ------------------------------------------------------------------------------
  const keyStatus = h('p', { class: 'notice', role: 'status', hidden: true });
  const keyList = h('ul', { class: 'keys', 'aria-label': 'API keys' });
  const keyName = h('input', { id: 'key-name', type: 'text', maxlength: 128, autocomplete: 'off', required: true, 'data-testid': 'key-name', placeholder: 'intranet search widget' });
  const scopeBoxes = SCOPES.map(([scope, label]) => {
    const id = `key-scope-${scope}`;
    const box = h('input', { id, type: 'checkbox', value: scope, 'data-testid': `key-scope-${scope}` });
    return { box, el: h('div', { class: 'check' }, box, h('label', { for: id }, label)) };
  });
  const keyCreate = h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'key-create' }, 'Create key');
  const secretPanel = h('div', { class: 'secret-panel', hidden: true });
  const keyForm = h('form', { class: 'stack' },
    h('div', { class: 'field' }, h('label', { for: 'key-name' }, 'Name (what the key is for)'), keyName),
    h('fieldset', { class: 'scopes' }, h('legend', {}, 'Scopes'), scopeBoxes.map((s) => s.el)),
    h('div', { class: 'row' }, keyCreate), secretPanel);

  function showSecret(created) {
    const input = h('input', { id: 'key-secret', type: 'text', readonly: true, value: created.key, 'data-testid': 'key-secret', 'aria-describedby': 'key-secret-warning', autocomplete: 'off', spellcheck: 'false' });
    const copy = h('button', { type: 'button', class: 'btn', 'data-testid': 'key-copy' }, 'Copy');
    const done = h('button', { type: 'button', class: 'btn btn-quiet', 'data-testid': 'key-secret-done' }, 'I have stored it');
    copy.addEventListener('click', async () => {
      input.select();
      try {
        await navigator.clipboard.writeText(input.value);
        announce(keyStatus, 'Key copied to the clipboard.');
      } catch {
        announce(keyStatus, 'Copying was refused: the key is selected, copy it with Ctrl+C.', 'error');
      }
    });
    done.addEventListener('click', () => {
      replace(secretPanel);
      secretPanel.hidden = true;
      keyName.focus();
    });
    replace(secretPanel,
      h('p', { id: 'key-secret-warning', class: 'notice notice-warn' }, `Key "${created.name}" created. Copy it now: quarry keeps only its hash and will not show it again.`),
      h('div', { class: 'field' }, h('label', { for: 'key-secret' }, 'The new key'), h('div', { class: 'row nowrap' }, input, copy)),
      h('div', { class: 'row' }, done));
    secretPanel.hidden = false;
    input.focus();
    input.select();
  }

  function keyRow(k) {
    const actions = h('div', { class: 'row' });
    const panel = h('div', { class: 'doc-panel', hidden: true });
    const state = k.revoked_at ? `revoked ${formatDate(k.revoked_at)}` : 'active';
    const li = h('li', { class: `key-row${k.revoked_at ? ' revoked' : ''}`, 'data-testid': 'key-row', 'data-key-id': k.id },
      h('div', { class: 'doc-main' },
        h('p', { class: 'doc-title' }, k.name, ' ', h('span', { class: `job-state ${k.revoked_at ? 'state-failed' : 'state-succeeded'}`, 'data-testid': 'key-state' }, k.revoked_at ? 'revoked' : 'active')),
        h('p', { class: 'doc-id' }, `qk_${k.id}_...`),
        h('p', { class: 'doc-meta' }, h('span', { class: 'label' }, 'Scopes: '), (k.scopes || []).join(', ')),
        h('p', { class: 'muted small' }, `created ${formatDate(k.created_at)} - ${state}`)),
      actions, panel);
    if (!k.revoked_at) {
      const revoke = h('button', { type: 'button', class: 'btn btn-small btn-danger', 'data-testid': 'key-revoke', 'aria-label': `Revoke key ${k.name} (${k.id})` }, 'Revoke');
      actions.append(revoke);
      revoke.addEventListener('click', () => {
        const yes = h('button', { type: 'button', class: 'btn btn-danger btn-small', 'data-testid': 'key-revoke-confirm' }, 'Revoke for good');
        const no = h('button', { type: 'button', class: 'btn btn-quiet btn-small' }, 'Keep it');
        const msg = h('p', { class: 'notice', role: 'status', hidden: true });
        no.addEventListener('click', () => {
          panel.hidden = true;
          revoke.focus();
        });
        yes.addEventListener('click', async () => {
          yes.disabled = true;
          try {
            await api(`/v1/keys/${enc(k.id)}`, { method: 'DELETE', what: 'revoke API keys' });
            announce(keyStatus, `Key ${k.name} revoked.`);
            await loadKeys();
            await loadAudit();
            keyName.focus();
          } catch (e) {
            announce(msg, e.message, 'error');
            yes.disabled = false;
          }
        });
        replace(panel, h('div', { class: 'confirm', role: 'group', 'aria-label': 'Confirm revocation' },
          h('p', {}, `Revoke ${k.name}? Every program using it is refused at once; this cannot be undone.`), h('div', { class: 'row' }, yes, no), msg));
        panel.hidden = false;
        no.focus();
      });
    }
    return li;
  }

  async function loadKeys() {
    try {
      const list = await api('/v1/keys', { what: 'list API keys' });
      // newest first: the one just created is on top
      const rows = (list.data || []).slice().reverse().map(keyRow);
      replace(keyList, rows.length ? rows : h('li', { class: 'muted' }, 'No API keys yet.'));
    } catch (e) {
      announce(keyStatus, e.message, 'error');
    }
  }

  keyForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const scopes = scopeBoxes.filter((s) => s.box.checked).map((s) => s.box.value);
    if (!keyName.value.trim()) {
      announce(keyStatus, 'Give the key a name.', 'error');
      keyName.focus();
      return;
    }
    if (!scopes.length) {
      announce(keyStatus, 'Choose at least one scope.', 'error');
      scopeBoxes[0].box.focus();
      return;
    }
    keyCreate.disabled = true;
    try {
      const created = await api('/v1/keys', { method: 'POST', json: { name: keyName.value.trim(), scopes }, what: 'create API keys' });
      announce(keyStatus, '');
      keyName.value = '';
      for (const s of scopeBoxes) s.box.checked = false;
      showSecret(created);
      await loadKeys();
      await loadAudit();
    } catch (e) {
      announce(keyStatus, e.message, 'error');
    } finally {
      keyCreate.disabled = false;
    }
  });

  const keysCard = h('section', { class: 'card', 'aria-labelledby': 'keys-title' }, h('h2', { id: 'keys-title' }, 'API keys'),
    h('p', { class: 'hint' }, 'Keys let programs call quarry without a person signing in. Only an administrator signed in as a person may create them.'),
    keyStatus, keyForm, h('h3', {}, 'Keys'), keyList);

  // ---- audit log -----------------------------------------------------------------------------
  const auditStatus = h('p', { class: 'notice', role: 'status', hidden: true });
  const auditList = h('ul', { class: 'audit', 'aria-label': 'Audit records, newest first' });
  const auditRefresh = h('button', { type: 'button', class: 'btn btn-quiet', 'data-testid': 'audit-refresh' }, 'Refresh');
  function auditRow(a) {
    const ids = Array.isArray(a.doc_ids) ? a.doc_ids.join(', ') : '';
    const who = a.key_id && !String(a.user || '').startsWith('key:') ? `${a.user} (key ${a.key_id})` : a.user;
    return h('li', { class: 'audit-row', 'data-testid': 'audit-row', 'data-action': a.action || '' },
      h('span', { class: 'audit-time' }, formatDate(a.time)),
      h('span', { class: 'audit-action' }, a.action || '-'),
      h('span', { class: 'audit-user' }, who || '-', h('span', { class: 'muted' }, ` via ${a.auth || '-'}`)),
      h('span', { class: 'audit-route doc-id' }, a.route || ''),
      h('span', { class: 'audit-ids' }, ids ? [h('span', { class: 'label' }, 'ids: '), ids] : ''));
  }
  async function loadAudit() {
    try {
      const list = await api(`/v1/audit?limit=${AUDIT_ROWS}`, { what: 'read the audit log' });
      const rows = (list.data || []).map(auditRow);
      replace(auditList, rows.length ? rows : h('li', { class: 'muted' }, 'The audit log is empty.'));
      announce(auditStatus, '');
    } catch (e) {
      replace(auditList);
      announce(auditStatus, e.message, 'error');
    }
  }
  auditRefresh.addEventListener('click', loadAudit);
  const auditCard = h('section', { class: 'card', 'aria-labelledby': 'audit-title' }, h('h2', { id: 'audit-title' }, 'Audit log'),
    h('p', { class: 'hint' }, `The latest ${AUDIT_ROWS} records, newest first: searches, answers, changes and refused credentials.`),
    h('div', { class: 'row' }, auditRefresh), auditStatus, auditList);

  const el = h('section', { class: 'screen screen-admin', 'aria-labelledby': 'admin-title' },
    h('h1', { id: 'admin-title' }, 'Administration'), status,
    h('section', { class: 'card', 'aria-labelledby': 'upload-title' }, h('h2', { id: 'upload-title' }, 'Upload documents'), uploadForm),
    h('section', { class: 'card', 'aria-labelledby': 'docs-title' }, h('h2', { id: 'docs-title' }, 'Documents'),
      h('div', { class: 'field' }, h('label', { for: 'doc-filter' }, 'Show only documents matching'), docFilter),
      h('div', { class: 'row' }, reloadDocs), docs, moreDocs),
    h('section', { class: 'card', 'aria-labelledby': 'index-title' }, h('h2', { id: 'index-title' }, 'Index'), indexInfo, indexRefresh),
    keysCard, auditCard);

  return {
    el,
    show() {
      if (!ctx.state.me?.is_admin) {
        replace(el, h('h1', { id: 'admin-title' }, 'Administration'), h('p', { class: 'notice notice-error', role: 'alert' }, 'Only administrators may use this screen.'));
        return;
      }
      // one after another: quarry runs at most server.user_share (2 by default) requests of one
      // user at once and answers 429 to the rest
      (async () => {
        await loadDocs(false);
        await loadIndex();
        await loadKeys();
        await loadAudit();
      })();
    },
  };
}
