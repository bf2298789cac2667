// Browser tests for the replay console (web/replay/): Debian's Chromium (headless, via
// playwright-core) against Kefu on workerd with the mock provider. A conversation is made
// through the API (a grounded model turn whose primary fails and falls back, a rule's turn),
// then an agent opens it in the console, reads the turn's attempts, replays it under another
// model and exports it.
//
//   node --test tests/browser/replay.test.mjs   (make test-browser builds what it needs first)

import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { Agent, ROOT, TENANT_KEY, keyHash, launchChromium, profileBase, startKefu } from "./harness.mjs";

// Screenshots are taken on every run, into target/; `make screenshots` writes docs/screenshots/.
const SHOTS = resolve(ROOT, process.env.KEFU_SCREENSHOTS || "target/browser-screenshots");
const XSS = `<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>`;
// The mock's reply (a fault profile's `reply=`; `_` is a space, no commas).
const reply = (text) => "reply=" + text.replaceAll(" ", "_");
const OLD_REPLY = "Your parcel left our warehouse yesterday. EU deliveries take 3 business days.";
const NEW_REPLY = "It shipped yesterday and arrives within 3 business days (EU). Track it under Orders.";

let kefu;
let browser;
let conversation;

before(async () => {
  kefu = await startKefu((mock) => ({
    default: {
      name: "Northwind Coffee",
      system_prompt: "You are Northwind Coffee's support assistant. Be brief and friendly.",
      providers: {
        primary: { kind: "openai_compatible", base_url: profileBase(mock, "status=500") },
        backup: { kind: "openai_compatible", base_url: profileBase(mock, reply(OLD_REPLY)) },
        large: { kind: "openai_compatible", base_url: profileBase(mock, reply(NEW_REPLY)) },
      },
      routes: { default: { targets: [{ provider: "primary", model: "mock-gpt" }, { provider: "backup", model: "mock-gpt" }] } },
      retry: { attempts_per_target: 1 },
      rules: [{ id: "refund-policy", when: { keywords: ["refund"] }, then: { reply: "Refunds reach your card within 5 to 7 business days.", tag: "billing" } }],
      knowledge: { enabled: true, top_k: 3 },
      api_keys: [{ id: "browser-tests", sha256: keyHash(TENANT_KEY) }],
    },
  }));
  const put = await fetch(`${kefu.base}/api/v1/knowledge/sources/shipping`, {
    method: "PUT",
    headers: { "content-type": "application/json", authorization: `Bearer ${TENANT_KEY}` },
    body: JSON.stringify({
      id: "shipping",
      title: "Shipping FAQ",
      kind: "faq_json",
      body: JSON.stringify([
        { question: "How long does shipping take?", answer: "Parcels arrive within 3 business days in the EU and 7 to 10 days elsewhere." },
        { question: "Where is my order?", answer: "Orders ship the next business day; the tracking link is under Orders." },
      ]),
    }),
  });
  assert.equal(put.status, 200, await put.text());
  const chat = async (message) => {
    const resp = await fetch(`${kefu.base}/api/v1/chat`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ message, ...(conversation ? { conversation_id: conversation } : {}) }),
    });
    const json = await resp.json();
    assert.equal(resp.status, 200, JSON.stringify(json));
    conversation = json.conversation_id;
    return json;
  };
  const first = await chat(`Where is my order? How long does shipping take? ${XSS}`);
  assert.equal(first.reply.parts[0].text, OLD_REPLY);
  await chat("And if I want a refund?");
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  kefu?.stop();
});

async function mockRequests() {
  return (await (await fetch(`${kefu.mockRoot}/_mock/requests`)).json()).filter((r) => r.method === "POST");
}

