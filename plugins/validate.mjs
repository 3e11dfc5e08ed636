#!/usr/bin/env node
// Validates every manifest under plugins/, offline, and exits 1 on any error:
//   copilot-agent/appPackage/manifest.json        Teams/M365 app manifest, its bundled JSON schema
//   copilot-agent/appPackage/declarativeAgent.json declarative agent manifest, bundled schema
//   copilot-agent/appPackage/ai-plugin.json        API plugin manifest, bundled schema
//   copilot-agent/appPackage/apiSpecificationFile/openapi.json
//                                                  OpenAPI 3.0 subset: structure, $refs, every
//                                                  component schema compiles (ajv, strict), the
//                                                  fields match quarry's API, functions <-> operationIds
//   copilot-agent/appPackage/*.png                 sizes, colour type, outline transparency
//   outlook-word-addin/manifest.*.xml              well-formed, required elements in schema order,
//                                                  https URLs, resids, WebApplicationInfo (SSO)
// The JSON schemas are the copies @microsoft/app-manifest ships; network access is switched off
// while this runs (globalThis.fetch throws), so a schema that is not bundled is an error, never a
// download.
import { readFile, access } from 'node:fs/promises';
import { inflateSync } from 'node:zlib';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
// node validate.mjs [DIR]: DIR holds copilot-agent/ and outlook-word-addin/ (default: beside this file)
const here = resolve(process.argv[2] || dirname(fileURLToPath(import.meta.url)));

// No network: @microsoft/app-manifest would fetch a schema it does not bundle.
globalThis.fetch = async (url) => {
  throw new Error(`network access attempted during validation (${url}); validation must run offline`);
};

const { AppManifestUtils } = require('@microsoft/app-manifest');
const { OfficeAddinManifest } = require('office-addin-manifest');
const xml2js = require('xml2js');
const Ajv = require('ajv');
const addFormats = require('ajv-formats');

const errors = [];
let checks = 0;
const rel = (p) => p.slice(here.length + 1);
function fail(file, msg) {
  errors.push(`${rel(file)}: ${msg}`);
}
function ok(file, what) {
  checks++;
  console.log(`ok   ${rel(file)}: ${what}`);
}
async function exists(p) {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}
async function readJson(file) {
  return JSON.parse((await readFile(file, 'utf8')).replace(/^\uFEFF/, ''));
}

/** The bundled copy of a developer.microsoft.com JSON schema, or null. */
async function bundledSchema(url) {
  const m = /^https:\/\/developer\.microsoft\.com\/(?:[a-z]{2}(?:-[a-z]{2})?\/)?(json-schemas\/.+)$/i.exec(url || '');
  if (!m) return null;
  const pkg = dirname(require.resolve('@microsoft/app-manifest/package.json'));
  const file = join(pkg, 'build', m[1]);
  if (!(await exists(file))) return null;
  // the package's own loader makes the same two repairs (\a and \v are not JSON escapes)
  const raw = (await readFile(file, 'utf8')).replace(/\\a/g, '\\u0007').replace(/\\v/g, '\\u000b');
  return { file, schema: JSON.parse(raw) };
}

async function schemaCheck(file, kind, reader) {
  let raw;
  try {
    raw = await readJson(file);
  } catch (e) {
    fail(file, `not JSON: ${e.message}`);
    return null;
  }
  const before = errors.length;
  try {
    await reader(file); // the package's typed reader: unknown versions, wrong property types
  } catch (e) {
    fail(file, `not a valid ${kind}: ${e.message}`);
  }
  const bundled = await bundledSchema(raw.$schema);
  if (!bundled) {
    fail(file, `$schema ${raw.$schema} is not bundled with @microsoft/app-manifest (offline validation impossible)`);
    return raw;
  }
  const failures = await AppManifestUtils.validateAgainstSchema(raw, bundled.schema);
  for (const f of failures) fail(file, `schema: ${f}`);
  if (errors.length === before)
    ok(file, `${kind} valid against ${rel(bundled.file).replace(/^.*json-schemas\//, 'json-schemas/')}`);
  return raw;
}

