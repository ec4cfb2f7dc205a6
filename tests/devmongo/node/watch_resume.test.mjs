// Checks that the Node.js `mongodb` driver accepts devmongo as the primary of replica set
// rs0, reads change events from collection.watch(), and resumes with resumeAfter getting
// exactly the events it had not read: none lost, none repeated.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { MongoClient } from 'mongodb';

const here = path.dirname(fileURLToPath(import.meta.url));
const devmongoPath = path.join(here, '..', 'devmongo');
let proc;
let port;
let client;

// Start devmongo on a free port and wait for its ready line (bounded).
function startDevmongo() {
  return new Promise((resolve, reject) => {
    proc = spawn(devmongoPath, ['--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const timer = setTimeout(() => reject(new Error('devmongo did not start')), 15000);
    proc.on('error', reject);
    proc.on('exit', (code) => reject(new Error(`devmongo exited early (${code})`)));
    createInterface({ input: proc.stdout }).on('line', (line) => {
      const m = /^devmongo ready on .*:(\d+)$/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
  });
}

// Next event from a change stream, or null after `ms` (tryNext does one bounded getMore).
async function nextChange(stream, ms = 5000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const ev = await stream.tryNext();
    if (ev) return ev;
  }
  return null;
}

before(async () => {
  port = await startDevmongo();
  client = new MongoClient(`mongodb://127.0.0.1:${port}/?replicaSet=rs0`, {
    serverSelectionTimeoutMS: 5000,
  });
  await client.connect();
});

after(async () => {
  try {
    if (client) await client.close();
  } finally {
    if (proc && proc.exitCode === null) {
      proc.removeAllListeners('exit');
      proc.kill('SIGTERM');
      await new Promise((r) => {
        const t = setTimeout(() => { proc.kill('SIGKILL'); r(); }, 5000);
        proc.on('exit', () => { clearTimeout(t); r(); });
      });
    }
  }
});

test('the driver sees a replica-set primary', async () => {
  const hello = await client.db('admin').command({ hello: 1 });
  assert.equal(hello.isWritablePrimary, true);
  assert.equal(hello.setName, 'rs0');
  assert.deepEqual(hello.hosts, [`127.0.0.1:${port}`]);
});

test('watch, close, resumeAfter gets exactly the remaining events', async () => {
  const coll = client.db('nodetest').collection('items');
  const stream = coll.watch([], { maxAwaitTimeMS: 200 });
  await stream.tryNext(); // make sure the aggregate ran before we write
  await coll.insertMany([1, 2, 3, 4, 5].map((i) => ({ _id: i, v: i * 10 })));
  await coll.updateOne({ _id: 1 }, { $set: { v: 11 } });

  const first = [];
  for (let i = 0; i < 2; i++) {
    const ev = await nextChange(stream);
    assert.ok(ev, `event ${i} arrived`);
    first.push(ev);
  }
  assert.deepEqual(first.map((e) => e.operationType), ['insert', 'insert']);
  assert.deepEqual(first.map((e) => e.documentKey._id), [1, 2]);
  assert.deepEqual(first[0].fullDocument, { _id: 1, v: 10 });
  const token = first[1]._id;
  assert.match(token._data, /^[0-9A-F]+$/);
  assert.deepEqual(stream.resumeToken, token);
  await stream.close();

  const resumed = coll.watch([], { resumeAfter: token, maxAwaitTimeMS: 200 });
  const rest = [];
  for (let i = 0; i < 4; i++) {
    const ev = await nextChange(resumed);
    assert.ok(ev, `resumed event ${i} arrived`);
    rest.push(ev);
  }
  assert.deepEqual(rest.map((e) => [e.operationType, e.documentKey._id]),
    [['insert', 3], ['insert', 4], ['insert', 5], ['update', 1]]);
  assert.deepEqual(rest[3].updateDescription.updatedFields, { v: 11 });
  assert.equal(await resumed.tryNext(), null, 'nothing more after the remaining events');
  await resumed.close();
});

test('the driver resumes by itself after a dropped connection', async () => {
  const coll = client.db('nodetest').collection('resume');
  const stream = coll.watch([], { maxAwaitTimeMS: 200 });
  await stream.tryNext(); // the driver runs the aggregate lazily
  await coll.insertOne({ _id: 'a' });
  assert.equal((await nextChange(stream)).documentKey._id, 'a');
  await client.db('admin').command({
    configureFailPoint: 'failCommand',
    mode: { times: 1 },
    data: { failCommands: ['getMore'], closeConnection: true },
  });
  await coll.insertOne({ _id: 'b' });
  await coll.insertOne({ _id: 'c' });
  const got = [(await nextChange(stream))?.documentKey._id, (await nextChange(stream))?.documentKey._id];
  assert.deepEqual(got, ['b', 'c']);
  await stream.close();
});
