#!/usr/bin/env node
// Follow changegate's change stream over Server-Sent Events in plain Node.js 20
// (global fetch, no npm packages). Copy it, then put your application's work in
// onChange() and onReset().
//
//   node changes.mjs [GATEWAY] [NAME=VALUE ...]
//   node changes.mjs http://127.0.0.1:8080 ns=shop.orders op=insert,update
//   node changes.mjs lastEventId=826B0486...      # resume after a position you kept
//
// GATEWAY: changegate's address (default: $GATEWAY, else http://127.0.0.1:8080).
// NAME=VALUE: /events query parameters (ns, op, id, filter, fields); lastEventId=POS
// starts right after POS instead of from now.
// stdout: one JSON line per change, {"id": POSITION, "event": CHANGE}, and a line
// {"reset": {"reason": ..., "lastEventId": ...}} when continuity was lost.
// stderr: what the client is doing (connected, errors, reconnecting).

const args = process.argv.slice(2);
let gateway = process.env.GATEWAY || "http://127.0.0.1:8080";
if (/^https?:\/\//.test(args[0] ?? "")) gateway = args.shift();
const url = new URL("events", gateway.replace(/\/*$/, "/")); // keeps a path: .../changegate/events
let lastId = null; // the position of the last message handled: where a reconnect resumes
for (const arg of args) {
  const eq = arg.indexOf("=");
  if (eq < 1) {
    console.error("usage: node changes.mjs [GATEWAY] [NAME=VALUE ...]");
    process.exit(2);
  }
  if (arg.slice(0, eq) === "lastEventId") lastId = arg.slice(eq + 1);
  else url.searchParams.append(arg.slice(0, eq), arg.slice(eq + 1));
}

function onChange(id, change) {
  // Your work goes here. To resume after this process restarts, store `id` together
  // with what you made of the change (same transaction), and start from it next time.
  console.log(JSON.stringify({ id, event: change }));
}

function onReset(info) {
  // changegate cannot prove that nothing was missed (history_lost: the position left
  // MongoDB's oplog, or comes from another deployment). Changes continue from
  // info.lastEventId, but whatever you built from earlier changes may be stale:
  // reload it (from MongoDB or your API) now, then keep applying changes.
  console.log(JSON.stringify({ reset: info }));
}

let retryMs = 3000; // the reconnection delay; the server sets it with `retry:`
let failures = 0; // failed attempts in a row: each one after the first doubles the delay
const MAX_DELAY_MS = 60000;
// changegate sends a heartbeat every 15 s (--heartbeat) on an idle stream, so a
// minute without a byte means the connection is dead (a proxy or NAT dropped it).
const IDLE_MS = 60000;

for (;;) {
  let delay;
  try {
    console.error(`changes: ${await follow()}`);
  } catch (err) {
    failures++;
    delay = err.retryAfterMs;
    const cause = err.cause ? ` (${err.cause.code || err.cause.message})` : ""; // fetch's reason
    console.error(`changes: ${err.message}${cause}`);
  }
  delay ??= Math.min(retryMs * 2 ** Math.max(0, failures - 1), MAX_DELAY_MS);
  delay = delay / 2 + (Math.random() * delay) / 2; // spread out: not all clients at once
  const from = lastId ? `after ${lastId}` : "from now";
  console.error(`changes: reconnecting in ${(delay / 1000).toFixed(1)} s ${from}`);
  await new Promise((resolve) => setTimeout(resolve, delay));
}

// One connection: returns what happened when the server ends the stream; throws on errors.
async function follow() {
  const idle = new AbortController();
  const timer = setTimeout(() => idle.abort(new Error(`no data for ${IDLE_MS / 1000} s`)), IDLE_MS);
  try {
    const headers = { Accept: "text/event-stream" };
    if (lastId) headers["Last-Event-ID"] = lastId; // resume exactly after it
    const res = await fetch(url, { headers, signal: idle.signal });
    if (res.status !== 200) return await refused(res);
    if (!(res.headers.get("content-type") || "").startsWith("text/event-stream"))
      throw new Error(`200 but not an event stream (${res.headers.get("content-type")})`);
    failures = 0;
    console.error(`changes: connected to ${url} ${lastId ? `after ${lastId}` : "from now"}`);

    // The event-stream format (WHATWG HTML, "Server-sent events"): lines end with LF,
    // CR or CRLF; "field: value" lines (one space after the colon is dropped); a line
    // starting with ":" is a comment (changegate's ": heartbeat"); a blank line ends
    // a message. data lines are joined with "\n"; an incomplete message at the end
    // of the stream is dropped.
    const decoder = new TextDecoder(); // UTF-8; drops a leading BOM
    const NEWLINE = /\r\n|\r|\n/g;
    let buf = "";
    let afterCR = false; // the last chunk ended with CR: an LF starting this one ends nothing
    let data = "";
    let type = "";
    let id = lastId;
    for await (const chunk of res.body) {
      timer.refresh(); // bytes arrived: the connection is alive
      buf += decoder.decode(chunk, { stream: true });
      if (afterCR && buf.startsWith("\n")) buf = buf.slice(1);
      afterCR = buf.endsWith("\r");
      let start = 0;
      let m;
      NEWLINE.lastIndex = 0;
      while ((m = NEWLINE.exec(buf))) {
        const line = buf.slice(start, m.index);
        start = NEWLINE.lastIndex;
        if (line === "") {
          // End of a message. Every change has an id; a message with an id and no
          // data (after a heartbeat) only moves the position forward.
          if (data !== "") {
            const payload = JSON.parse(data.slice(0, -1));
            if (type === "" || type === "message") onChange(id, payload);
            else if (type === "reset") onReset(payload);
            else console.error(`changes: ignored an "${type}" message`);
          }
          lastId = id; // handled: resume after it
          data = type = "";
          continue;
        }
        const colon = line.indexOf(":");
        if (colon === 0) continue; // a comment
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") data += value + "\n";
        else if (field === "event") type = value;
        else if (field === "id" && !value.includes("\0")) id = value;
        else if (field === "retry" && /^[0-9]+$/.test(value)) retryMs = Number(value);
      }
      buf = buf.slice(start);
    }
    return "the stream ended";
  } finally {
    clearTimeout(timer);
  }
}

// A status other than 200: retry later, start over, or give up.
async function refused(res) {
  const text = await res.text().catch(() => "");
  let body = {};
  try {
    body = JSON.parse(text) || {}; // changegate's errors: {"error": CODE, "message": ...}
  } catch {}
  if (res.status === 400 && body.error === "invalid_position" && lastId) {
    // The position we hold is not one changegate can read: start from now, and
    // treat it as a reset (what was built up to it cannot be continued).
    lastId = null;
    onReset({ reason: "invalid_position", lastEventId: null });
    return "the position was refused (invalid_position): starting from now";
  }
  const what = `${res.status} ${body.error || ""}: ${body.message || text.slice(0, 200)}`;
  if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) {
    // A bad parameter or filter, a missing or expired token (with --auth jwt: get a
    // fresh one and reconnect), a wrong URL: retrying the same request cannot help.
    console.error(`changes: refused: ${what}`);
    process.exit(1);
  }
  // 503 too_many_subscribers, a proxy's 502 while changegate restarts, ...: later.
  const err = new Error(`answered ${what}`);
  const after = Number(res.headers.get("retry-after"));
  if (after > 0) err.retryAfterMs = after * 1000;
  throw err;
}
