// Browser tests for the agent console (web/agent/): Debian's Chromium (headless, via
// playwright-core) against Kefu on workerd with the mock provider. A visitor uses the widget
// on the demo page in one browser context; the agent signs in to the console in another,
// with a token minted through the API as the tenant's back end would.
//
//   node --test tests/browser/console.test.mjs   (make test-browser builds what it needs first)
//

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { Agent, ROOT, TENANT_KEY, keyHash, launchChromium, profileBase, startKefu } from "./harness.mjs";

// Screenshots are taken on every run, into target/; `make screenshots` runs the tests with
// KEFU_SCREENSHOTS=docs/screenshots to renew the README's.
const SHOTS = resolve(ROOT, process.env.KEFU_SCREENSHOTS || "target/browser-screenshots");
const XSS = `<img src=x onerror="window.__xss=1">`;
const XSS_NAME = `<img src=x onerror="window.__xss=2"><script>window.__xss=3</script>`;
const XSS_FILE = `<img src=x onerror="window.__xss=4">.md`;

const NORTHWIND_KEY = "kf-northwind.Kefu0Browser0Console0Key01";
const IDENTITY_SECRET = "console-tests-identity-secret-0123456789";
const proof = (id) => ({ id, hash: createHmac("sha256", IDENTITY_SECRET).update(id).digest("hex") });
// The mock's reply (a fault profile's `reply=`; `_` is a space, no commas).
const reply = (text) => "reply=" + text.replaceAll(" ", "_");
const PNG = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==", "base64");

let kefu;
let browser;

