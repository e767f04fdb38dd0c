// chorus.d.ts against chorus.js (client-sdk/js). Two views that must agree:
//  - what a TypeScript user compiles against: dts/usage.ts, which uses every
//    export, method, property and event, compiled with `tsc --noEmit --strict`;
//  - what the module really is: chorus.js imported in Node (its exports, the
//    public prototype methods and accessors of its classes, the public fields
//    of an instance, the values of its constants) and parsed with the
//    TypeScript parser (the events it emits, the options it reads, each
//    method's parameters), compared with the declarations read through the
//    TypeScript compiler API. Nothing here parses either file with regexes.
// A name starting with `_` is internal on both sides. Needs tests/node_modules
// (typescript, from `npm ci` in tests/).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const sdkDir = path.resolve(here, '../../client-sdk/js');
const jsFile = path.join(sdkDir, 'chorus.js');
const dtsFile = path.join(sdkDir, 'chorus.d.ts');
const require = createRequire(path.join(here, '..', 'package.json'));

let ts;
try {
  ts = require('typescript');
} catch (e) {
  console.error(`dts-check: cannot load 'typescript' from tests/node_modules (${e.code || e.message}).` +
    " Run 'npm ci' in tests/ (deploy/setup.sh does).");
  process.exit(1);
}

const sdk = await import(pathToFileURL(jsFile).href);

// ---- the declarations, through the compiler API --------------------------------

const program = ts.createProgram([dtsFile], { strict: true, noEmit: true, types: [], lib: ['lib.es2022.d.ts'] });
const checker = program.getTypeChecker();
const dtsSource = program.getSourceFile(dtsFile);
const declaredExports = new Map(
  checker.getExportsOfModule(checker.getSymbolAtLocation(dtsSource)).map((s) => [s.getName(), s]));

const inDts = (sym) => (sym.declarations || []).some((d) => d.getSourceFile() === dtsSource);
const isHidden = (sym) => (sym.declarations || []).some(
  (d) => ts.getCombinedModifierFlags(d) & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected));
const isReadonly = (sym) => (sym.declarations || []).some(
  (d) => ts.getCombinedModifierFlags(d) & ts.ModifierFlags.Readonly);

/** Public members declared on a class's instances (its own and inherited from chorus.d.ts). */
function declaredMembers(className) {
  const type = checker.getDeclaredTypeOfSymbol(declaredExports.get(className));
  const members = new Map();
  for (const p of checker.getPropertiesOfType(type)) {
    if (!inDts(p) || isHidden(p)) continue; // Error's own members come from lib.d.ts
    const kind = p.flags & ts.SymbolFlags.Method ? 'method' : 'property';
    const sigs = checker.getTypeOfSymbol(p).getCallSignatures();
    members.set(p.getName(), { kind, readonly: isReadonly(p), params: paramShape(sigs) });
  }
  return members;
}

/** The widest parameter list over a method's overloads: how many, and whether the last is a rest. */
function paramShape(signatures) {
  let count = 0;
  let rest = false;
  for (const s of signatures) {
    if (s.parameters.length >= count) {
      count = s.parameters.length;
      rest = rest || checker.hasEffectiveRestParameter(s);
    }
  }
  return { count, rest };
}

function declaredEventNames(interfaceName) {
  const sym = checker.getSymbolAtLocation(dtsSource).exports.get(interfaceName);
  assert.ok(sym, `chorus.d.ts declares no ${interfaceName}`);
  return new Set(checker.getPropertiesOfType(checker.getDeclaredTypeOfSymbol(sym)).map((p) => p.getName()));
}

// ---- the module, as Node loads it -----------------------------------------------

