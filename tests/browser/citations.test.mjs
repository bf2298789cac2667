// Browser tests for citations people see: a grounded answer's sources under it in the
// visitor widget, the agent console and the replay console — Debian's Chromium (headless,
// via playwright-core) against Kefu on workerd with the mock provider, whose scripted answer
// cites two real blocks and one the model was never shown. One source has a hostile title
// and no URL: it must stay inert text.
//
//   node --test tests/browser/citations.test.mjs   (make test-browser builds what it needs first)
//

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { Agent, ROOT, TENANT_KEY, keyHash, launchChromium, profileBase, startKefu } from "./harness.mjs";

// Screenshots are taken on every run, into target/; `make screenshots` runs the tests with
// KEFU_SCREENSHOTS=docs/screenshots to renew the README's.
const SHOTS = resolve(ROOT, process.env.KEFU_SCREENSHOTS || "target/browser-screenshots");
const HOSTILE = `<img src=x onerror="window.__xss=1">Coffee care <b>& bags</b>`;
// What the mock answers (a fault profile's `reply=`; `_` is a space, no commas): blocks 1
// and 2 exist, block 9 does not.
const SAID = "Refunds reach your card in 5 to 7 business days [1]. Opened bags are refunded as store credit [2]. Ask us anytime [9].";
const SHOWN = "Refunds reach your card in 5 to 7 business days [1]. Opened bags are refunded as store credit [2]. Ask us anytime.";
const QUESTION = "How long do refunds take, also for opened coffee bags?";
// The README's screenshot: the same shop with a friendly title for its second source.
const SHOP_KEY = "kf-shop.Kefu0Browser0Citations0Key01";

let kefu;
let browser;
let conversation;
let shopConversation;

before(async () => {
  kefu = await startKefu((mock) => ({
    default: {
      name: "Northwind Coffee",
      provider: { base_url: profileBase(mock, "chunk_delay_ms=20,reply=" + SAID.replaceAll(" ", "_")), model: "mock-gpt" },
      knowledge: { enabled: true, top_k: 3 },
      api_keys: [{ id: "browser-tests", sha256: keyHash(TENANT_KEY) }],
    },
    shop: {
      name: "Northwind Coffee",
      provider: { base_url: profileBase(mock, "chunk_delay_ms=20,reply=" + SAID.replaceAll(" ", "_")), model: "mock-gpt" },
      knowledge: { enabled: true, top_k: 3 },
      api_keys: [{ id: "browser-tests", sha256: keyHash(SHOP_KEY) }],
    },
  }));
  const put = async (key, source) => {
    const resp = await fetch(`${kefu.base}/api/v1/knowledge/sources/${source.id}`, {
      method: "PUT",
      headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
      body: JSON.stringify(source),
    });
    assert.equal(resp.status, 200, await resp.text());
  };
  const returns = {
    id: "returns",
    title: "Returns & refunds",
    url: "https://shop.example/help/returns",
    kind: "markdown",
    body: "# Returns\n\n## Refund times\n\nRefunds reach your card in 5 to 7 business days after the return arrives.",
  };
  const care = { id: "care", kind: "markdown", body: "# Opened bags\n\nRefunds for opened coffee bags are given as store credit." };
  await put(TENANT_KEY, returns);
  await put(TENANT_KEY, { ...care, title: HOSTILE });
  await put(SHOP_KEY, returns);
  await put(SHOP_KEY, { ...care, title: "Coffee care" });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  kefu?.stop();
});

/** A page in a fresh context (its own storage), collecting errors. */
async function newPage(context = {}) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "en-US", colorScheme: "light", ...context });
  const page = await ctx.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e));
  page.on("console", (m) => m.type() === "error" && errors.push(new Error(`${m.text()} (${m.location().url})`)));
  return { ctx, page, errors };
}

/** The sources under the answer, as the page shows them: number, title, link, section. */
function readSources(list) {
  return list.locator("li").evaluateAll((items) =>
    items.map((li) => ({
      number: li.querySelector(".src-n")?.textContent,
      title: (li.querySelector("a") || li.querySelector(".src-t"))?.textContent,
      href: li.querySelector("a")?.getAttribute("href") ?? null,
      rel: li.querySelector("a")?.getAttribute("rel") ?? null,
      heading: li.querySelector(".src-h")?.textContent ?? null,
    })),
  );
}

/** Both sources, whichever the search ranked first: the linked one with its section, the
 * hostile one as plain text; numbers 1 and 2 as the answer shows them. */
function assertSources(sources) {
  assert.deepEqual(sources.map((s) => s.number).sort(), ["[1]", "[2]"]);
  const returns = sources.find((s) => s.href);
  assert.deepEqual(
    { title: returns.title, href: returns.href, heading: returns.heading },
    { title: "Returns & refunds", href: "https://shop.example/help/returns", heading: "Returns › Refund times" },
  );
  assert.match(returns.rel, /noopener/);
  const care = sources.find((s) => !s.href);
  assert.equal(care.title, HOSTILE, "the hostile title is text, as written");
  assert.equal(care.heading, "Opened bags");
}