// ---- PNG ------------------------------------------------------------------------------------

/** {width, height, colorType, pixels: RGBA Uint8Array} of an 8-bit non-interlaced PNG. */
function decodePng(buf) {
  const sig = '89504e470d0a1a0a';
  if (buf.subarray(0, 8).toString('hex') !== sig) throw new Error('not a PNG');
  let pos = 8, ihdr = null;
  const idat = [];
  while (pos < buf.length) {
    const len = buf.readUInt32BE(pos), type = buf.toString('ascii', pos + 4, pos + 8);
    const data = buf.subarray(pos + 8, pos + 8 + len);
    if (type === 'IHDR') ihdr = { width: data.readUInt32BE(0), height: data.readUInt32BE(4), depth: data[8], colorType: data[9], interlace: data[12] };
    else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') break;
    pos += 12 + len;
  }
  if (!ihdr) throw new Error('no IHDR');
  const channels = { 0: 1, 2: 3, 4: 2, 6: 4 }[ihdr.colorType];
  if (ihdr.depth !== 8 || !channels || ihdr.interlace) return { ...ihdr, pixels: null };
  const raw = inflateSync(Buffer.concat(idat));
  const stride = ihdr.width * channels, out = Buffer.alloc(ihdr.height * stride);
  for (let y = 0; y < ihdr.height; y++) {
    const f = raw[y * (stride + 1)], line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? out[y * stride + x - channels] : 0;
      const b = y ? out[(y - 1) * stride + x] : 0;
      const c = y && x >= channels ? out[(y - 1) * stride + x - channels] : 0;
      const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
      const pred = [0, a, b, (a + b) >> 1, pa <= pb && pa <= pc ? a : pb <= pc ? b : c][f];
      out[y * stride + x] = (line[x] + pred) & 0xff;
    }
  }
  const pixels = new Uint8Array(ihdr.width * ihdr.height * 4);
  for (let i = 0; i < ihdr.width * ihdr.height; i++) {
    const s = out.subarray(i * channels, (i + 1) * channels);
    const [r, g, b, al] = channels === 1 ? [s[0], s[0], s[0], 255] : channels === 2 ? [s[0], s[0], s[0], s[1]] : channels === 3 ? [s[0], s[1], s[2], 255] : s;
    pixels.set([r, g, b, al], i * 4);
  }
  return { ...ihdr, pixels };
}

async function checkIcon(file, size, outline) {
  if (!(await exists(file))) return fail(file, 'missing');
  let png;
  try {
    png = decodePng(await readFile(file));
  } catch (e) {
    return fail(file, `unreadable PNG: ${e.message}`);
  }
  if (png.width !== size || png.height !== size) return fail(file, `is ${png.width}x${png.height}, must be ${size}x${size}`);
  if (outline) {
    if (png.colorType !== 4 && png.colorType !== 6) return fail(file, 'the outline icon needs an alpha channel (transparent background)');
    if (!png.pixels) return fail(file, 'cannot check the pixels (use 8-bit, non-interlaced)');
    let transparent = 0, off = 0;
    for (let i = 0; i < png.pixels.length; i += 4) {
      const [r, g, b, a] = png.pixels.subarray(i, i + 4);
      if (a === 0) transparent++;
      else if (r !== 255 || g !== 255 || b !== 255) off++;
    }
    if (!transparent) return fail(file, 'the outline icon has no transparent pixel');
    if (off) return fail(file, `the outline icon must be white on transparent (${off} pixels of another colour)`);
  }
  ok(file, `${size}x${size} PNG${outline ? ', white on transparent' : ''}`);
}

// ---- OpenAPI --------------------------------------------------------------------------------

