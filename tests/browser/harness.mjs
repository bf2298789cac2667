// The browser tests' world: the mock LLM provider and Kefu on workerd (the runtime tests'
// pieces: tests/runtime's `kefu-mock-provider` binary and tests/runtime/workerd-host.mjs) or
// on the Spin test host (tests/spin-host, with the real spin.toml),
// Debian's Chromium driven by playwright-core, and an agent acting through the HTTP API.
//
// Each server runs in its own process group and is stopped with the whole group (workerd is
// a grandchild of the host script), when the tests end, fail, or are interrupted.

import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

export const ROOT = resolve(import.meta.dirname, "../..");
export const CHROMIUM = process.env.KEFU_CHROMIUM || "/usr/bin/chromium";
const MOCK_BIN = join(ROOT, "target/debug/kefu-mock-provider");

/** The tenant keys agents mint their tokens with, and the secret that signs tokens. */
export const TENANT_KEY = "kf-default.Kefu0Browser0Test0Key00001";
export const NORTHWIND_KEY = "kf-northwind.Kefu0Browser0Test0Key00002";
const TOKEN_SECRET = "browser-tests-token-secret-0123456789";

const children = new Set();

/** Starts `cmd` in its own process group; resolves with the first stdout line matching `ready`. */
function startServer(label, cmd, args, { env = {}, ready }) {
  return new Promise((resolveStart, reject) => {
    const child = spawn(cmd, args, {
      cwd: ROOT,
      env: { ...process.env, NO_COLOR: "1", ...env },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true, // its own process group, stopped as a whole
    });
    children.add(child);
    let out = "";
    let log = "";
    const timer = setTimeout(() => reject(new Error(`${label} did not start in 90 s:\n${log}`)), 90_000);
    child.stdout.on("data", (d) => {
      out += d;
      log += d;
      const line = out.split("\n").find((l) => ready.test(l));
      if (line) {
        clearTimeout(timer);
        resolveStart({ child, line: line.trim() });
      }
    });
    child.stderr.on("data", (d) => {
      log += d;
      if (process.env.KEFU_BROWSER_LOG) process.stderr.write(`[${label}] ${d}`);
    });
    child.on("exit", (code, signal) => {
      children.delete(child);
      clearTimeout(timer);
      reject(new Error(`${label} exited (${code ?? signal}) before it was ready:\n${log}`));
    });
  });
}

function stopAll() {
  for (const child of children) {
    try {
      process.kill(-child.pid, "SIGTERM");
    } catch (_) {
      /* already gone */
    }
  }
  children.clear();
}
process.on("exit", stopAll);
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    stopAll();
    process.exit(130);
  });
}

/** A mock target whose answers are scripted by a fault profile (`/p/<directives>/v1`). */
export function profileBase(mockRoot, directives) {
  return `${mockRoot}/p/${encodeURIComponent(directives)}/v1`;
}

/**
 * Starts the mock provider and Kefu with `tenants(mockRoot)` seeded; returns
 * `{ base, mockRoot, stop }`.
 */