/** Public members of a runtime class: its prototype chain below Object/Error, and an instance's own fields. */
function runtimeMembers(cls, instance) {
  const members = new Map();
  const builtins = new Set([Object.prototype, Error.prototype]);
  for (let proto = cls.prototype; proto && !builtins.has(proto); proto = Object.getPrototypeOf(proto)) {
    for (const [name, d] of Object.entries(Object.getOwnPropertyDescriptors(proto))) {
      if (name === 'constructor' || name.startsWith('_') || members.has(name)) continue;
      if (typeof d.value === 'function') members.set(name, { kind: 'method', owner: proto.constructor.name });
      else members.set(name, { kind: 'property', getterOnly: Boolean(d.get && !d.set) });
    }
  }
  const errorFields = new Set(Object.getOwnPropertyNames(new Error('x')));
  for (const name of Object.getOwnPropertyNames(instance)) {
    if (name.startsWith('_') || members.has(name)) continue;
    if (instance instanceof Error && errorFields.has(name)) continue;
    members.set(name, { kind: 'property', getterOnly: false });
  }
  return members;
}

function sampleInstance(name) {
  const client = new sdk.Chorus('ws://127.0.0.1:9/ws', { WebSocket: class {} }); // never connects
  if (name === 'Chorus') return client;
  if (name === 'Subscription') return new sdk.Subscription(client, 'dts:check');
  if (name === 'ChorusError') return new sdk.ChorusError('code', 'message');
  throw new Error(`dts-check: no sample instance for the exported class ${name}; add one`);
}

// ---- chorus.js's source, through the TypeScript parser ---------------------------------

const jsSource = ts.createSourceFile(jsFile, fs.readFileSync(jsFile, 'utf8'), ts.ScriptTarget.Latest, true,
  ts.ScriptKind.JS);
const where = (node) => `chorus.js:${jsSource.getLineAndCharacterOfPosition(node.getStart()).line + 1}`;

function visit(node, fn) {
  fn(node);
  ts.forEachChild(node, (child) => visit(child, fn));
}

const enclosing = (node, pred) => {
  for (let n = node.parent; n; n = n.parent) if (pred(n)) return n;
  return undefined;
};

/** Each method of each class: its parameters, and the class it extends. */
function sourceClasses() {
  const classes = new Map();
  visit(jsSource, (node) => {
    if (!ts.isClassDeclaration(node) || !node.name) return;
    const methods = new Map();
    for (const m of node.members) {
      if ((ts.isMethodDeclaration(m) || ts.isConstructorDeclaration(m)) && m.body) {
        const name = m.name ? m.name.getText() : 'constructor';
        methods.set(name, { count: m.parameters.length, rest: m.parameters.some((p) => p.dotDotDotToken) });
      }
    }
    const ext = node.heritageClauses?.[0]?.types[0]?.expression.getText();
    classes.set(node.name.text, { methods, ext });
  });
  return classes;
}

function sourceParams(classes, className, method) {
  for (let c = classes.get(className); c; c = classes.get(c.ext)) if (c.methods.has(method)) return c.methods.get(method);
  return undefined;
}

// Who receives an emit: `this` in a class is that class, `sub` is a Subscription.
// The base Emitter's own `this.emit('error')` re-reports a listener's throw on
// whichever object it is, so it belongs to no one class.
function emitTarget(call) {
  const recv = call.expression.expression;
  if (recv.kind === ts.SyntaxKind.ThisKeyword) {
    const cls = enclosing(call, ts.isClassDeclaration);
    return cls && cls.name.text !== 'Emitter' ? cls.name.text : null;
  }
  if (ts.isIdentifier(recv) && recv.text === 'sub') return 'Subscription';
  throw new Error(`dts-check: ${where(call)}: cannot tell which object receives this emit; teach emitTarget()`);
}

