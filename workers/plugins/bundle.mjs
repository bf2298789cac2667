// Bundles the installed plugins into the Worker (`make worker` runs this before worker-build).
//
//   node workers/plugins/bundle.mjs <plugins dir> <out dir> [name…]
//
// `make worker` bundles the example plugins (target/plugins → workers/build/plugins); the
// runtime tests bundle every component in target/plugins, the test plugins too, into their
// own copy of the Worker (tests/runtime/src/worker.rs), so those are never shipped.
//
// Each component `<name>.wasm` is transpiled by jco to JavaScript plus core wasm modules
// (`--instantiation async`, so the Worker hands it the modules; `--async-mode jspi`, so the
// synchronous WIT imports kv-* and fetch may await the Worker's Promises, and the hooks
// return Promises). Workers cannot compile wasm from bytes at run time, so the core modules
// are imported as modules (`CompiledWasm`: wrangler's default rule for `*.wasm`, and the
// runtime tests' Miniflare rule). The output is one minified ES module, `index.mjs` (a `.js`
// file there would be read as CommonJS), holding the runner, every plugin's JS and the
// name → plugin map, beside the `.wasm` files it imports; the Rust side imports
// `./plugins/index.mjs` from workers/build/index.js (see workers/src/plugins.rs), which
// worker-build's esbuild leaves external (workers/esbuild-external-plugins.sh).

import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync, copyFileSync } from "node:fs";
import { join, resolve, dirname, relative } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const [pluginsDir = join(root, "target/plugins"), outDir = join(root, "workers/build/plugins"), ...wanted] =
  process.argv.slice(2);
const bin = (name) => join(root, "node_modules/.bin", name);

// Hooks are async exports; the host's storage and network functions are async imports.
const HOST = "kefu:extension/host@0.1.0";
const HOOKS = "kefu:extension/hooks@0.1.0";
const asyncImports = ["kv-get", "kv-set", "kv-delete", "fetch"].map((f) => `${HOST}#${f}`);
const asyncExports = ["describe", "on-event", "before-model", "after-reply", "call-tool"].map(
  (f) => `${HOOKS}#${f}`,
);

const staging = join(outDir, "..", ".plugins-staging");
rmSync(staging, { recursive: true, force: true });
mkdirSync(staging, { recursive: true });

const built = existsSync(pluginsDir)
  ? readdirSync(pluginsDir)
      .filter((f) => f.endsWith(".wasm"))
      .map((f) => f.slice(0, -".wasm".length))
  : [];
for (const name of wanted) {
  if (!built.includes(name)) throw new Error(`${pluginsDir}/${name}.wasm is missing: run \`make plugins\``);
}
const names = (wanted.length ? wanted : built).sort();
const entries = [];
const wasmFiles = [];
names.forEach((name, i) => {
  if (!/^[a-z0-9-]{1,40}$/.test(name)) throw new Error(`${name}.wasm: a plugin's name is [a-z0-9-]{1,40}`);
  const dir = join(staging, name);
  execFileSync(
    bin("jco"),
    [
      "transpile",
      join(pluginsDir, `${name}.wasm`),
      "--name",
      name,
      "-o",
      dir,
      "--instantiation",
      "async",
      "--async-mode",
      "jspi",
      "--no-typescript",
      // No Node.js fallbacks (they import node:fs); the Worker passes the compiled modules.
      "--no-nodejs-compat",
      "--quiet",
      // Never inline a core module as base64: Workers cannot compile wasm from bytes.
      "--base64-cutoff",
      "0",
      ...asyncImports.flatMap((f) => ["--async-imports", f]),
      ...asyncExports.flatMap((f) => ["--async-exports", f]),
    ],
    { stdio: ["ignore", "inherit", "inherit"] },
  );
  const modules = readdirSync(dir).filter((f) => f.endsWith(".wasm"));
  // The core modules keep their function names (the name section) for nobody: a trap in a
  // plugin is reported by the runner, not by stack. Without them a plugin's wasm is about
  // 12 % smaller gzipped (order-status: 51.7 → 44.2 KB).
  // The features are the ones Rust's wasm32 target emits and workerd reads (`-all` would let
  // wasm-opt write newer encodings that workerd cannot compile).
  const features = [
    "mutable-globals",
    "sign-ext",
    "nontrapping-float-to-int",
    "bulk-memory",
    "multivalue",
    "reference-types",
  ].map((f) => `--enable-${f}`);
  for (const m of modules) {
    execFileSync(bin("wasm-opt"), [join(dir, m), "-o", join(dir, m), "--strip-debug", "--strip-producers", ...features], {
      stdio: ["ignore", "inherit", "inherit"],
    });
  }
  const imports = modules.map((m, j) => `import m${i}_${j} from "./${m}";`);
  const table = modules.map((m, j) => `${JSON.stringify(m)}: m${i}_${j}`).join(", ");
  entries.push(
    `import { instantiate as i${i} } from "./${name}/${name}.js";\n${imports.join("\n")}\n` +
      `plugins[${JSON.stringify(name)}] = { instantiate: i${i}, modules: { ${table} } };`,
  );
  wasmFiles.push(...modules.map((m) => join(dir, m)));
});

writeFileSync(
  join(staging, "entry.js"),
  `import { runPlugin } from ${JSON.stringify(join(here, "runner.js"))};\n` +
    `const plugins = {};\n${entries.join("\n")}\n` +
    `/** The installed plugins' names. */\nexport function installed() { return Object.keys(plugins); }\n` +
    `/** Runs one hook call (see runner.js). */\n` +
    `export function run(name, callJson, host) { return runPlugin(plugins, name, callJson, host); }\n`,
);

rmSync(outDir, { recursive: true, force: true });
mkdirSync(outDir, { recursive: true });
// The core modules' names are unique (jco names them after the plugin), so they sit flat
// beside index.mjs and keep the relative paths the entry imports them by.
for (const f of wasmFiles) copyFileSync(f, join(outDir, f.split("/").pop()));
execFileSync(
  bin("esbuild"),
  [
    join(staging, "entry.js"),
    "--bundle",
    "--format=esm",
    "--minify",
    "--external:*.wasm",
    `--outfile=${join(outDir, "index.mjs")}`,
    "--log-level=warning",
  ],
  { stdio: ["ignore", "inherit", "inherit"] },
);
rmSync(staging, { recursive: true, force: true });
console.log(`${relative(root, outDir)}: ${names.length ? names.join(", ") : "no plugins"}`);