before(async () => {
  kefu = await startKefu((mock) => ({
    default: {
      provider: { base_url: profileBase(mock, "chunk_delay_ms=5"), model: "mock-gpt" },
      api_keys: [{ id: "browser-tests", sha256: keyHash(TENANT_KEY) }],
      handoff: { default_queue: "orders" },
      // Signed-in visitors are optional here: the widget stays anonymous, the API may verify.
      identity: { secret: IDENTITY_SECRET, required: false },
    },
    // The screenshots' shop.
    northwind: {
      name: "Northwind Coffee",
      provider: {
        base_url: profileBase(mock, "chunk_delay_ms=5," + reply("I'm sorry to hear that! Let me bring in a member of our team who can sort this out for you.")),
        model: "mock-gpt",
      },
      api_keys: [{ id: "browser-tests", sha256: keyHash(NORTHWIND_KEY) }],
      handoff: { default_queue: "orders" },
      identity: { secret: IDENTITY_SECRET, required: false },
    },
  }));
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

/** A visitor on the demo shop with the widget open. */
async function visit() {
  const v = await newPage();
  await v.page.goto(kefu.base + "/widget-demo");
  await v.page.waitForFunction(() => window.Kefu && document.querySelector("kefu-widget"));
  v.w = (sel) => v.page.locator("kefu-widget " + sel);
  await v.w(".launcher").click();
  return v;
}

/** An agent signed in to the console (with a token minted as the tenant's back end would). */
async function openConsole(id = "alex", name = "Alex", { tenantKey = TENANT_KEY, context, init } = {}) {
  const agent = await new Agent(kefu.base, id, name, tenantKey).signIn();
  const c = await newPage(context);
  if (init) await c.page.addInitScript(init);
  await c.page.goto(kefu.base + "/agent/");
  await c.page.locator("#token-input").fill(agent.token);
  await c.page.locator("#token-input").press("Enter");
  await c.page.locator("#app:not([hidden])").waitFor();
  return Object.assign(c, { agent, row: (conv) => c.page.locator(`.row[data-id="${conv}"]`) });
}

/** Texts of the messages in the widget's log. */
const widgetTexts = (page) =>
  page.evaluate(() => [...document.querySelector("kefu-widget").shadowRoot.querySelectorAll(".log > li .bubble")].map((b) => b.textContent));

/** A conversation started through the API (as a visitor), handed to a person. */
async function waitingConversation(tenant, messages, { visitor, after = [] } = {}) {
  const headers = { "content-type": "application/json", "x-kefu-tenant": tenant };
  let id;
  for (const message of messages) {
    const body = { message, ...(id ? { conversation_id: id } : {}), ...(visitor ? { visitor: proof(visitor) } : {}) };
    const r = await (await fetch(`${kefu.base}/api/v1/chat`, { method: "POST", headers, body: JSON.stringify(body) })).json();
    assert.ok(r.conversation_id, JSON.stringify(r));
    id = r.conversation_id;
  }
  const vh = visitor ? { "x-kefu-visitor-id": visitor, "x-kefu-visitor-hash": proof(visitor).hash } : {};
  const resp = await fetch(`${kefu.base}/api/v1/conversations/${id}/handoff`, { method: "POST", headers: { ...headers, ...vh }, body: "{}" });
  assert.equal(resp.status, 200, await resp.text());
  for (const { message, attachments } of after) {
    const body = { message, conversation_id: id, ...(attachments ? { attachments } : {}), ...(visitor ? { visitor: proof(visitor) } : {}) };
    const r = await fetch(`${kefu.base}/api/v1/chat`, { method: "POST", headers, body: JSON.stringify(body) });
    assert.equal(r.status, 200, await r.text());
  }
  return id;
}

describe("agent console", { concurrency: false }, () => {
  let visitor;
  let agent;
  let conversation;

  test("the console is served at /agent/ with its own Content-Security-Policy", async () => {
    for (const path of ["/agent/", "/agent/console.js", "/agent/console.css"]) {
      const resp = await fetch(kefu.base + path);
      assert.equal(resp.status, 200, path);
      const csp = resp.headers.get("content-security-policy") || "";
      assert.match(csp, /^default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:;/, path);
      assert.doesNotMatch(csp, /,/, `${path}: one policy, not the site-wide one beside it`);
      assert.equal(resp.headers.get("referrer-policy"), "no-referrer", path);
    }
    const bare = await fetch(kefu.base + "/agent", { redirect: "manual" });
    assert.equal(bare.headers.get("location"), "/agent/");
  });

  test("sign-in: a bad token is refused with the reason as text; a minted one shows who and until when", async () => {
    const c = await newPage();
    const { page } = c;
    await page.goto(kefu.base + "/agent/");
    assert.equal(await page.evaluate(() => document.activeElement.id), "token-input", "the token box has the focus");
    await page.keyboard.type("sk-not-a-token");
    await page.keyboard.press("Enter");
    await page.locator("#signin-error").filter({ hasText: "This is not an agent token" }).waitFor();
    // Well-formed, but not signed by this deployment: the API's own words come back.
    const alex = await new Agent(kefu.base, "alex", "Alex").signIn();
    const forged = alex.token.replace(/\.[^.]+$/, ".AAAA" + "A".repeat(39));
    await page.locator("#token-input").fill(forged);
    await page.locator("#signin-button").click();
    await page.locator("#signin-error").filter({ hasText: "Kefu refused this token:" }).waitFor();
    assert.equal(await page.locator("#app").isHidden(), true);
    // The real one.
    await page.locator("#token-input").fill(alex.token);
    await page.locator("#signin-button").click();
    await page.locator("#app:not([hidden])").waitFor();
    assert.equal(await page.locator("#who-name").textContent(), "Alex (alex)");
    assert.match(await page.locator("#who-expiry").textContent(), /^Signed in until /);
    assert.equal(await page.evaluate(() => sessionStorage.getItem("kefu.agent.token")), alex.token);
    // A reload keeps the tab signed in; signing out forgets the token.
    await page.reload();
    await page.locator("#app:not([hidden])").waitFor();
    await page.locator("#signout").click();
    await page.locator("#signin:not([hidden])").waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem("kefu.agent.token")), null);
    // A token handed over in the fragment signs in and leaves the address bar at once.
    await page.goto(`${kefu.base}/agent/#token=${alex.token}`);
    await page.locator("#app:not([hidden])").waitFor();
    assert.equal(new URL(page.url()).hash, "");
    assert.deepEqual(c.errors.map((e) => e.message).filter((m) => !/status of 401/.test(m)), []);
    await c.ctx.close();
  });

  test("the console warns before the token expires and signs out when it does", async () => {
    const c = await newPage();
    await c.page.clock.install();
    const alex = await new Agent(kefu.base, "alex", "Alex").signIn(); // an hour
    await c.page.goto(`${kefu.base}/agent/#token=${alex.token}`);
    await c.page.locator("#app:not([hidden])").waitFor();
    await c.page.clock.fastForward("52:00");
    await c.page.locator("#who-expiry.soon").filter({ hasText: /^Session ends in \d+ min$/ }).waitFor();
    await c.page.clock.fastForward("09:00");
    await c.page.locator("#signin-error").filter({ hasText: "Your session ended (the agent token expired)" }).waitFor();
    assert.equal(await c.page.evaluate(() => sessionStorage.getItem("kefu.agent.token")), null);
    await c.ctx.close();
  });

  test("a visitor asks for a person: the conversation appears under Waiting, with the cue", async () => {
    agent = await openConsole("alex", "Alex");
    // The console has polled once and knows the queue before the visitor arrives.
    await agent.page.locator("#list[aria-busy='false']").waitFor({ state: "attached" });
    visitor = await visit();
    await visitor.w("textarea").fill("Hi! My grinder arrived with a cracked hopper.");
    await visitor.w("textarea").press("Enter");
    await visitor.w(".msg.bot:not(.greeting):not(.streaming) .bubble").filter({ hasText: "Echo: Hi! My grinder" }).waitFor();
    await visitor.w("button.human").click();
    await visitor.w(".msg.system .bubble").filter({ hasText: "connecting you" }).waitFor();
    conversation = await visitor.page.evaluate(() => Kefu.conversationId);

    const { page } = agent;
    const row = agent.row(conversation);
    await row.waitFor({ timeout: 15_000 });
    assert.match(await row.getAttribute("class"), /\bis-new\b/, "the row is marked new");
    await page.locator("#cue:not([hidden])").filter({ hasText: "New conversation waiting" }).waitFor();
    assert.match(await page.title(), /^\(1\) Waiting/, "the title carries the count");
    // The sound is off until the agent turns it on (the click lets the page play it).
    assert.equal(await page.locator("#sound-toggle").getAttribute("aria-pressed"), "false");
    await page.locator("#sound-toggle").click();
    assert.equal(await page.locator("#sound-toggle").textContent(), "Sound on");
    assert.equal(await page.evaluate(() => JSON.parse(localStorage.getItem("kefu.agent.prefs")).sound), true);
    assert.equal(await page.locator('[data-count="waiting"]').textContent(), "1");
    assert.equal(await row.locator(".unread-badge").textContent(), "3", "three messages, none read yet");
    assert.match(await row.locator(".row-preview").textContent(), /connecting you/);
    assert.equal(await row.locator(".chip").first().textContent(), "orders", "the handoff's queue");
  });

  test("the agent opens and claims it and replies; the visitor sees it live, typing both ways", async () => {
    const { page } = agent;
    await agent.row(conversation).click();
    await page.locator(".msg.visitor .bubble").filter({ hasText: "My grinder arrived with a cracked hopper." }).waitFor();
    await page.locator("#live-state.on").waitFor();
    assert.equal(await page.locator("#conv-status").textContent(), "Waiting");
    assert.equal(await page.locator("#d-queue").textContent(), "orders");
    assert.match(await page.locator("#d-verified").textContent(), /Anonymous visitor/);
    assert.equal(await page.locator("#input").isDisabled(), true, "no reply before claiming");
    assert.match(await page.locator("#composer-hint").textContent(), /Claim the conversation to reply/);
    assert.equal(await agent.row(conversation).locator(".unread-badge").count(), 0, "opened: read");

    await page.locator("#claim").click();
    await page.locator("#conv-status").filter({ hasText: "With you" }).waitFor();
    await visitor.w(".msg.system .bubble").filter({ hasText: "Alex joined the conversation." }).waitFor();
    // Claiming puts the cursor in the reply box.
    await page.waitForFunction(() => document.activeElement?.id === "input");

    // The agent types: the visitor sees it; Enter sends.
    await page.locator("#input").pressSequentially("Hi, I'm Alex. So sorry about that", { delay: 15 });
    await visitor.w(".typing:not([hidden])").filter({ hasText: "agent is typing" }).waitFor();
    await page.keyboard.press("Shift+Enter");
    await page.keyboard.type("Could you send a photo?");
    await page.keyboard.press("Enter");
    const sent = "Hi, I'm Alex. So sorry about that\nCould you send a photo?";
    await visitor.w(".msg.agent .bubble").filter({ hasText: "Could you send a photo?" }).waitFor();
    assert.ok((await widgetTexts(visitor.page)).includes(sent), "Shift+Enter kept the new line");
    await page.locator(".msg.agent .meta b").filter({ hasText: "You" }).waitFor();
    assert.equal(await page.locator("#input").inputValue(), "", "the box empties once sent");

    // The visitor types: the agent sees it.
    await visitor.w("textarea").pressSequentially("Sure, one mo", { delay: 20 });
    await page.locator("#typing.on").filter({ hasText: "is typing" }).waitFor();
    await visitor.w("textarea").fill("");
    await page.locator("[data-count='mine']").filter({ hasText: "1" }).waitFor();
  });

  test("canned responses and files: '/' inserts one, files upload and reach the visitor", async () => {
    const { page } = agent;
    await page.locator("#input").pressSequentially("/ord");
    await page.locator("#canned-menu:not([hidden])").waitFor();
    assert.deepEqual(await page.locator(".canned-item .sc").allTextContents(), ["/order"]);
    await page.keyboard.press("Enter");
    assert.equal(await page.locator("#input").inputValue(), "Could you share your order number so I can look it up?");
    assert.equal(await page.locator("#canned-menu").isHidden(), true);
    await page.locator("#input").fill("");
    // An edited list is kept in this browser.
    await page.locator("#canned-edit").click();
    await page.locator("#canned-add").click();
    await page.locator(".canned-rows li:last-child .sc").fill("label");
    await page.locator(".canned-rows li:last-child .tx").fill("Here is your return label, {agent} from Northwind.");
    await page.locator("#canned-form button[type=submit]").click();
    await page.locator("#input").pressSequentially("/lab");
    await page.keyboard.press("Enter");
    assert.equal(await page.locator("#input").inputValue(), "Here is your return label, Alex from Northwind.");
    assert.match(await page.evaluate(() => localStorage.getItem("kefu.agent.canned")), /return label/);

    await page.locator("#file").setInputFiles([
      { name: "hopper.png", mimeType: "image/png", buffer: PNG },
      { name: "return-label.txt", mimeType: "text/plain", buffer: Buffer.from("Return label for order 1042\n") },
    ]);
    await page.locator("#tray li .state").filter({ hasText: "ready" }).nth(1).waitFor();
    await page.keyboard.press("Enter");
    await visitor.w(".msg.agent .bubble").filter({ hasText: "Here is your return label" }).waitFor();
    const theirs = visitor.w(".msg.agent").filter({ hasText: "Here is your return label" });
    await theirs.locator("img").waitFor();
    assert.equal(await theirs.locator("a.doc").textContent(), "return-label.txt");
    // The console shows the stored image from a blob: URL (fetched with the agent's token).
    const mine = page.locator(".msg.agent").filter({ hasText: "Here is your return label" });
    const img = mine.locator("img");
    await img.waitFor();
    await page.waitForFunction((el) => el.complete && el.naturalWidth === 1 && el.src.startsWith("blob:"), await img.elementHandle());
    assert.equal(await mine.locator(".file-link .name").textContent(), "return-label.txt");
    assert.equal(await page.locator("#tray").isHidden(), true);
  });

  test("an internal note is the agents' only: the visitor never sees it", async () => {
    const { page } = agent;
    const note = "Customer since 2021; replace the hopper without a return.";
    await page.locator("#mode-note").click();
    assert.match(await page.locator("#composer").getAttribute("class"), /\bnote\b/);
    await page.locator("#input").fill(note);
    await page.locator("#input").press("Enter");
    await page.locator(".msg.note .bubble").filter({ hasText: note }).waitFor();
    await page.locator("#mode-reply").click();
    await page.locator("#input").fill("A new hopper is on its way.");
    await page.locator("#input").press("Enter");
    await visitor.w(".msg.agent .bubble").filter({ hasText: "A new hopper is on its way." }).waitFor();
    const texts = await widgetTexts(visitor.page);
    assert.ok(!texts.some((t) => t.includes("replace the hopper")), "the note is not in the widget");
    const asVisitor = await (await fetch(`${kefu.base}/api/v1/conversations/${conversation}`)).json();
    assert.ok(!asVisitor.messages.some((m) => m.role === "note"), "nor in the visitor's transcript");
    assert.equal(await page.locator(".msg.note").count(), 1);
  });

  test("HTML in a visitor message, a visitor's name and a file name stays inert text in the console", async () => {
    const { page } = agent;
    // In the open conversation: a message and a file whose name is markup.
    await visitor.w('input[type="file"]').setInputFiles([{ name: XSS_FILE, mimeType: "text/markdown", buffer: Buffer.from("# my notes\n") }]);
    await visitor.w("textarea").fill(XSS);
    await visitor.w("textarea").press("Enter");
    const bubble = page.locator(".msg.visitor").filter({ has: page.locator(".file-link") });
    await bubble.waitFor();
    assert.equal(await bubble.locator(".bubble").textContent(), XSS);
    // Kefu keeps file names tame already; whatever it stored shows exactly, as text.
    const stored = await (await fetch(`${kefu.base}/api/v1/conversations/${conversation}`)).json();
    const file = stored.messages.flatMap((m) => m.parts).find((p) => p.type === "document" && p.name.includes("onerror"));
    assert.equal(await bubble.locator(".file-link .name").textContent(), file.name);
    // A verified visitor whose id is markup, in the list and in the conversation.
    const evil = await waitingConversation("default", ["hello"], { visitor: XSS_NAME });
    await page.locator("[data-filter=waiting]").click();
    const row = agent.row(evil);
    await row.waitFor({ timeout: 15_000 });
    assert.equal(await row.locator(".row-name").textContent(), XSS_NAME);
    await row.click();
    await page.locator("#conv-name").filter({ hasText: XSS_NAME }).waitFor();
    assert.equal(await page.locator("#d-visitor").textContent(), XSS_NAME);
    assert.match(await page.locator("#d-verified").textContent(), /Verified visitor/);
    await page.locator(".msg.visitor .meta b").filter({ hasText: XSS_NAME }).first().waitFor();
    const found = await page.evaluate(() => ({
      xss: window.__xss,
      injected: document.querySelectorAll('img[src="x"], img[onerror], script:not([src="/agent/console.js"])').length,
      scripts: document.scripts.length,
    }));
    assert.deepEqual(found, { xss: undefined, injected: 0, scripts: 1 });
    assert.deepEqual(agent.errors, []);
    // Back to the visitor's conversation.
    await page.locator("[data-filter=mine]").click();
    await agent.row(conversation).click();
    await page.locator(".msg.note").waitFor();
  });

  test("the agent resolves: the status shows it, the visitor rates, the rating reaches the console", async () => {
    const { page } = agent;
    await page.locator("#resolve").click();
    await page.locator("#conv-status").filter({ hasText: "Resolved" }).waitFor();
    assert.equal(await page.locator("#claim").isHidden(), true);
    assert.equal(await page.locator("#resolve").isDisabled(), true);
    assert.match(await page.locator("#composer-hint").textContent(), /Resolved/);
    await visitor.w(".rating").waitFor({ state: "visible" });
    await visitor.w('.stars button[aria-label="4 out of 5"]').click();
    await page.locator('#d-csat [aria-label="4 out of 5"]').waitFor({ timeout: 15_000 });
    await page.locator("[data-filter=resolved]").click();
    await agent.row(conversation).locator(".pill.resolved").waitFor();
    assert.deepEqual(visitor.errors, []);
    assert.deepEqual(agent.errors, []);
    await visitor.ctx.close();
    await agent.ctx.close();
  });

  test("without WebSocket the console follows a conversation over Server-Sent Events; transfers", async () => {
    const id = await waitingConversation("default", ["Is the Huila decaf?"]);
    const c = await openConsole("sam", "Sam", { init: () => delete window.WebSocket });
    const { page } = c;
    await c.row(id).click();
    await page.locator("#live-state.on").waitFor();
    assert.equal(await page.locator("#live-state").getAttribute("title"), "Live over Server-Sent Events");
    await page.locator("#claim").click();
    await page.locator("#conv-status").filter({ hasText: "With you" }).waitFor();
    await fetch(`${kefu.base}/api/v1/chat`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ conversation_id: id, message: "Sent while Sam watches" }) });
    await page.locator(".msg.visitor .bubble").filter({ hasText: "Sent while Sam watches" }).waitFor();
    // Typing goes over HTTP when there is no socket.
    const heard = c.agent.listen(id, (e) => e.event === "typing" && e.data.who === "agent");
    await heard.opened;
    await page.locator("#input").pressSequentially("Yes, it is decaf", { delay: 40 });
    assert.equal((await heard.event).data.who, "agent");
    // Transfer back to a queue: the conversation waits again, in that queue.
    await page.locator("#transfer").click();
    await page.locator("#transfer-dialog[open]").waitFor();
    await page.locator("#transfer-form input[value=queue]").check();
    await page.locator("#to-queue").fill("billing");
    await page.locator("#to-queue").press("Enter");
    await page.locator("#conv-status").filter({ hasText: "Waiting" }).waitFor();
    assert.equal(await page.locator("#d-queue").textContent(), "billing");
    assert.equal(await page.locator("#transfer-dialog").isVisible(), false);
    await page.locator(".msg.system .bubble").filter({ hasText: "passing you to a colleague" }).waitFor();
    // …and to another agent, after taking it back.
    await page.locator("#claim").click();
    await page.locator("#conv-status").filter({ hasText: "With you" }).waitFor();
    await page.locator("#transfer").click();
    await page.locator("#transfer-form input[value=agent]").check();
    await page.locator("#to-agent").fill("kim");
    await page.locator("#to-agent-name").fill("Kim");
    await page.locator("#to-agent-name").press("Enter");
    await page.locator("#conv-status").filter({ hasText: "With kim" }).waitFor();
    await page.locator(".msg.system .bubble").filter({ hasText: "Kim joined the conversation." }).waitFor();
    assert.equal(await page.locator("#input").isDisabled(), true, "Kim's now");
    assert.deepEqual(c.errors, []);
    await c.ctx.close();
  });

  test("a lost connection comes back and catches up from the cursor: nothing missed, nothing twice", async () => {
    const id = await waitingConversation("default", ["Are the beans roasted to order?"]);
    const c = await openConsole("ana", "Ana");
    const { page, ctx } = c;
    await c.row(id).click();
    await page.locator("#live-state.on").waitFor();
    const seqs = () => page.locator(".msg").evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
    const before = await seqs();
    await ctx.setOffline(true);
    await page.evaluate(() => window.dispatchEvent(new Event("offline")));
    // Meanwhile a colleague leaves a note (any agent may).
    const sam = await new Agent(kefu.base, "sam", "Sam").signIn();
    await sam.call(`/api/v1/conversations/${id}/messages`, { text: "Written while Ana was offline", internal: true });
    await page.waitForTimeout(500);
    assert.deepEqual(await seqs(), before, "offline, nothing arrives");
    await ctx.setOffline(false);
    await page.evaluate(() => window.dispatchEvent(new Event("online")));
    await page.locator(".msg.note .bubble").filter({ hasText: "Written while Ana was offline" }).waitFor();
    await page.locator("#live-state.on").waitFor();
    const after = await seqs();
    assert.deepEqual(after, [...before, Math.max(...before) + 1], "the note once, in order");
    assert.deepEqual(c.errors, []);
    await ctx.close();
  });

  test("an API error is shown as text, with its code", async () => {
    const id = await waitingConversation("default", ["Can I change my delivery address?"]);
    const c = await openConsole("lee", "Lee");
    const { page } = c;
    await c.row(id).click();
    await page.locator(".msg.visitor").first().waitFor();
    // Someone else was quicker (played here, in the API's error shape, with markup in it).
    await page.route("**/claim", (route) =>
      route.fulfill({ status: 409, headers: { "content-type": "application/json" }, body: JSON.stringify({ error: { code: "not_assignee", message: `<b onmouseover="window.__xss=5">sam</b> owns it` } }) }),
    );
    await page.locator("#claim").click();
    const error = page.locator("#errors .error");
    await error.waitFor();
    assert.equal(await error.locator("p").textContent(), `Claiming: <b onmouseover="window.__xss=5">sam</b> owns it not_assignee`);
    assert.equal(await error.locator("p code").textContent(), "not_assignee");
    assert.equal(await page.locator("#errors b").count(), 0, "the message is text");
    await error.getByRole("button", { name: "Dismiss" }).click();
    assert.equal(await error.count(), 0);
    assert.equal(await page.locator("#conv-status").textContent(), "Waiting", "nothing changed");
    assert.deepEqual(c.errors.map((e) => e.message).filter((m) => !/status of 409/.test(m)), []);
    await c.ctx.close();
  });

  test("on a phone the list and the conversation take turns; the keyboard reaches everything", async () => {
    const id = await waitingConversation("default", ["Do you ship to Norway?"]);
    const c = await openConsole("kim", "Kim", { context: { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true } });
    const { page } = c;
    await c.row(id).waitFor();
    assert.equal(await page.locator("#conversation").isHidden(), true);
    await c.row(id).click();
    await page.locator(".msg.visitor .bubble").filter({ hasText: "Do you ship to Norway?" }).waitFor();
    assert.equal(await page.locator(".inbox").isHidden(), true);
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 390, `nothing wider than the screen (${width}px)`);
    await page.locator("#back").click();
    await c.row(id).waitFor();
    assert.equal(await page.evaluate(() => document.activeElement.dataset.id), id, "focus back on the row");
    // Landmarks for screen readers.
    assert.equal(await page.locator("nav[aria-label=Conversations]").count(), 1);
    assert.equal(await page.locator("main[aria-label=Conversation]").count(), 1);
    assert.equal(await page.locator("aside[aria-label='Conversation details']").count(), 1);
    assert.deepEqual(c.errors, []);
    await c.ctx.close();
  });

  test("screenshots: the inbox with a waiting conversation, a conversation with a note and a reply, dark", async () => {
    mkdirSync(SHOTS, { recursive: true });
    // A photo for the first conversation (the demo page's coffee swatch).
    const shop = await browser.newPage({ viewport: { width: 800, height: 900 } });
    await shop.goto(kefu.base + "/widget-demo");
    const photo = await shop.locator(".swatch.s2").screenshot();
    await shop.close();
    const up = await fetch(`${kefu.base}/api/v1/attachments?name=hopper.png`, {
      method: "POST",
      headers: { "content-type": "image/png", "x-kefu-tenant": "northwind", "x-kefu-visitor-id": "maria.schmidt@example.com", "x-kefu-visitor-hash": proof("maria.schmidt@example.com").hash },
      body: photo,
    });
    const uploaded = await up.text();
    assert.equal(up.status, 201, uploaded);
    const photoId = JSON.parse(uploaded).id;

    const nw = (id, name) => openConsole(id, name, { tenantKey: NORTHWIND_KEY, context: { deviceScaleFactor: 1 } });
    const older = await waitingConversation("northwind", ["Can I pause my subscription while I travel in December?"], {
      after: [{ message: "I'd like to keep the Yirgacheffe when I'm back in January." }],
    });
    const jo = await waitingConversation("northwind", ["My discount code WINTER15 is not accepted at checkout"], {
      visitor: "j.okafor",
      after: [{ message: "It says the code has expired but the email only came today." }],
    });
    // One that Sam already has.
    const lena = await waitingConversation("northwind", ["Where is my order 1038?"], { visitor: "lena.k" });
    const samApi = await new Agent(kefu.base, "sam", "Sam", NORTHWIND_KEY).signIn();
    await samApi.claim(lena);
    await samApi.reply(lena, "It left the roastery this morning. Here is the tracking link.");
    for (const id of [older, jo]) assert.ok(id);

    const c = await nw("sam", "Sam");
    const { page } = c;
    await page.locator("#list[aria-busy='false']").waitFor({ state: "attached" });
    // A new one arrives while Sam watches.
    const maria = await waitingConversation("northwind", ["Hi! My grinder arrived with a cracked hopper."], {
      visitor: "maria.schmidt@example.com",
      after: [{ message: "Order 1042, delivered yesterday. Here's a photo.", attachments: [photoId] }],
    });
    await c.row(maria).waitFor({ timeout: 15_000 });
    await page.locator("#cue:not([hidden])").waitFor();
    await c.row(jo).click();
    await page.locator(".msg.visitor .bubble").filter({ hasText: "email only came today" }).waitFor();
    await page.locator("#live-state.on").waitFor();
    await page.mouse.move(0, 0);
    await page.waitForTimeout(400);
    await page.screenshot({ path: join(SHOTS, "agent-inbox.png") });

    // Maria's conversation: claimed, a canned greeting, a note for the team, a reply.
    await c.row(maria).click();
    await page.locator(".msg.visitor img").waitFor();
    await page.waitForFunction(() => [...document.querySelectorAll(".msg img")].every((i) => i.complete && i.naturalWidth > 0));
    await page.locator("#claim").click();
    await page.locator("#conv-status").filter({ hasText: "With you" }).waitFor();
    await page.locator("#input").pressSequentially("/hello");
    await page.keyboard.press("Enter");
    await page.keyboard.press("Enter");
    await page.locator("#mode-note").click();
    await page.locator("#input").fill("Replacement hoppers are in stock. Sending one by express; no return needed.");
    await page.keyboard.press("Enter");
    await page.locator("#mode-reply").click();
    await page.locator("#input").fill("A new hopper is on its way by express and should arrive on Thursday. No need to send the broken one back.");
    await page.keyboard.press("Enter");
    await page.locator(".msg.agent .bubble").filter({ hasText: "Thursday" }).waitFor();
    await fetch(`${kefu.base}/api/v1/conversations/${maria}/typing`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-kefu-tenant": "northwind", "x-kefu-visitor-id": "maria.schmidt@example.com", "x-kefu-visitor-hash": proof("maria.schmidt@example.com").hash },
      body: JSON.stringify({ who: "visitor" }),
    });
    await page.locator("#typing.on").waitFor();
    await page.locator("#input").fill("Thanks, Maria! ");
    await page.waitForTimeout(400);
    await page.screenshot({ path: join(SHOTS, "agent-conversation.png") });
    // The same, in the system's dark theme.
    await page.emulateMedia({ colorScheme: "dark" });
    await page.waitForTimeout(200);
    assert.equal(await page.evaluate(() => getComputedStyle(document.body).backgroundColor), "rgb(12, 17, 29)");
    await page.screenshot({ path: join(SHOTS, "agent-dark.png") });
    assert.deepEqual(c.errors, []);
    await c.ctx.close();
  });
});
