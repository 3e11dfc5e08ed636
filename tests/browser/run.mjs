// run.mjs: starts quarry once, then runs every *.test.mjs here with
// node --test, one file at a time (they share the server and the fake backend's switches).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startStack } from './harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const only = process.argv.slice(2);
const files = (only.length ? only : fs.readdirSync(HERE).filter((f) => f.endsWith('.test.mjs')).sort())
  .map((f) => path.resolve(HERE, f));
const stack = await startStack();
console.log(`browser tests against ${stack.base} (quarry ${stack.quarry})`);
let code = 1;
try {
  const child = spawn(process.execPath, ['--test', '--test-concurrency=1', ...files], {
    stdio: 'inherit',
    env: { ...process.env, QUARRY_BROWSER_BASE: stack.base, QUARRY_BROWSER_QUARRY: stack.quarry },
  });
  code = await new Promise((r) => child.on('exit', (c) => r(c ?? 1)));
} finally {
  await stack.stop();
}
process.exit(code);