// The event names an emit can send: a string literal; `m.op` under `case 'a': case 'b':`;
// or `event` from `for (const [event, arg] of list)`, where `list` is built in the same
// function from `[['name', arg], ...]` and `list.push(['name', arg])`. A list filled
// elsewhere (the deferred events flushed later) adds no name of its own.
function emitNames(call) {
  const arg = call.arguments[0];
  if (ts.isStringLiteral(arg)) return [arg.text];
  if (ts.isPropertyAccessExpression(arg)) {
    const clause = enclosing(call, ts.isCaseClause);
    if (clause) {
      const clauses = clause.parent.clauses;
      const names = [];
      for (let i = clauses.indexOf(clause); i >= 0; i--) {
        if (i !== clauses.indexOf(clause) && clauses[i].statements.length > 0) break;
        if (ts.isCaseClause(clauses[i]) && ts.isStringLiteral(clauses[i].expression)) names.push(clauses[i].expression.text);
      }
      if (names.length) return names;
    }
  }
  if (ts.isIdentifier(arg)) {
    const loop = enclosing(call, ts.isForOfStatement);
    const list = loop && ts.isIdentifier(loop.expression) ? loop.expression.text : null;
    const fn = enclosing(call, ts.isFunctionLike);
    if (list && fn) {
      const names = [];
      const tupleName = (t) => {
        if (ts.isArrayLiteralExpression(t) && t.elements[0] && ts.isStringLiteral(t.elements[0])) names.push(t.elements[0].text);
      };
      visit(fn, (n) => {
        if (ts.isVariableDeclaration(n) && n.name.getText() === list && n.initializer &&
            ts.isArrayLiteralExpression(n.initializer)) n.initializer.elements.forEach(tupleName);
        if (ts.isCallExpression(n) && n.expression.getText() === `${list}.push`) n.arguments.forEach(tupleName);
      });
      return names;
    }
  }
  throw new Error(`dts-check: ${where(call)}: cannot tell which event this emit sends; teach emitNames()`);
}

function emittedEvents() {
  const events = new Map([['Chorus', new Set()], ['Subscription', new Set()]]);
  visit(jsSource, (node) => {
    if (!ts.isCallExpression(node) || !ts.isPropertyAccessExpression(node.expression)) return;
    if (node.expression.name.text !== 'emit' || enclosing(node, ts.isClassDeclaration)?.name.text === 'Emitter' &&
        node.expression.expression.kind === ts.SyntaxKind.ThisKeyword) return;
    const target = emitTarget(node);
    if (!target) return;
    for (const name of emitNames(node)) events.get(target).add(name);
  });
  return events;
}

// The options the client reads: `options.x`, `this._opts.x`, `const {x} = this._opts`,
// and the keys of DEFAULTS.
function readOptions() {
  const names = new Set();
  const isOpts = (e) => e.getText() === 'this._opts' || e.getText() === 'options';
  visit(jsSource, (node) => {
    if (ts.isPropertyAccessExpression(node) && isOpts(node.expression)) names.add(node.name.text);
    if (ts.isVariableDeclaration(node) && node.initializer && ts.isObjectBindingPattern(node.name) &&
        isOpts(node.initializer)) {
      for (const el of node.name.elements) names.add((el.propertyName || el.name).getText());
    }
    if (ts.isVariableDeclaration(node) && node.name.getText() === 'DEFAULTS' &&
        ts.isObjectLiteralExpression(node.initializer)) {
      for (const p of node.initializer.properties) names.add(p.name.getText());
    }
  });
  return names;
}

// ---- the checks ---------------------------------------------------------------------

const setDiff = (a, b) => [...a].filter((x) => !b.has(x)).sort();

function sameSets(what, runtime, declared) {
  const missing = setDiff(runtime, declared);
  const extra = setDiff(declared, runtime);
  assert.ok(missing.length === 0 && extra.length === 0,
    `${what}: in chorus.js but not declared: [${missing.join(', ')}]; declared but not in chorus.js: [${extra.join(', ')}]`);
}

test('dts/usage.ts, which uses every declaration, compiles with tsc --noEmit --strict', () => {
  const tsc = require.resolve('typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', path.join(here, 'dts')], { encoding: 'utf8', timeout: 60000 });
  assert.equal(r.status, 0, `tsc -p tests/sdk/dts failed:\n${r.stdout}${r.stderr}`);
});