describe("citations", { concurrency: false }, () => {
  test("the widget shows the answer's sources under it; the unknown marker never shows, even mid-stream", async () => {
    const v = await newPage();
    await v.page.goto(kefu.base + "/widget-demo");
    await v.page.waitForFunction(() => window.Kefu && document.querySelector("kefu-widget"));
    const w = (sel) => v.page.locator("kefu-widget " + sel);
    await w(".launcher").click();
    // Every text the bot's bubbles ever show, as the answer streams in.
    await v.page.evaluate(() => {
      const root = document.querySelector("kefu-widget").shadowRoot;
      window.__seen = [];
      new MutationObserver(() => {
        for (const b of root.querySelectorAll(".msg.bot .bubble")) window.__seen.push(b.textContent);
      }).observe(root, { subtree: true, childList: true, characterData: true });
    });
    await w("textarea").fill(QUESTION);
    await w("textarea").press("Enter");
    const answer = w(".msg.bot:not(.streaming)").filter({ hasText: "store credit" });
    await answer.locator(".sources li").nth(1).waitFor();
    assert.equal(await answer.locator(".bubble").textContent(), SHOWN);
    const seen = await v.page.evaluate(() => window.__seen);
    assert.ok(seen.some((t) => t.includes("5 to 7")), "the answer streamed");
    assert.ok(!seen.some((t) => /\[\s*9/.test(t)), `a marker citing nothing showed: ${seen.find((t) => /\[\s*9/.test(t))}`);
    assertSources(await readSources(answer.locator(".sources")));
    assert.equal(await answer.locator(".sources").getAttribute("aria-label"), "Sources");
    assert.equal(await v.page.evaluate(() => window.__xss), undefined);
    conversation = await v.page.evaluate(() => Kefu.conversationId);
    assert.ok(conversation);

    // A reload shows them again, from the transcript.
    await v.page.reload();
    await v.page.waitForFunction(() => window.Kefu && document.querySelector("kefu-widget"));
    await w(".launcher").click();
    await w(".msg.bot .sources li").nth(1).waitFor();
    assertSources(await readSources(w(".msg.bot .sources")));
    assert.equal(await v.page.evaluate(() => window.__xss), undefined);
    assert.deepEqual(v.errors, []);
    await v.ctx.close();
  });

  test("screenshot: an answer with its sources in the widget", async () => {
    const v = await newPage();
    // The shop's tenant on the page's one tag, set before the widget reads it.
    await v.page.route("**/widget.js", async (route) => {
      const resp = await route.fetch();
      await route.fulfill({ response: resp, body: 'document.currentScript.dataset.tenant = "shop";\n' + (await resp.text()) });
    });
    await v.page.goto(kefu.base + "/widget-demo");
    await v.page.waitForFunction(() => window.Kefu && document.querySelector("kefu-widget"));
    const w = (sel) => v.page.locator("kefu-widget " + sel);
    await w(".launcher").click();
    await w("textarea").fill(QUESTION);
    await w("textarea").press("Enter");
    await w(".msg.bot:not(.streaming) .sources li").nth(1).waitFor();
    mkdirSync(SHOTS, { recursive: true });
    await v.page.waitForTimeout(400); // animations settle
    await v.page.screenshot({ path: join(SHOTS, "widget-citations.png") });
    shopConversation = await v.page.evaluate(() => Kefu.conversationId);
    assert.deepEqual(v.errors, []);
    await v.ctx.close();
  });

  test("the agent console shows them with the bot's message", async () => {
    const agent = await new Agent(kefu.base, "alex", "Alex", TENANT_KEY).signIn();
    const c = await newPage();
    await c.page.goto(`${kefu.base}/agent/#conversation=${conversation}`);
    await c.page.locator("#token-input").fill(agent.token);
    await c.page.locator("#token-input").press("Enter");
    const bot = c.page.locator(".msg.bot").filter({ hasText: "store credit" });
    await bot.locator(".sources li").nth(1).waitFor();
    assert.equal(await bot.locator(".bubble").textContent(), SHOWN);
    assertSources(await readSources(bot.locator(".sources")));
    assert.equal(await c.page.evaluate(() => window.__xss), undefined);
    assert.deepEqual(c.errors, []);
    await c.ctx.close();

    // The README's screenshot: the shop's conversation from the widget's screenshot.
    const sam = await new Agent(kefu.base, "sam", "Sam", SHOP_KEY).signIn();
    const s = await newPage();
    await s.page.goto(`${kefu.base}/agent/#conversation=${shopConversation}`);
    await s.page.locator("#token-input").fill(sam.token);
    await s.page.locator("#token-input").press("Enter");
    await s.page.locator(".msg.bot .sources li").nth(1).waitFor();
    mkdirSync(SHOTS, { recursive: true });
    await s.page.screenshot({ path: join(SHOTS, "agent-citations.png") });
    assert.deepEqual(s.errors, []);
    await s.ctx.close();
  });

  test("the replay console shows them under the recorded reply and marks the cited chunks", async () => {
    const agent = await new Agent(kefu.base, "alex", "Alex", TENANT_KEY).signIn();
    const c = await newPage();
    await c.page.goto(`${kefu.base}/replay/#id=${conversation}`);
    await c.page.locator("#cred-input").fill(agent.token);
    await c.page.locator("#cred-input").press("Enter");
    const bot = c.page.locator(".bubble.bot").filter({ hasText: "store credit" });
    await bot.locator(".sources li").nth(1).waitFor();
    assertSources(await readSources(bot.locator(".sources")));
    // The turn's details say which chunks the reply cited, by the number it shows.
    await c.page.locator(".turn-details summary").first().click();
    const cited = await c.page.locator("table.knowledge tbody tr td:nth-child(5)").allTextContents();
    assert.deepEqual(cited.filter(Boolean).sort(), ["[1]", "[2]"]);
    assert.equal(await c.page.evaluate(() => window.__xss), undefined);
    assert.deepEqual(c.errors, []);
    await c.ctx.close();
  });
});
