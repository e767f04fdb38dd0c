#!/usr/bin/env node
// Generates the CommonJS build of the SDK from its one source, chorus.js:
// chorus.cjs (the same code, its `export`s turned into `module.exports`) and
// chorus.d.cts (the declarations, for `require` under TypeScript's node16
// resolution). Run by `npm pack`/`npm publish` (prepack), by the CMake build
// (into the build tree) and by the SDK tests.
//
//   node build-cjs.mjs [OUTDIR]     (default: this directory)
//
// chorus.js has no imports and only top-level `export const|class|function`
// declarations plus `export default Chorus;`; anything else is refused, so a
// change that breaks this transform fails the build instead of shipping.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const outDir = path.resolve(process.argv[2] || here);
const src = fs.readFileSync(path.join(here, 'chorus.js'), 'utf8');

const names = [];
let defaultName = null;
const lines = src.split('\n').map((line, i) => {
  let m = /^export (const|let|class|function) ([A-Za-z_$][\w$]*)/.exec(line);
  if (m) {
    names.push(m[2]);
    return line.slice('export '.length);
  }
  m = /^export default ([A-Za-z_$][\w$]*);\s*$/.exec(line);
  if (m) {
    defaultName = m[1];
    return '';
  }
  if (/^\s*(import|export)\b/.test(line)) {
    throw new Error(`chorus.js:${i + 1}: build-cjs.mjs cannot convert this line: ${line}`);
  }
  return line;
});
if (names.length === 0) throw new Error('chorus.js exports nothing');

const exportsLines = names.map((n) => `  ${n},`);
if (defaultName) exportsLines.push(`  default: ${defaultName},`);
const out =
  `'use strict';\n// Generated from chorus.js by build-cjs.mjs: edit chorus.js, not this file.\n` +
  lines.join('\n').replace(/\n+$/, '\n') +
  `\nObject.defineProperty(module.exports, '__esModule', { value: true });\n` +
  `Object.assign(module.exports, {\n${exportsLines.join('\n')}\n});\n`;

fs.mkdirSync(outDir, { recursive: true });
fs.writeFileSync(path.join(outDir, 'chorus.cjs'), out);
const dts = fs.readFileSync(path.join(here, 'chorus.d.ts'), 'utf8');
fs.writeFileSync(path.join(outDir, 'chorus.d.cts'), '// Generated from chorus.d.ts by build-cjs.mjs (the types of chorus.cjs).\n' + dts);