describe("replay console", { concurrency: false }, () => {
  let page;
  let errors;
  let ctx;

  before(async () => {
    const agent = await new Agent(kefu.base, "alex", "Alex").signIn();
    ctx = await browser.newContext({ viewport: { width: 1400, height: 1000 }, locale: "en-US", colorScheme: "light", acceptDownloads: true });
    page = await ctx.newPage();
    errors = [];
    page.on("pageerror", (e) => errors.push(e));
    page.on("console", (m) => m.type() === "error" && errors.push(new Error(`${m.text()} (${m.location().url})`)));
    const resp = await page.goto(`${kefu.base}/replay/#id=${conversation}`);
    const csp = resp.headers()["content-security-policy"] || "";
    assert.match(csp, /script-src 'self'/);
    assert.match(csp, /default-src 'none'/);
    await page.locator("#cred-input").fill(agent.token);
    await page.locator("#cred-input").press("Enter");
    await page.locator("#app:not([hidden])").waitFor();
  });

  after(async () => {
    await ctx?.close();
  });

  test("the console shows each turn's record: the attempts with the fallback, the rule, the chunks, the prompt", async () => {
    const turns = page.locator(".timeline > .turn");
    await turns.nth(1).waitFor();
    assert.equal(await turns.count(), 2);
    const first = turns.nth(0);
    // Expanded from the keyboard: the summary is focusable and Enter opens it.
    await first.locator(".turn-details > summary").focus();
    await page.keyboard.press("Enter");
    const rows = first.locator(".record table.attempts tbody tr");
    await rows.nth(1).waitFor();
    assert.equal(await rows.count(), 2);
    const cells = async (i) => (await rows.nth(i).locator("td").allTextContents()).map((t) => t.trim());
    const [a1, a2] = [await cells(0), await cells(1)];
    assert.equal(a1[1], "primary/mock-gpt");
    assert.equal(a1[3], "500");
    assert.match(a1[8], /→ fallback$/);
    assert.equal(a2[1], "backup/mock-gpt");
    assert.equal(a2[3], "200");
    assert.equal(a2[8], "success");
    assert.match(await first.locator(".turn-chips").textContent(), /2 attempts.*fallback/);
    // The chunks with their scores, and the prompt as sent (the chunk's text in it).
    const chunk = first.locator("table.knowledge tbody tr").first();
    assert.match(await chunk.textContent(), /shipping#\d.*Shipping FAQ.*-?\d[\d.e+-]*.*yes/);
    assert.match(await first.locator(".prompt").textContent(), /3 business days in the EU/);
    // The rule's turn.
    const second = turns.nth(1);
    await second.locator(".turn-details > summary").click();
    assert.match(await second.locator(".record").textContent(), /refund-policy.*keyword:refund.*reply, tag:billing/);
    assert.match(await second.locator(".record").textContent(), /tags.*billing/);
  });

  test("an XSS payload in a message renders as inert text", async () => {
    const visitor = page.locator(".timeline > .turn").first().locator(".bubble.visitor .bubble-text");
    assert.ok((await visitor.textContent()).includes(XSS));
    assert.equal(await page.locator(".timeline img, .timeline script").count(), 0);
    // The prompt shows the same payload as text.
    assert.ok((await page.locator(".timeline .prompt").first().textContent()).includes(XSS));
    assert.equal(await page.evaluate(() => window.__xss), undefined);
  });

  test("it replays the conversation under another model, old and new replies side by side", async () => {
    const before = (await mockRequests()).length;
    const stored = await (await fetch(`${kefu.base}/api/v1/conversations/${conversation}`, { headers: { authorization: `Bearer ${TENANT_KEY}` } })).json();
    // A bad model first: the server's stable code, shown.
    await page.locator("#model-input").fill("nowhere/model");
    await page.locator("#replay-run").click();
    await page.locator("#replay-error:text('invalid_field')").waitFor();
    assert.match(await page.locator("#replay-error").textContent(), /nowhere/);
    // The browser logs that refused request (400) as a console error; nothing else may be.
    const refused = errors.splice(0).filter((e) => !/status of 400 .*\/replay\)$/.test(e.message));
    assert.deepEqual(refused, []);

    await page.locator("#model-input").fill("large/mock-gpt-large");
    await page.locator("#model-input").press("Enter");
    const first = page.locator(".replay-turn").first();
    await first.waitFor();
    assert.equal(await page.locator(".replay-turn").count(), 2);
    assert.equal((await first.locator(".side.old .bubble-text").textContent()).trim(), OLD_REPLY);
    assert.equal((await first.locator(".side.new .bubble-text").textContent()).trim(), NEW_REPLY);
    assert.match(await first.locator(".side.new h4").textContent(), /provider.*differs/);
    const attempt = (await first.locator("table.attempts tbody tr").first().locator("td").allTextContents()).map((t) => t.trim());
    assert.equal(attempt[1], "large/mock-gpt-large");
    assert.equal(attempt[3], "200");
    const second = page.locator(".replay-turn").nth(1);
    assert.match(await second.locator(".side.new h4").textContent(), /rule.*same/);
    // The mock got exactly the replayed model turn, with the new model.
    const calls = (await mockRequests()).slice(before);
    assert.equal(calls.length, 1, JSON.stringify(calls));
    assert.equal(calls[0].body.model, "mock-gpt-large");
    // The conversation is as it was.
    const now = await (await fetch(`${kefu.base}/api/v1/conversations/${conversation}`, { headers: { authorization: `Bearer ${TENANT_KEY}` } })).json();
    assert.deepEqual(now.messages, stored.messages);
    assert.equal(await page.locator(".timeline > .turn").count(), 2);

    // The README's pictures: the replay's side-by-side, and the first turn's record.
    mkdirSync(SHOTS, { recursive: true });
    await page.locator(".replay-card").screenshot({ path: join(SHOTS, "replay-side-by-side.png") });
    await page.locator(".timeline > .turn").first().locator(".turn-details[open]").waitFor();
    await page.locator(".timeline-title").evaluate((el) => el.scrollIntoView({ block: "start" }));
    // Two frames: the scrolled page painted before the picture is taken.
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    await page.screenshot({ path: join(SHOTS, "replay-console.png") });
  });

  test("on a phone, in the dark theme, the console is one column that fits the screen", async () => {
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, locale: "en-US", colorScheme: "dark", isMobile: true });
    const p = await phone.newPage();
    const problems = [];
    p.on("pageerror", (e) => problems.push(e));
    // Signed in from this tab's storage, as after the agent console.
    const token = await page.evaluate(() => sessionStorage.getItem("kefu.replay.credential"));
    await p.addInitScript((t) => sessionStorage.setItem("kefu.agent.token", t), token);
    await p.goto(`${kefu.base}/replay/#id=${conversation}`);
    await p.locator(".timeline > .turn").nth(1).waitFor();
    await p.locator(".timeline > .turn").first().locator(".turn-details > summary").click();
    const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than the phone`);
    // The top bar's links and Sign out are all on the screen.
    const right = await p.evaluate(() => Math.max(...[...document.querySelectorAll(".topbar a, .topbar button")].map((e) => e.getBoundingClientRect().right)));
    assert.ok(right <= 390, `the top bar reaches ${right}px`);
    // The record's sections stay inside their turn (tables scroll inside their section).
    const spill = await p.evaluate(() =>
      Math.max(...[...document.querySelectorAll(".turn")].flatMap((t) => {
        const edge = t.getBoundingClientRect().right;
        return [...t.querySelectorAll(".record-section")].map((s) => s.getBoundingClientRect().right - edge);
      })));
    assert.ok(spill <= 0, `a record section spills ${spill}px out of its turn`);
    const bg = await p.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.equal(bg, "rgb(12, 17, 29)");
    mkdirSync(SHOTS, { recursive: true });
    await p.screenshot({ path: join(SHOTS, "replay-phone-dark.png") });
    await phone.close();
    assert.deepEqual(problems, []);
  });

  test("export downloads the conversation and its records as JSON", async () => {
    const [download] = await Promise.all([page.waitForEvent("download"), page.locator("#export").click()]);
    assert.equal(download.suggestedFilename(), `kefu-conversation-${conversation}.json`);
    const doc = JSON.parse(readFileSync(await download.path(), "utf8"));
    assert.equal(doc.format, "kefu.conversation-export/1");
    assert.equal(doc.conversation.id, conversation);
    assert.equal(doc.turns.length, 2);
    assert.equal(doc.turns[0].attempts.length, 2);
    assert.deepEqual(errors, []);
  });
});