// What quarry's handlers read and write (api/request.c api_parse_search, api/search.c hit_json,
// source_json); an OpenAPI field outside these would be a field quarry ignores or never sends.
const QUARRY = {
  searchRequest: ['query', 'k', 'mode', 'filters', 'max_per_doc', 'cursor'],
  askRequest: ['question', 'k', 'mode', 'filters', 'max_per_doc', 'cursor'],
  filters: ['doc_ids', 'uri_prefix', 'content_type', 'updated_after'],
  hit: ['chunk_id', 'doc_id', 'title', 'uri', 'headings', 'score', 'snippet', 'start', 'end'],
  citation: ['number', 'chunk_id', 'doc_id', 'title', 'uri', 'headings', 'snippet', 'start', 'end', 'score'],
  routes: { searchKnowledgeBase: ['post', '/v1/search'], askQuestion: ['post', '/v1/ask'], createChatCompletion: ['post', '/v1/chat/completions'] },
};

function resolveRef(doc, ref) {
  if (!ref.startsWith('#/')) return undefined;
  return ref.slice(2).split('/').reduce((o, k) => (o == null ? o : o[k.replace(/~1/g, '/').replace(/~0/g, '~')]), doc);
}
function deref(doc, node) {
  let n = node, guard = 0;
  while (n && n.$ref && guard++ < 20) n = resolveRef(doc, n.$ref);
  return n;
}
function walk(node, fn, path = '#') {
  if (node && typeof node === 'object') {
    fn(node, path);
    for (const [k, v] of Object.entries(node)) walk(v, fn, `${path}/${k}`);
  }
}
/** An OpenAPI 3.0 schema object as a JSON Schema (nullable -> a type list; example dropped). */
function toJsonSchema(s) {
  if (Array.isArray(s)) return s.map(toJsonSchema);
  if (!s || typeof s !== 'object') return s;
  const o = {};
  for (const [k, v] of Object.entries(s)) {
    if (k === 'nullable' || k === 'example' || k === 'xml' || k === 'externalDocs') continue;
    if (k === '$ref') o.$ref = v.replace('#/components/schemas/', '#/$defs/');
    else if (k === 'properties' || k === '$defs') o[k] = Object.fromEntries(Object.entries(v).map(([n, x]) => [n, toJsonSchema(x)]));
    else o[k] = toJsonSchema(v);
  }
  if (s.nullable && typeof s.type === 'string') o.type = [s.type, 'null'];
  return o;
}

