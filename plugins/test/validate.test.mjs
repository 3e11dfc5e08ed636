// validate.mjs passes on the shipped samples and catches broken copies of them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const run = (dir) => new Promise((resolve) => {
  execFile(process.execPath, [join(root, 'validate.mjs'), ...(dir ? [dir] : [])], (err, stdout, stderr) =>
    resolve({ code: err ? err.code : 0, out: stdout + stderr }));
});

test('the shipped manifests validate, offline', async () => {
  const { code, out } = await run();
  assert.equal(code, 0, out);
  assert.match(out, /checks passed \(offline\)/);
});

test('broken copies fail with the reason', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'quarry-plugins-'));
  try {
    for (const d of ['copilot-agent', 'outlook-word-addin']) await cp(join(root, d), join(dir, d), { recursive: true });
    const edit = async (rel, fn) => writeFile(join(dir, rel), fn(await readFile(join(dir, rel), 'utf8')));
    const json = (rel, fn) => edit(rel, (t) => { const o = JSON.parse(t); fn(o); return JSON.stringify(o); });
    const app = 'copilot-agent/appPackage/';
    await json(app + 'manifest.json', (m) => { m.accentColor = 'blue'; });
    await json(app + 'declarativeAgent.json', (m) => { m.conversation_starters = [...m.conversation_starters, ...m.conversation_starters]; });
    await json(app + 'ai-plugin.json', (m) => { m.functions[0].name = 'searchKB'; m.runtimes[0].run_for_functions = ['searchKB']; });
    await json(app + 'apiSpecificationFile/openapi.json', (m) => { m.components.schemas.SearchRequest.properties.top = { type: 'integer' }; });
    await cp(join(dir, app + 'color.png'), join(dir, app + 'outline.png'));
    await edit('outlook-word-addin/manifest.word.xml', (t) => t.replace(/<WebApplicationInfo>[\s\S]*<\/WebApplicationInfo>/, ''));
    await edit('outlook-word-addin/manifest.outlook.xml', (t) => t.replace('api://addin.contoso.com/', 'api://elsewhere.contoso.com/'));
    const { code, out } = await run(dir);
    assert.equal(code, 1, out);
    for (const want of [
      /manifest\.json: schema: \/accentColor must match pattern/,
      /declarativeAgent\.json: schema: \/conversation_starters must NOT have more than 6 items/,
      /ai-plugin\.json: function searchKB matches no operationId/,
      /openapi\.json: SearchRequest: top not in quarry's API/,
      /outline\.png: is 192x192, must be 32x32/,
      /manifest\.word\.xml: <VersionOverrides> needs <WebApplicationInfo>/,
      /manifest\.outlook\.xml: WebApplicationInfo <Resource> must be api:\/\/addin\.contoso\.com\//,
    ]) assert.match(out, want);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
