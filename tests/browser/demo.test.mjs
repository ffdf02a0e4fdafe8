// End-to-end test of the demo chat page: headless Chromium (Debian's `chromium`, driven by
// playwright-core; no browser download) opens the page twice, as alice and as bob, against a
// running `connect` (scripts/browser-test.sh starts it and passes its URL).
//
//   DEMO_URL=http://127.0.0.1:8080 node demo.test.mjs
//
// Env: DEMO_URL (required), CHROMIUM (default /usr/bin/chromium), DEMO_SCREENSHOT (a PNG path
// to write alice's page to). Prints one line per check and ends with
// `browser: N passed, M failed`; exits non-zero when a check failed.

import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const base = (process.env.DEMO_URL || "").replace(/\/$/, "");
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const screenshot = process.env.DEMO_SCREENSHOT || "";
const WAIT = 10_000;

let passed = 0;
let failed = 0;
let skipRest = false;

// Runs one check; after a failure the later checks (which build on it) are counted as failed
// without running, so the summary stays honest and the run ends quickly.
async function check(name, fn) {
  if (skipRest) {
    failed++;
    console.log(`FAIL ${name}: skipped after an earlier failure`);
    return;
  }
  const t0 = Date.now();
  try {
    await fn();
    passed++;
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    skipRest = true;
    console.log(`FAIL ${name}: ${String(e && e.message ? e.message : e).split("\n")[0]}`);
  }
}

function assert(cond, what) {
  if (!cond) throw new Error(what);
}

// Waits until `fn` (run in the page) returns a truthy value; returns it.
async function until(page, what, fn, arg) {
  try {
    const h = await page.waitForFunction(fn, arg, { timeout: WAIT, polling: 50 });
    return await h.jsonValue();
  } catch {
    throw new Error(`timed out waiting for ${what}`);
  }
}

const status = (page) => page.locator("#status").textContent();

async function login(page, name) {
  await page.goto(base + "/");
  await page.fill("#name", name);
  await page.click("#connect");
  await until(page, `${name} connected`, (n) => {
    const s = document.getElementById("status");
    return s.classList.contains("connected") && s.textContent.includes(`connected as ${n}`);
  }, name);
}