async function checkOpenApi(file, plugin, pluginFile) {
  let doc;
  try {
    doc = await readJson(file);
  } catch (e) {
    return fail(file, `not JSON: ${e.message}`);
  }
  const before = errors.length;
  if (!/^3\.0\.\d+$/.test(doc.openapi || '')) fail(file, `openapi must be 3.0.x (Copilot API plugins do not take 3.1), is ${doc.openapi}`);
  if (!doc.info?.title || !doc.info?.version) fail(file, 'info.title and info.version are required');
  const server = doc.servers?.[0]?.url;
  if (!server || !server.startsWith('https://')) fail(file, 'servers[0].url must be an https URL');
  walk(doc, (n, p) => {
    if (typeof n.$ref === 'string' && resolveRef(doc, n.$ref) === undefined) fail(file, `${p}: $ref ${n.$ref} does not resolve`);
  });

  const ops = new Map();
  for (const [path, item] of Object.entries(doc.paths || {}))
    for (const [method, op] of Object.entries(item))
      if (['get', 'put', 'post', 'delete', 'patch', 'head', 'options'].includes(method)) {
        if (!op.operationId) fail(file, `${method.toUpperCase()} ${path} has no operationId`);
        else if (ops.has(op.operationId)) fail(file, `operationId ${op.operationId} is used twice`);
        else ops.set(op.operationId, { method, path, op });
      }
  for (const [id, { method, path, op }] of ops) {
    const want = QUARRY.routes[id];
    if (want && (want[0] !== method || want[1] !== path)) fail(file, `${id} must be ${want[0].toUpperCase()} ${want[1]} (quarry's route), is ${method.toUpperCase()} ${path}`);
    if (!op.description && !op.summary) fail(file, `${id} needs a description (the model reads it)`);
    if (method === 'post' && !op.requestBody?.content?.['application/json']?.schema) fail(file, `${id} needs an application/json request body`);
    if (!op.responses?.['200']?.content?.['application/json']?.schema) fail(file, `${id} needs a 200 application/json response`);
    for (const req of op.security || doc.security || [])
      for (const name of Object.keys(req)) if (!doc.components?.securitySchemes?.[name]) fail(file, `${id}: security scheme ${name} is not defined`);
  }
  if (!ops.has('searchKnowledgeBase')) fail(file, 'searchKnowledgeBase (POST /v1/search) is missing');

  // The fields quarry really reads and returns.
  const props = (node) => Object.keys(deref(doc, node)?.properties || {});
  const subset = (what, have, known) => {
    const extra = have.filter((k) => !known.includes(k));
    if (extra.length) fail(file, `${what}: ${extra.join(', ')} not in quarry's API (${known.join(', ')})`);
  };
  const search = ops.get('searchKnowledgeBase')?.op;
  if (search) {
    const reqSchema = deref(doc, search.requestBody?.content?.['application/json']?.schema);
    subset('SearchRequest', props(reqSchema), QUARRY.searchRequest);
    if (!(reqSchema?.required || []).includes('query')) fail(file, 'SearchRequest must require query');
    if (reqSchema?.properties?.filters) subset('Filters', props(reqSchema.properties.filters), QUARRY.filters);
    const res = deref(doc, search.responses?.['200']?.content?.['application/json']?.schema);
    const items = deref(doc, res?.properties?.results?.items);
    if (!items) fail(file, 'SearchResponse needs results: [SearchResult]');
    else subset('SearchResult', props(items), QUARRY.hit);
  }
  const askOp = ops.get('askQuestion')?.op;
  if (askOp) {
    subset('AskRequest', props(askOp.requestBody?.content?.['application/json']?.schema), QUARRY.askRequest);
    const res = deref(doc, askOp.responses?.['200']?.content?.['application/json']?.schema);
    subset('Citation', props(res?.properties?.citations?.items), QUARRY.citation);
  }

  // Every component schema is a valid JSON Schema (strict ajv), and quarry's own answers fit.
  const ajv = new Ajv({ strict: true, allErrors: true });
  addFormats(ajv);
  const defs = toJsonSchema({ $defs: doc.components?.schemas || {} }).$defs;
  for (const name of Object.keys(defs)) {
    try {
      ajv.compile({ $id: `urn:quarry:${name}`, $defs: defs, $ref: `#/$defs/${name}` });
    } catch (e) {
      fail(file, `components.schemas.${name}: ${e.message}`);
    }
  }
  if (errors.length === before) {
    const check = (name, value) => {
      const v = ajv.getSchema(`urn:quarry:${name}`);
      if (v && !v(value)) fail(file, `quarry's ${name} would not match: ${ajv.errorsText(v.errors)}`);
    };
    const hit = { chunk_id: 42, doc_id: 'policies/travel.md', title: 'Travel policy', uri: 'https://intranet.example.com/travel', headings: 'Meals', score: 0.83, snippet: 'Meals are reimbursed up to...', start: 120, end: 480 };
    if (defs.SearchResponse) check('SearchResponse', { results: [hit], mode: 'hybrid', next_cursor: null, took_ms: 3.2 });
    if (defs.SearchRequest) check('SearchRequest', { query: 'travel meals', k: 5, mode: 'hybrid', filters: { uri_prefix: 'https://intranet.example.com/', updated_after: '2024-05-01' } });
    if (defs.AskResponse) check('AskResponse', { answer: 'Up to 40 EUR [1].', citations: [{ number: 1, ...hit }], sources: [{ number: 1, ...hit }], mode: 'generative' });
  }

  // ai-plugin.json's functions and runtimes against the operations.
  const fnames = (plugin.functions || []).map((f) => f.name);
  for (const n of fnames) if (!ops.has(n)) fail(pluginFile, `function ${n} matches no operationId in ${rel(file)}`);
  for (const rt of plugin.runtimes || [])
    for (const n of rt.run_for_functions || []) if (n !== '*' && !fnames.includes(n)) fail(pluginFile, `run_for_functions names ${n}, which is not a function`);
  const usesOAuth = (plugin.runtimes || []).some((r) => r.auth?.type === 'OAuthPluginVault');
  if (usesOAuth && !Object.values(doc.components?.securitySchemes || {}).some((s) => s.type === 'oauth2' && s.flows?.authorizationCode))
    fail(file, 'the plugin uses OAuthPluginVault: the OpenAPI document needs an oauth2 authorizationCode security scheme');
  if (errors.length === before) ok(file, `OpenAPI ${doc.openapi}: operations ${[...ops.keys()].join(', ')}; functions ${fnames.join(', ')} match`);
  return doc;
}

