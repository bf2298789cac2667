// The benchmark's baseline: a minimal pass-through Worker on the same workerd, forwarding
// every request to UPSTREAM unchanged. Kefu's gateway is measured against it, so the
// runtime's own cost (routing a request into an isolate, an outbound fetch) cancels out and
// what remains is Kefu's.
//
// Usage: node tests/bench/passthrough-host.mjs PORT UPSTREAM_ORIGIN [RUST_WORKER_DIR]
// With RUST_WORKER_DIR (worker-build's output of tests/bench/rust-passthrough), the same
// pass-through written in Rust with workers-rs runs instead of the JavaScript one.
// Prints "ready http://127.0.0.1:PORT" and runs until SIGTERM or SIGINT.

import { Miniflare } from "miniflare";

const [portArg = "0", upstream, rustDir] = process.argv.slice(2);
if (!upstream) {
  console.error("usage: passthrough-host.mjs PORT UPSTREAM_ORIGIN");
  process.exit(2);
}

// For the cold-start benchmark: when the runtime starts, after Node loaded the host's modules.
console.log(`starting ${Date.now()}`);
const worker = rustDir
  ? {
      scriptPath: `${rustDir}/index.js`,
      modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"] }],
    }
  : {
      script: `
    export default {
      async fetch(request, env) {
        const url = new URL(request.url);
        return fetch(env.UPSTREAM + url.pathname + url.search, {
          method: request.method,
          headers: request.headers,
          body: request.body,
        });
      },
    };
  `,
    };
const mf = new Miniflare({
  host: "127.0.0.1",
  // The V8 inspector on this port (tests/bench/memory-probe.mjs reads the heap through it).
  ...(process.env.KEFU_INSPECTOR_PORT ? { inspectorPort: Number(process.env.KEFU_INSPECTOR_PORT) } : {}),
  port: Number(portArg),
  modules: true,
  compatibilityDate: "2026-04-20",
  // PASSTHROUGH_STEPS=kefu: the Rust pass-through takes Kefu's platform steps (its `STEPS`).
  bindings: { UPSTREAM: upstream, ...(process.env.PASSTHROUGH_STEPS ? { STEPS: process.env.PASSTHROUGH_STEPS } : {}) },
  ...worker,
});

const url = await mf.ready;
console.log(`ready ${url.origin}`);
const stop = async () => {
  await mf.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
