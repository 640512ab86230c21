// Two browser pages on different workers of a multi-worker master, on the
// channels chat example (examples/channels_bocadillo_chat.py): each page
// shows the pid of the worker its WebSocket landed on; bob's page is
// reopened until that pid differs from alice's (the kernel, not the client,
// picks the worker). Then each sends a message through the form and must see
// the other's; a third page opened afterwards must show both from the
// channel history.
//
//   node tests/browser/chat_two_workers.mjs http://127.0.0.1:PORT/
//
// Drives the system chromium (CHROMIUM_PATH, else /usr/bin/chromium) with
// playwright-core. Prints one JSON line (each page's pid and messages, page
// errors, how many pages were opened for bob) and exits 0, or prints the
// error and exits 1.

import { chromium } from "playwright-core";

const STEP_TIMEOUT = 15_000;
const MAX_ATTEMPTS = 40; // 2 workers: all 40 on alice's worker has chance 2**-40
const url = process.argv[2];
if (!url) {
  console.error("usage: node chat_two_workers.mjs URL");
  process.exit(2);
}
setTimeout(() => {
  console.error("chat_two_workers: overall deadline exceeded");
  process.exit(1);
}, 90_000).unref();

const executablePath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const pageErrors = [];

// Open the chat page; resolve with [page, pid] once the welcome arrived
// (the WebSocket is open and the server said which worker it is).
async function openChat(browser, name) {
  const page = await browser.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT);
  page.on("pageerror", (error) => pageErrors.push(`${name}: ${error.message}`));
  const welcomed = page.waitForEvent("console", {
    predicate: (message) => message.text().startsWith("Welcome from worker "),
    timeout: STEP_TIMEOUT,
  });
  const response = await page.goto(url);
  if (!response || response.status() !== 200) {
    throw new Error(`${name}: GET ${url} answered ${response && response.status()}`);
  }
  const pid = Number((await welcomed).text().slice("Welcome from worker ".length));
  const shownPid = Number(await page.textContent("#pid"));
  if (shownPid !== pid) throw new Error(`${name}: the page shows pid ${shownPid}, not ${pid}`);
  return [page, pid];
}

async function say(page, user, text) {
  await page.fill("#user", user);
  await page.fill("#text", text);
  await page.click("#submit");
}

async function shown(page, text) {
  await page.locator("#messages li", { hasText: text }).waitFor({ state: "visible" });
}

const messagesOf = (page) => page.locator("#messages li").allTextContents();

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--disable-dev-shm-usage", "--disable-gpu"],
});
let failed = false;
try {
  const [alice, alicePid] = await openChat(browser, "alice");
  let bob = null;
  let bobPid = alicePid;
  let attempts = 0;
  while (bobPid === alicePid) {
    if (++attempts > MAX_ATTEMPTS) {
      throw new Error(`${MAX_ATTEMPTS} pages all landed on alice's worker ${alicePid}`);
    }
    if (bob) await bob.close();
    [bob, bobPid] = await openChat(browser, "bob");
  }

  await say(alice, "alice", "hello from alice");
  await shown(bob, "alice: hello from alice");
  await shown(alice, "alice: hello from alice");
  await say(bob, "bob", "hi alice");
  await shown(alice, "bob: hi alice");
  await shown(bob, "bob: hi alice");

  const [carol, carolPid] = await openChat(browser, "carol");
  await shown(carol, "bob: hi alice");

  console.log(JSON.stringify({
    alice: { pid: alicePid, messages: await messagesOf(alice) },
    bob: { pid: bobPid, messages: await messagesOf(bob) },
    carol: { pid: carolPid, messages: await messagesOf(carol) },
    attempts,
    pageErrors,
  }));
} catch (error) {
  failed = true;
  console.error(`chat_two_workers: ${error.stack || error}`);
  if (pageErrors.length) console.error(`page errors: ${pageErrors.join("; ")}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