// ---- Copilot agent --------------------------------------------------------------------------

async function checkCopilotAgent() {
  const pkg = join(here, 'copilot-agent', 'appPackage');
  const manifestFile = join(pkg, 'manifest.json');
  const manifest = await schemaCheck(manifestFile, 'Teams app manifest', (f) => AppManifestUtils.readTeamsManifest(f));
  if (!manifest) return;
  await checkIcon(join(pkg, manifest.icons?.color || 'color.png'), 192, false);
  await checkIcon(join(pkg, manifest.icons?.outline || 'outline.png'), 32, true);
  const agents = manifest.copilotAgents?.declarativeAgents || [];
  if (!agents.length) fail(manifestFile, 'copilotAgents.declarativeAgents is empty');
  for (const a of agents) {
    const daFile = join(pkg, a.file);
    if (!(await exists(daFile))) {
      fail(manifestFile, `declarative agent ${a.file} is missing`);
      continue;
    }
    const da = await schemaCheck(daFile, 'declarative agent manifest', (f) => AppManifestUtils.readDeclarativeAgentManifest(f));
    if (!da) continue;
    if (!/cite|citation/i.test(da.instructions || '')) fail(daFile, 'the instructions must tell the agent to cite its sources');
    for (const act of da.actions || []) {
      const pluginFile = join(pkg, act.file);
      if (!(await exists(pluginFile))) {
        fail(daFile, `action ${act.file} is missing`);
        continue;
      }
      const plugin = await schemaCheck(pluginFile, 'API plugin manifest', (f) => AppManifestUtils.readApiPluginManifest(f));
      if (!plugin) continue;
      for (const rt of plugin.runtimes || []) {
        if (rt.type !== 'OpenApi') continue;
        const spec = rt.spec?.url;
        if (!spec || /^https?:/.test(spec)) {
          fail(pluginFile, 'the OpenApi runtime must point at the OpenAPI file in the package (spec.url)');
          continue;
        }
        const specFile = resolve(dirname(pluginFile), spec);
        if (!(await exists(specFile))) fail(pluginFile, `spec.url ${spec} does not exist`);
        else await checkOpenApi(specFile, plugin, pluginFile);
        if (rt.auth?.type === 'OAuthPluginVault' && rt.auth.reference_id !== '${{OAUTH_REFERENCE_ID}}' && !/^[\w-]+$/.test(rt.auth.reference_id || ''))
          fail(pluginFile, 'auth.reference_id must be ${{OAUTH_REFERENCE_ID}} or the id the developer portal gave');
      }
    }
  }
  // Placeholders left for packaging: only the OAuth registration's id.
  for (const f of ['manifest.json', 'declarativeAgent.json', 'ai-plugin.json']) {
    const text = await readFile(join(pkg, f), 'utf8');
    for (const m of text.matchAll(/\$\{\{([A-Z0-9_]+)\}\}/g))
      if (m[1] !== 'OAUTH_REFERENCE_ID') fail(join(pkg, f), `unexpected placeholder \${{${m[1]}}}`);
  }
  const openapiHost = new URL((await readJson(join(pkg, 'apiSpecificationFile', 'openapi.json'))).servers[0].url).host;
  if (!(manifest.validDomains || []).includes(openapiHost)) fail(manifestFile, `validDomains should list quarry's host ${openapiHost}`);
}