export async function startKefu(tenants) {
  for (const [what, path] of [
    ["the built Worker (run `make worker`)", join(ROOT, "workers/build/index.js")],
    ["the mock provider (run `cargo build -p kefu-runtime-tests --bin kefu-mock-provider`)", MOCK_BIN],
    [`Chromium at ${CHROMIUM} (apt-get install chromium, or set KEFU_CHROMIUM)`, CHROMIUM],
  ]) {
    if (!existsSync(path)) throw new Error(`missing ${what}: ${path}`);
  }
  const mock = await startServer("mock", MOCK_BIN, ["--port", "0"], { ready: /^http:\/\// });
  const mockRoot = mock.line.replace(/\/v1\/?$/, "");
  const scratch = mkdtempSync(join(tmpdir(), "kefu-browser-"));
  const tenantsFile = join(scratch, "tenants.json");
  writeFileSync(tenantsFile, JSON.stringify(tenants(mockRoot)));
  const host = await startServer("workerd", "node", ["tests/runtime/workerd-host.mjs", "auto", tenantsFile], {
    ready: /^ready http/,
    env: {
      KEFU_EXTRA_BINDINGS: JSON.stringify({ KEFU_TOKEN_SECRET: TOKEN_SECRET }),
      KEFU_VISITOR_LIMIT: "100000",
    },
  });
  const base = host.line.replace(/^ready /, "");
  return {
    base,
    mockRoot,
    stop() {
      stopAll();
      rmSync(scratch, { recursive: true, force: true });
    },
  };
}

/** The deployment's admin token the Spin host is given, to seed tenants through the API. */
const SPIN_ADMIN_TOKEN = "browser-tests-admin-token-0123456789";
const SPIN_HOST_BIN = join(ROOT, "target/debug/kefu-spin-host");

/**
 * Starts the mock provider and Kefu's Spin components (the API and the web pages, from the
 * real spin.toml) on the Spin test host, and seeds `tenants(mockRoot)` through the
 * configuration API; returns `{ base, mockRoot, stop }` like {@link startKefu}.
 */
export async function startKefuOnSpin(tenants) {
  for (const [what, path] of [
    ["the Spin components (run `make spin`)", join(ROOT, "target/wasm32-wasip2/release/kefu_spin.wasm")],
    ["the Spin components (run `make spin`)", join(ROOT, "target/wasm32-wasip2/release/kefu_spin_web.wasm")],
    ["the Spin test host (run `cargo build -p kefu-spin-host`)", SPIN_HOST_BIN],
    ["the mock provider (run `cargo build -p kefu-runtime-tests --bin kefu-mock-provider`)", MOCK_BIN],
    [`Chromium at ${CHROMIUM} (apt-get install chromium, or set KEFU_CHROMIUM)`, CHROMIUM],
  ]) {
    if (!existsSync(path)) throw new Error(`missing ${what}: ${path}`);
  }
  const mock = await startServer("mock", MOCK_BIN, ["--port", "0"], { ready: /^http:\/\// });
  const mockRoot = mock.line.replace(/\/v1\/?$/, "");
  const scratch = mkdtempSync(join(tmpdir(), "kefu-browser-spin-"));
  const host = await startServer(
    "spin",
    SPIN_HOST_BIN,
    [
      "--from", join(ROOT, "spin.toml"),
      "--listen", "127.0.0.1:0",
      "--state-dir", scratch,
      "--variable", `extra_outbound_host=${mockRoot}`,
      "--variable", `kefu_admin_token=${SPIN_ADMIN_TOKEN}`,
      "--variable", `kefu_token_secret=${TOKEN_SECRET}`,
      // The browser suites send many messages from one loopback address.
      "--variable", "kefu_visitor_limit=100000",
      "--variable", "kefu_address_limit=100000",
    ],
    { ready: /^ready http/ },
  );
  const base = host.line.replace(/^ready /, "");
  for (const [tenant, config] of Object.entries(tenants(mockRoot))) {
    const resp = await fetch(base + "/api/v1/config", {
      method: "PUT",
      headers: { authorization: `Bearer ${SPIN_ADMIN_TOKEN}`, "x-kefu-tenant": tenant, "content-type": "application/json" },
      body: JSON.stringify(config),
    });
    if (!resp.ok) throw new Error(`seeding tenant ${tenant} on Spin: ${resp.status} ${await resp.text()}`);
  }
  return {
    base,
    mockRoot,
    stop() {
      stopAll();
      rmSync(scratch, { recursive: true, force: true });
    },
  };
}

export const keyHash = (key) => createHash("sha256").update(key).digest("hex");

/** Debian's Chromium, headless, with the flags these machines need. */
export function launchChromium() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
}

/** A support agent working through the HTTP API (the agent console is a later part). */
export class Agent {
  constructor(base, id, name, tenantKey = TENANT_KEY) {
    Object.assign(this, { base, id, name, tenantKey, token: null });
  }

  async call(path, body, auth = `Bearer ${this.token}`) {
    const resp = await fetch(this.base + path, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: auth },
      body: JSON.stringify(body),
    });
    const json = await resp.json();
    if (!resp.ok) throw new Error(`${path}: ${resp.status} ${JSON.stringify(json)}`);
    return json;
  }

  async signIn() {
    const { token } = await this.call("/api/v1/agents/tokens", { agent: this.id, name: this.name, ttl_secs: 3600 }, `Bearer ${this.tenantKey}`);
    this.token = token;
    return this;
  }

  claim(conversation) {
    return this.call(`/api/v1/conversations/${conversation}/claim`, { name: this.name });
  }

  reply(conversation, text) {
    return this.call(`/api/v1/conversations/${conversation}/messages`, { text });
  }

  typing(conversation) {
    return this.call(`/api/v1/conversations/${conversation}/typing`, { who: "agent" });
  }

  /** Follows the conversation's live updates (SSE) until `match(event)`; resolves with it. */
  waitForEvent(conversation, match, timeoutMs = 10_000) {
    return this.listen(conversation, match, timeoutMs).event;
  }

  /** Like `waitForEvent`, and `opened` resolves once the stream is open: a test that waits
   * for it before acting cannot miss an ephemeral event (typing) sent before it listened. */
  listen(conversation, match, timeoutMs = 10_000) {
    let opened;
    const openedPromise = new Promise((resolve) => { opened = resolve; });
    const event = this.#follow(conversation, match, timeoutMs, opened);
    // Whatever happens, `opened` settles (a failed stream reports through `event`).
    event.catch(() => {}).finally(() => opened());
    return { opened: openedPromise, event };
  }

  async #follow(conversation, match, timeoutMs, opened) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    try {
      const resp = await fetch(`${this.base}/api/v1/conversations/${conversation}/events?access_token=${this.token}`, { signal: abort.signal });
      if (!resp.ok) throw new Error(`events: ${resp.status} ${await resp.text()}`);
      opened();
      const decoder = new TextDecoder();
      let buf = "";
      for await (const chunk of resp.body) {
        buf += decoder.decode(chunk, { stream: true });
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (event && data) {
            const e = { event, data: JSON.parse(data) };
            if (match(e)) return e;
          }
        }
      }
      throw new Error("the live stream ended before the event came");
    } catch (e) {
      if (abort.signal.aborted) throw new Error(`no matching live event within ${timeoutMs} ms`);
      throw e;
    } finally {
      clearTimeout(timer);
      abort.abort();
    }
  }

  resolve(conversation) {
    return this.call(`/api/v1/conversations/${conversation}/resolve`, {});
  }
}
