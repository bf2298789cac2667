// The engine in wasm on workerd (tests/bench/engine-wasm, built by `make bench` into
// target/bench-engine-wasm): the simulator's chat turns that kefu-bench times natively, run
// inside the runtime, so kefu-bench can read this workerd's CPU time around one request.
//
// Usage: node tests/bench/engine-wasm-host.mjs PORT WORKER_DIR
// Prints "ready http://127.0.0.1:PORT" and runs until SIGTERM or SIGINT.

import { Miniflare } from "miniflare";

const [portArg = "0", dir] = process.argv.slice(2);
if (!dir) {
  console.error("usage: engine-wasm-host.mjs PORT WORKER_DIR");
  process.exit(2);
}

const mf = new Miniflare({
  host: "127.0.0.1",
  port: Number(portArg),
  modules: true,
  compatibilityDate: "2026-04-20",
  scriptPath: `${dir}/index.js`,
  modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"] }],
});

const url = await mf.ready;
console.log(`ready ${url.origin}`);
const stop = async () => {
  await mf.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