// ---- Office add-in XML manifests ------------------------------------------------------------

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// The order of OfficeApp's children in the XSD (offappmanifest 1.1); * = required.
const ORDER = {
  TaskPaneApp: ['Id*', 'AlternateId', 'Version*', 'ProviderName*', 'DefaultLocale*', 'DisplayName*', 'Description*', 'IconUrl*', 'HighResolutionIconUrl', 'SupportUrl*', 'AppDomains', 'Hosts*', 'Requirements', 'DefaultSettings*', 'Permissions*', 'AllowSnapshot', 'ExtendedOverrides', 'VersionOverrides*'],
  MailApp: ['Id*', 'AlternateId', 'Version*', 'ProviderName*', 'DefaultLocale*', 'DisplayName*', 'Description*', 'IconUrl*', 'HighResolutionIconUrl', 'SupportUrl*', 'AppDomains', 'Hosts*', 'Requirements*', 'FormSettings*', 'Permissions*', 'Rule*', 'DisableEntityHighlighting', 'VersionOverrides*'],
};
const local = (name) => name.replace(/^.*:/, '');
/** Every element under el (xml2js explicitChildren: each element's children are in $$). */
function walkXml(el, fn, path = '') {
  if (!el || typeof el !== 'object') return;
  const here_ = `${path}/${local(el['#name'] || 'OfficeApp')}`;
  fn(el, here_);
  for (const c of el.$$ || []) walkXml(c, fn, here_);
}

