// Two browser pages on the Bocadillo chat example (examples/ws_bocadillo_chat.py):
// both join the room, each sends a message through the page's form, and each
// page must show the other's message; a third page opened afterwards must
// show both from the history.
//
//   node tests/browser/chat_two_pages.mjs http://127.0.0.1:PORT/
//
// Drives the system chromium (CHROMIUM_PATH, else /usr/bin/chromium) with
// playwright-core; no browser is downloaded. Prints one JSON line with what
// each page shows and exits 0, or prints the error and exits 1.

import { chromium } from "playwright-core";

const STEP_TIMEOUT = 15_000;
const url = process.argv[2];
if (!url) {
  console.error("usage: node chat_two_pages.mjs URL");
  process.exit(2);
}
// Never hang the test run: give up as a failure well before pytest's timeout.
setTimeout(() => {
  console.error("chat_two_pages: overall deadline exceeded");
  process.exit(1);
}, 60_000).unref();

const executablePath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const pageErrors = [];

async function openChat(browser, name) {
  const page = await browser.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT);
  page.on("pageerror", (error) => pageErrors.push(`${name}: ${error.message}`));
  // The page logs "Connected" from ws.onopen: wait for it so nothing is sent early.
  const connected = page.waitForEvent("console", {
    predicate: (message) => message.text().startsWith("Connected"),
    timeout: STEP_TIMEOUT,
  });
  const response = await page.goto(url);
  if (!response || response.status() !== 200) {
    throw new Error(`${name}: GET ${url} answered ${response && response.status()}`);
  }
  await connected;
  return page;
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
  const alice = await openChat(browser, "alice");
  const bob = await openChat(browser, "bob");

  await say(alice, "alice", "hello from alice");
  await shown(bob, "alice: hello from alice");
  await shown(alice, "alice: hello from alice"); // the sender gets it back too
  if ((await alice.inputValue("#text")) !== "") {
    throw new Error("the text input was not reset after sending");
  }

  // A blank message is not sent: bob's first real message is the next one shown.
  await bob.fill("#user", "bob");
  await bob.click("#submit");
  await say(bob, "bob", "hi alice");
  await shown(alice, "bob: hi alice");
  await shown(bob, "bob: hi alice");

  const carol = await openChat(browser, "carol");
  await shown(carol, "bob: hi alice");

  const result = {
    alice: await messagesOf(alice),
    bob: await messagesOf(bob),
    carol: await messagesOf(carol),
    pageErrors,
  };
  console.log(JSON.stringify(result));
} catch (error) {
  failed = true;
  console.error(`chat_two_pages: ${error.stack || error}`);
  if (pageErrors.length) console.error(`page errors: ${pageErrors.join("; ")}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
