// Drives a headless Chromium for tests/integration/test_browser.py.
//
//   node browser.mjs WS_ENDPOINT
//
// The Python scenario starts Chromium itself (so the harness owns and stops its
// process group) and passes its DevTools endpoint. This script connects with
// puppeteer-core and answers one JSON command per stdin line with one JSON line
// on stdout, {"n": <the command's n>, "ok": true, ...} or {"n", "ok": false, "error"}:
//
//   {"n":1, "cmd":"open", "page":"a", "url":"http://..."}   a new tab, loaded
//   {"n":2, "cmd":"eval", "page":"a", "expr":"window.changegate.opens"}   -> value
//   {"n":3, "cmd":"net", "page":"a"}   -> log: the tab's requests, responses, failures
//                                         and console messages, in order; wire: each
//                                         request as sent and answered on the network
//   {"n":4, "cmd":"screenshot", "page":"a", "path":"/abs/file.png"}
//   {"n":5, "cmd":"quit"}               disconnects (Chromium is the scenario's to stop)
//
// Every command is bounded (15 s); stdin closing ends the script too.
import { createInterface } from 'node:readline';
import puppeteer from 'puppeteer-core';

const TIMEOUT_MS = 15000;
const endpoint = process.argv[2];
if (!endpoint) {
  console.error('usage: node browser.mjs WS_ENDPOINT');
  process.exit(2);
}

const browser = await puppeteer.connect({
  browserWSEndpoint: endpoint,
  protocolTimeout: TIMEOUT_MS,
  defaultViewport: { width: 1100, height: 700 },
});
const pages = new Map();   // name -> { page, log: [] }

function reply(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function bounded(promise, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

async function open(name, url) {
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT_MS);
  const log = [];
  page.on('request', (r) => log.push({ kind: 'request', url: r.url(), type: r.resourceType(),
                                       headers: r.headers() }));
  page.on('response', (r) => log.push({ kind: 'response', url: r.url(), status: r.status(),
                                        headers: r.headers() }));
  page.on('requestfailed', (r) => log.push({ kind: 'failed', url: r.url(),
                                             error: r.failure() ? r.failure().errorText : null }));
  page.on('console', (m) => log.push({ kind: 'console', type: m.type(), text: m.text() }));
  page.on('pageerror', (e) => log.push({ kind: 'pageerror', text: String(e) }));
  // Each request as the network saw it, from the DevTools protocol: the headers as sent
  // (EventSource adds Last-Event-ID below the page's view of the request), the status as
  // answered even when CORS then hides the answer from the page, and why it failed.
  const cdp = await page.createCDPSession();
  const wire = new Map();    // requestId -> {url, sent, status, error, cors}, in order
  const req = (id) => {
    if (!wire.has(id)) wire.set(id, { url: null, sent: null, status: null, error: null, cors: null });
    return wire.get(id);
  };
  cdp.on('Network.requestWillBeSent', (e) => { req(e.requestId).url = e.request.url; });
  cdp.on('Network.requestWillBeSentExtraInfo', (e) => { req(e.requestId).sent = e.headers; });
  cdp.on('Network.responseReceivedExtraInfo', (e) => { req(e.requestId).status = e.statusCode; });
  cdp.on('Network.responseReceived', (e) => { req(e.requestId).status ??= e.response.status; });
  cdp.on('Network.loadingFailed', (e) => {
    const r = req(e.requestId);
    r.error = e.errorText;
    r.cors = e.corsErrorStatus ? e.corsErrorStatus.corsError : null;
  });
  await cdp.send('Network.enable');
  pages.set(name, { page, log, wire });
  await page.goto(url, { waitUntil: 'load' });
  return {};
}

function pageOf(name) {
  const p = pages.get(name);
  if (!p) throw new Error(`no page named ${name}`);
  return p;
}

async function handle(cmd) {
  switch (cmd.cmd) {
    case 'open':
      return open(cmd.page, cmd.url);
    case 'eval':
      // The expression is evaluated in the page; its value must be JSON-serializable.
      return { value: await pageOf(cmd.page).page.evaluate(`(${cmd.expr})`) };
    case 'net': {
      const { log, wire } = pageOf(cmd.page);
      return { log, wire: [...wire.values()] };
    }
    case 'screenshot':
      await pageOf(cmd.page).page.screenshot({ path: cmd.path });
      return {};
    case 'quit':
      return {};
    default:
      throw new Error(`unknown command ${cmd.cmd}`);
  }
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    reply({ n: null, ok: false, error: `not JSON: ${line}` });
    continue;
  }
  try {
    const out = await bounded(handle(cmd), `${cmd.cmd} ${cmd.page || ''}`);
    reply({ n: cmd.n, ok: true, ...out });
  } catch (e) {
    reply({ n: cmd.n, ok: false, error: String(e && e.stack || e) });
  }
  if (cmd.cmd === 'quit') break;
}
await browser.disconnect().catch(() => {});
process.exit(0);
