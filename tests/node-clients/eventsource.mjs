// A Node.js app's view of changegate, for tests/integration/test_node_eventsource.py:
// the `eventsource` package (a WHATWG EventSource for Node) on one URL, printing what it
// sees as one JSON line each on stdout:
//
//   {"type":"open"}                                  the stream opened (again)
//   {"type":"message","id":"<lastEventId>","data":"<data>"}
//   {"type":"reset","id":"<lastEventId>","data":"<data>"}
//   {"type":"error","readyState":N,"message":"...","code":N}   it will reconnect unless
//                                                               readyState is 2 (CLOSED)
//
//   node eventsource.mjs URL
//
// It never reconnects on its own initiative: the eventsource package does, sending
// Last-Event-ID. It exits when stdin closes (the scenario ends it that way, or stops it).
import { EventSource } from 'eventsource';

const url = process.argv[2];
if (!url) {
  console.error('usage: node eventsource.mjs URL');
  process.exit(2);
}

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const source = new EventSource(url);
source.onopen = () => out({ type: 'open' });
source.onmessage = (e) => out({ type: 'message', id: e.lastEventId, data: e.data });
source.addEventListener('reset', (e) => out({ type: 'reset', id: e.lastEventId, data: e.data }));
source.onerror = (e) => out({ type: 'error', readyState: source.readyState,
                             message: e.message ?? null, code: e.code ?? null });

process.stdin.on('data', () => {});
process.stdin.on('end', () => {
  source.close();
  process.exit(0);
});
