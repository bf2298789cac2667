// Browser tests for the web pages on Spin: Debian's Chromium (headless, via playwright-core)
// against Kefu's two Spin components on the Spin test host, from the real spin.toml: the
// pages come from the file server (components/spin-web, the mounted web/, its headers from
// web/_headers), the API from the `kefu` component. The pages must load under their
// Content-Security-Policy with nothing refused, and the widget must hold a conversation.
//
//   node --test tests/browser/spin.test.mjs   (make spin && cargo build -p kefu-spin-host first)

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Agent, TENANT_KEY, keyHash, launchChromium, profileBase, startKefuOnSpin } from "./harness.mjs";

let kefu;
let browser;

before(async () => {
  kefu = await startKefuOnSpin((mock) => ({
    default: {
      provider: { base_url: profileBase(mock, "chunk_delay_ms=20"), model: "mock-gpt" },
      api_keys: [{ id: "browser-tests", sha256: keyHash(TENANT_KEY) }],
    },
  }));
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  kefu?.stop();
});

// What Spin does not have, by design, and the pages handle: WebSockets (the widget and the
// console fall back to Server-Sent Events) and the `OPTIONS` probe's 405 (the route exists).
// Anything else in the console (a refused script or style, a CSP violation) is a failure.
const EXPECTED_ON_SPIN = [/WebSocket connection to .* failed/, /status of 405 .*\/api\/v1\/attachments/];

/** A fresh page (own storage) that collects errors and CSP violations. */
async function newPage() {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "en-US" });
  const page = await ctx.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => m.type() === "error" && errors.push(`${m.text()} (${m.location().url})`));
  const unexpected = () => errors.filter((e) => !EXPECTED_ON_SPIN.some((re) => re.test(e)));
  return { ctx, page, errors, unexpected };
}

describe("web pages on Spin", { concurrency: false }, () => {
  test("the demo page and the widget load under their policy and the widget holds a conversation", async () => {
    const resp = await fetch(kefu.base + "/widget-demo");
    assert.equal(resp.status, 200);
    assert.match(resp.headers.get("content-security-policy") || "", /default-src 'none'; script-src 'self'/);

    const v = await newPage();
    await v.page.goto(kefu.base + "/widget-demo");
    await v.page.waitForFunction(() => window.Kefu && document.querySelector("kefu-widget"));
    const w = (sel) => v.page.locator("kefu-widget " + sel);
    await w(".launcher").click();
    await w('[role="dialog"]').waitFor({ state: "visible" });
    await w("textarea").fill("Hello from a browser on Spin");
    await w("textarea").press("Enter");
    await w(".msg.bot:not(.greeting):not(.streaming) .bubble").filter({ hasText: "Echo: Hello from a browser on Spin" }).waitFor();
    const id = await v.page.evaluate(() => Kefu.conversationId);
    const stored = await (await fetch(`${kefu.base}/api/v1/conversations/${id}`, { headers: { "x-kefu-tenant": "default" } })).json();
    assert.deepEqual(
      stored.messages.map((m) => m.role),
      ["visitor", "bot"],
      "the conversation is stored by the API component",
    );
    assert.deepEqual(v.unexpected(), []);
    await v.ctx.close();
  });

  test("an agent signs in to the console at /agent/ and sees the inbox", async () => {
    const agent = await new Agent(kefu.base, "alex", "Alex").signIn();
    const c = await newPage();
    const resp = await c.page.goto(kefu.base + "/agent");
    assert.equal(new URL(c.page.url()).pathname, "/agent/", "/agent redirects to /agent/");
    assert.equal(resp.status(), 200);
    assert.match(resp.headers()["content-security-policy"], /img-src 'self' blob:;/);
    await c.page.locator("#token-input").fill(agent.token);
    await c.page.locator("#token-input").press("Enter");
    await c.page.locator("#app:not([hidden])").waitFor();
    assert.deepEqual(c.unexpected(), []);
    await c.ctx.close();
  });

  test("the admin pages load with their stylesheets and scripts", async () => {
    const a = await newPage();
    const resp = await a.page.goto(kefu.base + "/admin/");
    assert.equal(resp.status(), 200);
    await a.page.locator("#key-input").waitFor();
    // Both stylesheets applied: the shared one's `--mono` reaches the admin one's key field.
    const mono = await a.page.evaluate(() => getComputedStyle(document.body).getPropertyValue("--mono").trim());
    assert.notEqual(mono, "", "web/ui/base.css was not applied");
    const keyFont = await a.page.locator("#key-input").evaluate((e) => getComputedStyle(e).fontFamily);
    const bare = (fonts) => fonts.replaceAll(/[ "]/g, "");
    assert.equal(bare(keyFont), bare(mono), "web/admin/admin.css was not applied");
    assert.deepEqual(a.unexpected(), []);
    await a.ctx.close();
  });
});