async function checkXmlManifest(file) {
  const before = errors.length;
  let root;
  try {
    const parsed = await xml2js.parseStringPromise(await readFile(file, 'utf8'), { explicitChildren: true, preserveChildrenOrder: true, strict: true });
    root = parsed.OfficeApp;
  } catch (e) {
    return fail(file, `not well-formed XML: ${e.message.split('\n')[0]}`);
  }
  if (!root) return fail(file, 'the root element must be OfficeApp');
  if (root.$?.xmlns !== 'http://schemas.microsoft.com/office/appforoffice/1.1') fail(file, 'OfficeApp must use the appforoffice/1.1 namespace');
  const type = root.$?.['xsi:type'];
  const order = ORDER[type];
  if (!order) return fail(file, `OfficeApp xsi:type must be TaskPaneApp or MailApp, is ${type}`);
  const kids = (el) => (el.$$ || []).map((c) => ({ name: local(c['#name']), el: c }));
  const children = kids(root);
  const names = order.map((n) => n.replace('*', ''));
  for (const n of order) if (n.endsWith('*') && !children.some((c) => c.name === n.slice(0, -1))) fail(file, `required element <${n.slice(0, -1)}> is missing`);
  let last = -1;
  for (const c of children) {
    const i = names.indexOf(c.name);
    if (i < 0) fail(file, `<${c.name}> is not a child of a ${type} OfficeApp`);
    else if (i < last) fail(file, `<${c.name}> is out of order (the schema wants ${names.join(', ')})`);
    else last = i;
  }
  const child = (el, n) => kids(el).find((c) => c.name === n)?.el;
  const text = (el) => (typeof el === 'string' ? el : el?._ || '').trim();
  if (!GUID.test(text(child(root, 'Id')))) fail(file, '<Id> must be a GUID');
  if (!/^\d+(\.\d+){0,3}$/.test(text(child(root, 'Version')))) fail(file, '<Version> must be n.n.n.n');
  walkXml(root, (n, p) => {
    const v = n.$?.DefaultValue;
    if (v && /^(http|ftp)/i.test(v) && !v.startsWith('https://')) fail(file, `${p}: ${v} must be https`);
  });

  // Where the task pane lives, and that this folder has it.
  const src = type === 'TaskPaneApp'
    ? child(child(root, 'DefaultSettings') || {}, 'SourceLocation')?.$?.DefaultValue
    : child(child(child(child(root, 'FormSettings') || {}, 'Form') || {}, 'DesktopSettings') || {}, 'SourceLocation')?.$?.DefaultValue;
  let origin = null;
  try {
    const u = new URL(src);
    origin = u;
    const page = join(dirname(file), u.pathname.replace(/^\//, ''));
    if (!(await exists(page))) fail(file, `SourceLocation ${src}: ${rel(page)} is not in this folder`);
  } catch {
    fail(file, 'no SourceLocation URL');
  }

  // VersionOverrides: resids resolve; WebApplicationInfo last, for SSO.
  const vo = child(root, 'VersionOverrides');
  if (vo) {
    const ids = new Set();
    walkXml(child(vo, 'Resources'), (n) => n.$?.id && ids.add(n.$.id));
    const missing = new Set();
    walkXml(child(vo, 'Hosts'), (n) => n.$?.resid && !ids.has(n.$.resid) && missing.add(n.$.resid));
    for (const r of missing) fail(file, `resid ${r} is not in <Resources>`);
    const voKids = kids(vo);
    const wai = voKids.find((c) => c.name === 'WebApplicationInfo');
    if (!wai) fail(file, '<VersionOverrides> needs <WebApplicationInfo> for single sign-on');
    else {
      if (voKids[voKids.length - 1].name !== 'WebApplicationInfo') fail(file, '<WebApplicationInfo> must be the last child of <VersionOverrides>');
      const id = text(child(wai.el, 'Id')), resource = text(child(wai.el, 'Resource'));
      const scopes = kids(child(wai.el, 'Scopes') || {}).filter((c) => c.name === 'Scope').map((c) => text(c.el));
      if (!GUID.test(id)) fail(file, 'WebApplicationInfo <Id> must be the client id (a GUID)');
      if (origin && resource !== `api://${origin.host}/${id}`) fail(file, `WebApplicationInfo <Resource> must be api://${origin.host}/${id} (the task pane's host and the client id), is ${resource}`);
      if (!scopes.length) fail(file, 'WebApplicationInfo needs <Scopes>');
    }
  }

  // office-addin-manifest's own reader agrees (offline: it only parses the file).
  try {
    const info = await OfficeAddinManifest.readManifestFile(file);
    if (info.id !== text(child(root, 'Id'))) fail(file, `office-addin-manifest reads id ${info.id}`);
    if (!info.hosts?.length) fail(file, 'office-addin-manifest finds no host');
    if (errors.length === before) ok(file, `${type} (${info.hosts.join(', ')}), ${info.displayName} ${info.version}; required elements in order; SSO resource ${text(child(wai_(vo), 'Resource'))}`);
  } catch (e) {
    fail(file, `office-addin-manifest cannot read it: ${e.message}`);
  }
}
function wai_(vo) {
  return (vo?.$$ || []).find((c) => local(c['#name']) === 'WebApplicationInfo') || {};
}

async function checkAddin() {
  const dir = join(here, 'outlook-word-addin');
  const files = ['manifest.outlook.xml', 'manifest.word.xml'].map((f) => join(dir, f));
  const ids = new Set();
  for (const f of files) {
    if (!(await exists(f))) {
      fail(f, 'missing');
      continue;
    }
    await checkXmlManifest(f);
    const id = /<Id>([^<]+)<\/Id>/.exec(await readFile(f, 'utf8'))?.[1];
    if (ids.has(id)) fail(f, 'two add-ins share one <Id>');
    ids.add(id);
  }
}

await checkCopilotAgent();
await checkAddin();
if (errors.length) {
  for (const e of errors) console.error(`FAIL ${e}`);
  console.error(`validate: ${errors.length} error(s)`);
  process.exit(1);
}
console.log(`validate: ${checks} checks passed (offline)`);