async function sendTo(page, peer, text) {
  await page.click(`.contact[data-user="${peer}"]`);
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

// Waits for the ack of the last message sent to `peer` and returns {status, rtt, text}.
async function lastAck(page, peer, expected) {
  return until(page, `ack '${expected}' to ${peer}`, ([p, want]) => {
    const acks = document.querySelectorAll(`.conv[data-peer="${p}"] .msg.out .ack`);
    const a = acks[acks.length - 1];
    if (!a || a.dataset.status !== want) return null;
    return { status: a.dataset.status, rtt: a.dataset.rtt, text: a.textContent };
  }, [peer, expected]);
}

async function received(page, from, text) {
  await until(page, `'${text}' from ${from}`, ([f, t]) =>
    [...document.querySelectorAll(`.conv[data-peer="${f}"] .msg.in .text`)]
      .some((e) => e.textContent === t), [from, text]);
}

async function main() {
  assert(base, "DEMO_URL is not set");
  // Playwright starts Chromium with a fresh temporary --user-data-dir of its own; each user
  // gets an isolated context (no shared storage), like two separate browsers.
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const viewport = { width: 1000, height: 620 };
  const alice = await (await browser.newContext({ viewport })).newPage();
  const bob = await (await browser.newContext({ viewport })).newPage();
  const jsErrors = [];
  for (const p of [alice, bob]) p.on("pageerror", (e) => jsErrors.push(e.message));

  try {
    await check("GET / serves the demo page", async () => {
      const r = await alice.goto(base + "/");
      assert(r && r.status() === 200, `status ${r && r.status()}`);
      assert((await alice.title()).includes("Connect demo"), "title");
      const d = await alice.request.get(base + "/demo");
      assert(d.status() === 200, `/demo status ${d.status()}`);
    });

    await check("dev endpoints: token, online, 400 on bad input", async () => {
      const ok = await alice.request.get(base + "/dev/token?user=zed");
      const j = await ok.json();
      assert(ok.status() === 200 && j.user === "zed" && j.token.split(".").length === 3, "token");
      const bad = await alice.request.get(base + "/dev/token?user=" + encodeURIComponent("no spaces"));
      assert(bad.status() === 400, `bad user: ${bad.status()}`);
      const many = Array.from({ length: 51 }, (_, i) => "u" + i).join(",");
      const tooMany = await alice.request.get(base + "/dev/online?users=" + many);
      assert(tooMany.status() === 400, `51 users: ${tooMany.status()}`);
      const none = await (await alice.request.get(base + "/dev/online?users=zed")).json();
      assert(JSON.stringify(none) === '{"online":[]}', JSON.stringify(none));
    });

    await check("alice and bob log in (token, WebSocket, welcome)", async () => {
      await login(alice, "alice");
      await login(bob, "bob");
      assert(/session [0-9a-f]{16}/.test(await status(alice)), await status(alice));
    });

    await check("alice adds bob and sees him online", async () => {
      await alice.fill("#add-user", "bob");
      await alice.click("#add");
      await alice.locator('.contact[data-user="bob"] .dot.online').waitFor({ timeout: WAIT });
    });

    await check("alice -> bob: bob shows it, alice gets 'delivered' with an RTT", async () => {
      await sendTo(alice, "bob", "hello bob");
      await received(bob, "alice", "hello bob");
      const ack = await lastAck(alice, "bob", "delivered");
      assert(/^\d+$/.test(ack.rtt) && +ack.rtt < WAIT, `rtt ${ack.rtt}`);
      assert(/^delivered · \d+ ms$/.test(ack.text), `shown: ${ack.text}`);
      const unread = await bob.locator('.contact[data-user="alice"] .unread').textContent();
      assert(unread === "1", `bob's unread badge: ${unread}`);
    });

    await check("bob -> alice: alice shows it, bob gets 'delivered'", async () => {
      await sendTo(bob, "alice", "hi alice, bob here");
      await received(alice, "bob", "hi alice, bob here");
      const ack = await lastAck(bob, "alice", "delivered");
      assert(/^delivered · \d+ ms$/.test(ack.text), `shown: ${ack.text}`);
      await bob.locator('.contact[data-user="alice"] .dot.online').waitFor({ timeout: WAIT });
    });

    await check("a user who is not online: ack 'offline', grey dot", async () => {
      await alice.fill("#add-user", "carol");
      await alice.click("#add");
      await sendTo(alice, "carol", "are you there?");
      const ack = await lastAck(alice, "carol", "offline");
      assert(/^offline · \d+ ms$/.test(ack.text), `shown: ${ack.text}`);
      await alice.waitForTimeout(2500); // one presence poll
      const dot = await alice.locator('.contact[data-user="carol"] .dot').getAttribute("class");
      assert(dot === "dot", `carol's dot: ${dot}`);
    });

    await check("a dropped connection reconnects (backoff) and chat goes on", async () => {
      const before = await status(alice);
      await alice.evaluate(() => window.demo.dropConnection());
      await until(alice, "a new session", (old) => {
        const s = document.getElementById("status");
        return s.classList.contains("connected") && s.textContent !== old;
      }, before);
      assert(await alice.locator("#errors li", { hasText: "code 4000" }).count() === 1, "close shown");
      await sendTo(alice, "bob", "back again");
      await received(bob, "alice", "back again");
      await lastAck(alice, "bob", "delivered");
    });

    await check("a draining gateway's close 1012 'reconnect_after_ms' is obeyed", async () => {
      // Playwright sits between the page and the gateway and closes the page's socket the
      // way a draining gateway does.
      const erin = await (await browser.newContext({ viewport })).newPage();
      erin.on("pageerror", (e) => jsErrors.push(e.message));
      const routes = [];
      await erin.routeWebSocket(/\/ws\?/, (ws) => {
        routes.push({ page: ws, server: ws.connectToServer() });
      });
      await login(erin, "erin");
      const before = await status(erin);
      const t0 = Date.now();
      await routes[0].page.close({ code: 1012, reason: "reconnect_after_ms=800" });
      routes[0].server.close();
      await until(erin, "the hint in the status", () =>
        document.getElementById("status").textContent.includes("reconnecting in 0.8 s as it asked"));
      await until(erin, "a new session", (old) => {
        const s = document.getElementById("status");
        return s.classList.contains("connected") && s.textContent !== old;
      }, before);
      const waited = Date.now() - t0;
      assert(waited >= 750, `reconnected after ${waited} ms, before the hint`);
      assert(routes.length === 2, `${routes.length} connections`);
      await erin.context().close();
    });

    if (screenshot) {
      await check(`screenshot written to ${screenshot}`, async () => {
        await alice.click('.contact[data-user="bob"]');
        await alice.fill("#text", "typing a reply...");
        await alice.screenshot({ path: screenshot });
      });
    }

    await check("docs/clients.md's JavaScript client chats with alice", async () => {
      const md = readFileSync(new URL("../../docs/clients.md", import.meta.url), "utf8");
      const snippet = md.match(/```js\n(function connectChat[\s\S]*?)```/);
      assert(snippet, "no connectChat block in docs/clients.md");
      const docs = await (await browser.newContext()).newPage();
      docs.on("pageerror", (e) => jsErrors.push(e.message));
      const routes = [];
      await docs.routeWebSocket(/\/ws\?/, (ws) => {
        routes.push({ page: ws, server: ws.connectToServer() });
      });
      await docs.goto(base + "/demo"); // the demo's origin: /dev/token is same-origin
      await docs.addScriptTag({ content: snippet[1] + "\nwindow.connectChat = connectChat;" });
      await docs.evaluate(() => {
        window.got = [];
        window.chat = window.connectChat({
          url: `ws://${location.host}/ws`,
          user: "docs-js",
          getToken: async (u) =>
            (await (await fetch(`/dev/token?user=${encodeURIComponent(u)}`)).json()).token,
          onMessage: (m) => window.got.push(m),
          onStatus: (s) => {
            window.chatStatus = s;
            if (s === "connected") window.welcomes = (window.welcomes || 0) + 1;
          },
        });
      });
      await until(docs, "the snippet's welcome", () => window.chatStatus === "connected");
      const ack = await docs.evaluate(() => window.chat.send("alice", "hello from the docs"));
      assert(ack.status === "delivered" && ack.rtt >= 0, JSON.stringify(ack));
      await received(alice, "docs-js", "hello from the docs");
      const offline = await docs.evaluate(() => window.chat.send("nobody-here", "?"));
      assert(offline.status === "offline", JSON.stringify(offline));
      await sendTo(alice, "docs-js", "hello docs");
      await until(docs, "alice's reply", () =>
        window.got.some((m) => m.from === "alice" && m.body.text === "hello docs"));
      // A draining gateway's close: the snippet waits for the hint, then reconnects.
      const t0 = Date.now();
      await routes[0].page.close({ code: 1012, reason: "reconnect_after_ms=600" });
      routes[0].server.close();
      await until(docs, "the snippet's reconnect", () =>
        window.chatStatus === "connected" && window.welcomes === 2);
      assert(Date.now() - t0 >= 550, `reconnected after ${Date.now() - t0} ms`);
      const again = await docs.evaluate(() => window.chat.send("alice", "docs again"));
      assert(again.status === "delivered", JSON.stringify(again));
      await received(alice, "docs-js", "docs again");
      await docs.evaluate(() => window.chat.close());
    });

    await check("no JavaScript errors", async () => {
      assert(jsErrors.length === 0, jsErrors.join("; "));
    });
  } finally {
    await browser.close();
  }
}

const watchdog = setTimeout(() => {
  console.log("FAIL the whole run took over 120 s");
  console.log(`browser: ${passed} passed, ${failed + 1} failed`);
  process.exit(1);
}, 120_000);

try {
  await main();
} catch (e) {
  failed++;
  console.log(`FAIL browser run: ${e && e.message ? e.message : e}`);
}
clearTimeout(watchdog);
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
