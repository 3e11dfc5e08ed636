// Validates an OpenAPI document -- a URL (fetched without credentials) or a file -- with the three
// tools that stand for its importers:
//   1. @apidevtools/swagger-parser: the document against the OpenAPI 3.0 schema, $refs resolved;
//   2. @redocly/openapi-core: Redocly's "recommended" lint rules (what `redocly lint` runs);
//   3. @microsoft/m365-spec-parser: what Teams Toolkit (Microsoft 365 Agents Toolkit) checks
//      before it turns a document into a Microsoft 365 Copilot API plugin (ProjectType.Copilot)
//      or a Teams search message extension (ProjectType.SME).
// Prints every warning; exits 1 on any error, 2 when the document cannot be read.
//
//   node validate.mjs http://127.0.0.1:8080/openapi.json
//   node validate.mjs openapi.json [--expect-sme searchKnowledgeBase,askQuestion]
import { readFile } from 'node:fs/promises';
import SwaggerParser from '@apidevtools/swagger-parser';
import { createConfig, lintFromString } from '@redocly/openapi-core';
import { SpecParser, ProjectType, ValidationStatus } from '@microsoft/m365-spec-parser';

const args = process.argv.slice(2);
const where = args.find((a) => !a.startsWith('--'));
const smeIndex = args.indexOf('--expect-sme');
// the operations a Teams message extension must be able to import: a search takes one required
// parameter and answers one JSON body
const expectSme = (smeIndex >= 0 ? args[smeIndex + 1] : 'searchKnowledgeBase,askQuestion').split(',');
if (!where) {
  console.error('usage: node validate.mjs URL|FILE [--expect-sme operationId,...]');
  process.exit(2);
}

let text;
try {
  if (/^https?:\/\//.test(where)) {
    const res = await fetch(where, { headers: { Accept: 'application/json' } });
    if (!res.ok) throw new Error(`GET ${where}: HTTP ${res.status}`);
    text = await res.text();
  } else {
    text = await readFile(where, 'utf8');
  }
} catch (e) {
  console.error(`cannot read ${where}: ${e.message}`);
  process.exit(2);
}
const doc = JSON.parse(text);
let errors = 0;
const warnings = [];
const fail = (tool, msg) => {
  errors++;
  console.log(`ERROR   ${tool}: ${msg}`);
};
const warn = (tool, msg) => warnings.push(`${tool}: ${msg}`);

// 1. swagger-parser (it changes what it validates: give it a copy)
try {
  await SwaggerParser.validate(structuredClone(doc));
  console.log(`ok      swagger-parser: valid OpenAPI ${doc.openapi}`);
} catch (e) {
  fail('swagger-parser', e.message);
}

// 2. Redocly, recommended rules
{
  const config = await createConfig({ extends: ['recommended'] });
  const problems = await lintFromString({ source: text, absoluteRef: 'openapi.json', config });
  let e = 0;
  for (const p of problems) {
    const at = (p.location?.[0]?.pointer ?? '').replace(/^#/, '') || '/';
    const line = `${p.ruleId} at ${at}: ${p.message}`;
    if (p.severity === 'error') {
      e++;
      fail('redocly', line);
    } else {
      warn('redocly', line);
    }
  }
  if (!e) console.log(`ok      redocly (recommended): ${problems.length} warnings`);
}

// 3. m365-spec-parser, as Teams Toolkit configures it for each kind of project
const m365Options = {
  allowMissingId: false,
  allowAPIKeyAuth: true,
  allowBearerTokenAuth: true,
  allowOauth2: true,
  allowMultipleParameters: true,
  allowMethods: ['get', 'post'],
};
for (const [name, projectType] of [
  ['copilot', ProjectType.Copilot],
  ['sme', ProjectType.SME],
]) {
  const tool = `m365-spec-parser (${name})`;
  try {
    const options = { ...m365Options, projectType };
    const result = await new SpecParser(structuredClone(doc), options).validate();
    for (const e of result.errors) fail(tool, `${e.type}: ${e.content}`);
    for (const w of result.warnings) warn(tool, `${w.type}: ${w.content}`);
    const list = await new SpecParser(structuredClone(doc), options).list();
    const valid = list.APIs.filter((a) => a.isValid).map((a) => a.operationId);
    for (const a of list.APIs.filter((a) => !a.isValid))
      warn(tool, `${a.operationId} (${a.api}) cannot be imported: ${a.reason.join(', ')}`);
    // an API plugin calls any GET or POST operation; a message extension needs at least these
    const needed = projectType === ProjectType.Copilot ? list.APIs.map((a) => a.operationId) : expectSme;
    for (const id of needed) if (!valid.includes(id)) fail(tool, `${id} cannot be imported`);
    if (result.status !== ValidationStatus.Error)
      console.log(`ok      ${tool}: ${valid.length} of ${list.allAPICount} GET/POST operations importable`);
  } catch (e) {
    fail(tool, e.message);
  }
}

for (const w of warnings) console.log(`warning ${w}`);
console.log(`${errors} errors, ${warnings.length} warnings`);
process.exit(errors ? 1 : 0);