test('chorus.js exports exactly the values chorus.d.ts declares', () => {
  const declaredValues = new Set([...declaredExports].filter(([, s]) => {
    const target = s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s;
    return target.flags & ts.SymbolFlags.Value;
  }).map(([name]) => name));
  sameSets('exports', new Set(Object.keys(sdk)), declaredValues);
  assert.equal(checker.getAliasedSymbol(declaredExports.get('default')).getName(), 'Chorus');
  assert.equal(sdk.default, sdk.Chorus, 'the default export is Chorus');
});

test('the constants have the declared values', () => {
  const check = (value, type, what) => {
    if (type.isStringLiteral() || type.isNumberLiteral()) {
      assert.equal(value, type.value, `${what}: chorus.js has ${JSON.stringify(value)}, chorus.d.ts ${type.value}`);
    } else if (type.flags & ts.TypeFlags.String) {
      assert.equal(typeof value, 'string', what);
    } else if (type.flags & ts.TypeFlags.Number) {
      assert.equal(typeof value, 'number', what);
    } else {
      const props = checker.getPropertiesOfType(type);
      sameSets(`${what} keys`, new Set(Object.keys(value)), new Set(props.map((p) => p.getName())));
      for (const p of props) check(value[p.getName()], checker.getTypeOfSymbol(p), `${what}.${p.getName()}`);
      if (props.every(isReadonly)) assert.ok(Object.isFrozen(value), `${what} is declared read-only but is not frozen`);
    }
  };
  for (const [name, sym] of declaredExports) {
    if (!(sym.flags & ts.SymbolFlags.Variable)) continue;
    check(sdk[name], checker.getTypeOfSymbol(sym), name);
  }
});

test('each class has the declared public methods and properties, with as many parameters', () => {
  const classes = sourceClasses();
  for (const [name, sym] of declaredExports) {
    if (!(sym.flags & ts.SymbolFlags.Class)) continue;
    const runtime = runtimeMembers(sdk[name], sampleInstance(name));
    const declared = declaredMembers(name);
    sameSets(`${name} members`, new Set(runtime.keys()), new Set(declared.keys()));
    for (const [member, r] of runtime) {
      const d = declared.get(member);
      assert.equal(d.kind, r.kind, `${name}.${member}: a ${r.kind} in chorus.js, a ${d.kind} in chorus.d.ts`);
      if (r.getterOnly) assert.ok(d.readonly, `${name}.${member} has no setter in chorus.js but is not declared readonly`);
      if (r.kind === 'method') {
        const p = sourceParams(classes, name, member);
        assert.deepEqual(d.params, p,
          `${name}.${member}: chorus.js takes ${JSON.stringify(p)} parameters, chorus.d.ts ${JSON.stringify(d.params)}`);
      }
    }
    const ctorDecl = sym.declarations.find(ts.isClassDeclaration).members.find(ts.isConstructorDeclaration);
    if (ctorDecl && isHidden({ declarations: [ctorDecl] })) continue; // made by the SDK only
    const ctor = paramShape(checker.getTypeOfSymbol(sym).getConstructSignatures());
    assert.deepEqual(ctor, sourceParams(classes, name, 'constructor'), `new ${name}(): parameters differ`);
  }
});

test('the events chorus.js emits are the events chorus.d.ts declares', () => {
  const emitted = emittedEvents();
  sameSets('Chorus events', emitted.get('Chorus'), declaredEventNames('ChorusEvents'));
  sameSets('Subscription events', emitted.get('Subscription'), declaredEventNames('SubscriptionEvents'));
});

test('the options chorus.js reads are the options ChorusOptions declares', () => {
  sameSets('ChorusOptions', readOptions(), declaredEventNames('ChorusOptions'));
});
