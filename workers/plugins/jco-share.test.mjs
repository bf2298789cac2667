// Tests of jco-share.mjs on modules shaped like jco's (`node --test workers/plugins/`, run by
// `make test-plugins`); that the real plugins still run is for the runtime tests on workerd.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { shareJcoRuntime } from "./jco-share.mjs";

/** A module shaped like `jco transpile --instantiation async` output. */
function jcoModule({ indent = "  ", prelude = "", rest = "" } = {}) {
  const body = `let dv = new DataView(new ArrayBuffer());
const dataView = mem => dv.buffer === mem.buffer ? dv : dv = new DataView(mem.buffer);
const STATE = new Map();
let COUNT = 0;
function remember(k, v) { COUNT += 1; STATE.set(k, v); return COUNT; }
function recall(k) { return STATE.get(k); }
class Failure extends Error {
  constructor(value) { super(String(value)); this.payload = value; }
}
${prelude}
if (!getCoreModule) getCoreModule = (name) => name;
const module0 = getCoreModule('x.core.wasm');
${rest}
return { remember, recall, Failure, module0, view: dataView({ buffer: new ArrayBuffer(8) }) };`;
  return (
    `"use components";\nexport function instantiate(getCoreModule, imports, instantiateCore = WebAssembly.instantiate) {\n` +
    body
      .split("\n")
      .map((l) => indent + l)
      .join("\n") +
    `\n};\n\nexport const _util = {\n}\n`
  );
}

const share = (sources) =>
  shareJcoRuntime(
    sources.map((source, i) => ({ file: `p${i}/p${i}.js`, source })),
    "../jco-runtime.js",
  );

/** Writes the shared output out and imports each plugin's module. */
async function load(result) {
  const dir = mkdtempSync(join(tmpdir(), "jco-share-"));
  try {
    writeFileSync(join(dir, "jco-runtime.js"), result.runtime);
    const mods = [];
    for (const m of result.modules) {
      mkdirSync(join(dir, m.file.split("/")[0]), { recursive: true });
      writeFileSync(join(dir, m.file), m.source);
      mods.push(await import(pathToFileURL(join(dir, m.file)).href));
    }
    return mods;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("the prelude goes once into the runtime, whatever its indentation", async () => {
  const r = share([jcoModule(), jcoModule({ indent: "    " }), jcoModule({ indent: "" })]);
  assert.equal(r.shared, 7);
  assert.deepEqual(Object.values(r.kept), [0, 0, 0]);
  assert.equal(r.runtime.match(/function recall/g).length, 1);
  for (const m of r.modules) {
    assert.doesNotMatch(m.source, /function recall/);
    assert.match(m.source, /= jcoRuntime\(\);/);
  }
  const [a, b] = await load(r);
  const x = await a.instantiate(undefined, {});
  assert.equal(x.module0, "x.core.wasm");
  assert.ok(x.view instanceof DataView);
  assert.ok(new x.Failure("no") instanceof Error);
  assert.equal(x.remember("k", 1), 1);
  assert.equal(x.remember("k", 2), 2);
  assert.equal(x.recall("k"), 2);
  // Every instantiation, of any plugin, starts from fresh state.
  const y = await a.instantiate(undefined, {});
  const z = await b.instantiate(undefined, {});
  for (const fresh of [y, z]) {
    assert.equal(fresh.recall("k"), undefined);
    assert.equal(fresh.remember("k", 3), 1);
  }
  assert.equal(x.recall("k"), 2);
  assert.notEqual(x.Failure, y.Failure);
});

test("a name two plugins declare differently stays in each, with what refers to it", () => {
  const r = share([
    jcoModule({ prelude: "const LIMIT = 1;\nfunction limit() { return LIMIT; }", rest: "limit();" }),
    jcoModule({ prelude: "const LIMIT = 2;\nfunction limit() { return LIMIT; }", rest: "limit();" }),
  ]);
  assert.equal(r.shared, 7);
  assert.deepEqual(Object.values(r.kept), [2, 2]);
  assert.doesNotMatch(r.runtime, /LIMIT/);
  assert.match(r.modules[0].source, /const LIMIT = 1;/);
  assert.match(r.modules[1].source, /const LIMIT = 2;/);
});

test("a plugin's code using a binding the prelude may reassign fails the build", () => {
  assert.throws(() => share([jcoModule({ rest: "const b = dv.buffer;" })]), /`dv`, which the prelude may reassign/);
  assert.throws(() => share([jcoModule({ rest: "COUNT = 0;" })]), /`COUNT`, which the prelude may reassign/);
  assert.throws(() => share([jcoModule({ rest: "recall = null;" })]), /`recall`, which the prelude may reassign/);
  assert.throws(
    () => share([jcoModule({ prelude: "function reset() { remember = null; }", rest: "remember(1, 2);" })]),
    /`remember`, which the prelude may reassign/,
  );
});

test("a prelude that refers to instantiate's own names fails the build", () => {
  assert.throws(
    () => share([jcoModule({ prelude: "function first() { return module0; }" })]),
    /refers to `module0`, which instantiate or the module declares/,
  );
  assert.throws(
    () => share([jcoModule({ prelude: "const load = () => getCoreModule('y');" })]),
    /refers to `getCoreModule`/,
  );
  // Arrow functions see instantiate's `this` and `arguments`; a factory has its own.
  assert.throws(() => share([jcoModule({ prelude: "const self = () => this;" })]), /refers to `this`/);
  assert.throws(() => share([jcoModule({ prelude: "const args = () => arguments[0];" })]), /refers to `arguments`/);
  assert.throws(() => share([jcoModule({ prelude: "const made = () => new.target;" })]), /refers to `new.target`/);
  // Their own functions' and classes' `this` is theirs.
  share([jcoModule({ prelude: "function own() { return this; }\nclass Own { x = this; static { this.y = 1; } m() { return () => this; } }" })]);
});

test("a prelude helper that would see another plugin's declaration in place of a global fails", () => {
  assert.throws(
    () =>
      share([
        jcoModule({ prelude: "function now() { return Date.now(); }" }),
        jcoModule({ prelude: "const Date = { now: () => 0 };\nfunction now() { return Date.now(); }" }),
      ]),
    /refers to `Date`, which only another plugin's prelude declares/,
  );
});

test("output of another shape fails the build", () => {
  assert.throws(() => share(["export function run() {}"]), /no `export function instantiate`/);
  assert.throws(() => share(["export function instantiate(a, b) { const x = 1; f(); }"]), /parameters/);
  assert.throws(
    () => share(["export function instantiate(getCoreModule, imports, instantiateCore) { f(); }"]),
    /does not open with declarations/,
  );
  assert.throws(() => share(["export function instantiate( {"]), /does not parse/);
});
