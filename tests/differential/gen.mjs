// gen.mjs: seeded generator of (filter, change event) pairs for the differential test.
//
//   node gen.mjs SEED N > pairs.jsonl
//
// Writes N lines {"filter": F, "doc": D}, both in canonical/relaxed Extended JSON v2, so
// the C matcher (libbson's JSON parser) and the mingo side (ejson.mjs) see the same BSON
// types: int32 as plain JSON integers, int64 as {"$numberLong": "7"}, doubles always as
// {"$numberDouble": "7.0"} (a plain 7.0 would be read as an int32), dates as
// {"$date": {"$numberLong": ms}}, ObjectIds as {"$oid": hex}, regex values as
// {"$regularExpression": {pattern, options}}. Same seed, same output (no Math.random,
// no clock).
//
// Not generated, and why (see README.md): Decimal128 (mingo has no decimal type),
// Timestamp/Binary/MinKey/MaxKey (not in change events' user fields we filter on), the
// regex option "x" (JavaScript's RegExp has no extended mode), keys with dots or "$".

// ---- deterministic PRNG (mulberry32) ----
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function makeGenerator(seed) {
  const rand = rng(seed);
  const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));
  const pick = (xs) => xs[Math.floor(rand() * xs.length)];
  const chance = (p) => rand() < p;
  const some = (n, f) => Array.from({ length: n }, f);
  // weighted choice: [[w, value-or-fn], ...]
  const wpick = (table) => {
    const total = table.reduce((s, [w]) => s + w, 0);
    let r = rand() * total;
    for (const [w, v] of table) {
      if ((r -= w) < 0) return typeof v === "function" ? v() : v;
    }
    const last = table[table.length - 1][1];
    return typeof last === "function" ? last() : last;
  };

  // ---- Extended JSON value constructors ----
  const i32 = (n) => n; // plain JSON integer = int32
  const i64 = (n) => ({ $numberLong: String(n) });
  const dbl = (x) => {
    let s;
    if (Number.isNaN(x)) s = "NaN";
    else if (x === Infinity) s = "Infinity";
    else if (x === -Infinity) s = "-Infinity";
    else s = Number.isInteger(x) ? x.toFixed(1) : String(x);
    return { $numberDouble: s };
  };
  const date = (ms) => ({ $date: { $numberLong: String(ms) } });
  const oid = (hex) => ({ $oid: hex });
  const re = (pattern, options = "") => ({ $regularExpression: { pattern, options } });

  // ---- pools shared by documents and filters, so filters often match ----
  const OWNERS = ["alice", "bob", "carol", "dave", "Eve", "émile", ""];
  const STATUSES = ["new", "paid", "shipped", "cancelled", "PAID"];
  const TAGS = ["red", "green", "blue", "Red", "x-1"];
  const SKUS = ["A1", "A2", "B7", "c9"];
  const DATES = [0, 1700000000000, 1700000000001, 1710000000000, -86400000].map((ms) => ms);
  const OIDS = ["65a000000000000000000001", "65a000000000000000000002", "65b0000000000000000000ff",
    "000000000000000000000000"];
  const DBS = ["app", "shop"];
  const COLLS = ["orders", "users", "events"];
  const OPS = ["insert", "update", "replace", "delete"];

  // a number of a random BSON numeric type (value from a small range so equalities happen)
  const number = () =>
    wpick([
      [4, () => i32(int(-3, 12))],
      [2, () => i64(int(-3, 12))],
      [2, () => dbl(int(-3, 12))],
      [2, () => dbl(pick([0.5, 2.5, 7.5, -1.5, 0.1, 1e-9]))],
      [0.3, () => dbl(pick([NaN, Infinity, -Infinity]))],
      [0.3, () => i64(pick(["9007199254740993", "-9223372036854775808", "4294967296"]))],
    ]);
  const scalar = () =>
    wpick([
      [4, number],
      [2, () => pick(STATUSES.concat(OWNERS))],
      [1, null],
      [1, () => pick([true, false])],
      [1, () => date(pick(DATES))],
      [1, () => oid(pick(OIDS))],
    ]);

  // ---- documents (change events) ----
  const tagsValue = () =>
    wpick([
      [6, () => some(int(0, 4), () => pick(TAGS))],
      [1, []],
      [1, () => [pick(TAGS), null]],
      [1, () => [pick(TAGS), [pick(TAGS), pick(TAGS)]]], // nested array
      [1, () => pick(TAGS)], // a scalar, not an array
      [0.5, () => [number(), pick(TAGS)]],
    ]);
  const item = () => {
    const it = {};
    if (chance(0.9)) it.sku = pick(SKUS);
    if (chance(0.8)) it.n = chance(0.1) ? null : number();
    if (chance(0.4)) it.tags = some(int(0, 3), () => pick(TAGS));
    return it;
  };
  const qtyValue = () =>
    wpick([
      [8, number],
      [1, null],
      [1, () => String(int(0, 9))], // a string: type bracketing
      [1, () => some(int(0, 3), number)], // an array of numbers
    ]);
  const meta = () =>
    wpick([
      [5, () => {
        const m = {};
        if (chance(0.8)) m.a = chance(0.1) ? null : { b: chance(0.15) ? null : scalar() };
        if (chance(0.8)) m.level = number();
        if (chance(0.5)) m.flags = some(int(0, 3), () => pick([true, false, 1, 0]));
        return m;
      }],
      [1, () => some(int(1, 3), () => ({ a: { b: scalar() } }))], // array of documents
      [1, null],
    ]);
  const fullDocument = (id) => {
    const d = { _id: id };
    const put = (k, f, p = 0.85) => {
      if (chance(p)) d[k] = f();
    };
    put("owner", () => (chance(0.1) ? null : pick(OWNERS)));
    put("status", () => pick(STATUSES), 0.9);
    put("qty", qtyValue);
    put("tags", tagsValue, 0.8);
    put("meta", meta, 0.7);
    put("items", () => (chance(0.1) ? [item(), pick(SKUS)] : some(int(0, 3), item)), 0.7);
    put("matrix", () => pick([[[1, 2], [3]], [[i64(3)], []], [dbl(1), [2, dbl(3)]]]), 0.3);
    put("price", () => dbl(pick([0.5, 9.99, 10, 100.25, -1])), 0.6);
    put("created", () => date(pick(DATES)), 0.6);
    put("ref", () => oid(pick(OIDS)), 0.5);
    put("flag", () => pick([true, false, 1, 0, null]), 0.4);
    put("nullable", () => null, 0.4);
    return d;
  };
  const docId = () => wpick([[3, () => oid(pick(OIDS))], [1, () => int(1, 5)], [1, () => pick(SKUS)]]);
  const event = (n) => {
    const op = pick(OPS);
    const id = docId();
    const ev = {
      _id: { _data: "82" + (0x65000000 + n).toString(16).toUpperCase() + "00000001" + "04" },
      operationType: op,
      clusterTime: date(1700000000000 + n), // (a Timestamp on mongod; a date keeps mingo able to read it)
      ns: { db: pick(DBS), coll: pick(COLLS) },
      documentKey: { _id: id },
    };
    if (op === "insert" || op === "replace") ev.fullDocument = fullDocument(id);
    if (op === "update") {
      if (chance(0.7)) ev.fullDocument = chance(0.15) ? null : fullDocument(id);
      const uf = {};
      if (chance(0.6)) uf.status = pick(STATUSES);
      if (chance(0.5)) uf.qty = qtyValue();
      if (chance(0.3)) uf.tags = tagsValue();
      if (chance(0.2)) uf["meta.level"] = number(); // dotted key: never reachable by a path
      ev.updateDescription = {
        updatedFields: uf,
        removedFields: chance(0.3) ? [pick(["owner", "nullable", "meta.a"])] : [],
      };
    }
    return ev;
  };

  // ---- filters ----
  // paths into the event, each with the kind of values it holds
  const PATHS = [
    ["operationType", "op"], ["ns.db", "db"], ["ns.coll", "coll"], ["ns", "nsdoc"],
    ["documentKey._id", "id"], ["fullDocument", "any"],
    ["fullDocument.owner", "owner"], ["fullDocument.status", "status"],
    ["fullDocument.qty", "num"], ["fullDocument.tags", "tags"], ["fullDocument.tags.0", "tag"],
    ["fullDocument.tags.1", "tag"], ["fullDocument.meta", "any"],
    ["fullDocument.meta.a", "adoc"], ["fullDocument.meta.a.b", "any"],
    ["fullDocument.meta.level", "num"], ["fullDocument.meta.flags", "flags"],
    ["fullDocument.meta.0.a.b", "any"],
    ["fullDocument.items", "items"], ["fullDocument.items.sku", "sku"], ["fullDocument.items.n", "num"],
    ["fullDocument.items.0.n", "num"], ["fullDocument.items.tags", "tags"], ["fullDocument.items.1", "item"],
    ["fullDocument.matrix", "matrix"], ["fullDocument.matrix.0", "matrix"], ["fullDocument.matrix.1.0", "num"],
    ["fullDocument.price", "num"], ["fullDocument.created", "date"], ["fullDocument.ref", "oidv"],
    ["fullDocument.flag", "flag"], ["fullDocument.nullable", "any"], ["fullDocument.nothing", "any"],
    ["fullDocument._id", "id"], ["clusterTime", "date"],
    ["updateDescription.updatedFields.status", "status"], ["updateDescription.updatedFields.qty", "num"],
    ["updateDescription.updatedFields.tags", "tags"], ["updateDescription.removedFields", "removed"],
    ["updateDescription.updatedFields.meta.level", "num"],
  ];
  const valueOf = (kind) => {
    if (chance(0.08)) return null;
    if (chance(0.08)) return scalar(); // any type: type bracketing
    switch (kind) {
      case "op": return pick(OPS);
      case "db": return pick(DBS);
      case "coll": return pick(COLLS);
      case "nsdoc": return pick([{ db: pick(DBS), coll: pick(COLLS) }, { coll: pick(COLLS), db: pick(DBS) }, { db: pick(DBS) }]);
      case "id": return docId();
      case "owner": return pick(OWNERS);
      case "status": return pick(STATUSES);
      case "num": return number();
      case "tags": return chance(0.5) ? pick(TAGS) : tagsValue();
      case "tag": return pick(TAGS);
      case "adoc": return chance(0.7) ? { b: scalar() } : scalar();
      case "flags": return pick([true, false, 1, 0]);
      case "items": return chance(0.6) ? item() : [item()];
      case "item": return item();
      case "sku": return pick(SKUS);
      case "matrix": return pick([[1, 2], [3], 1, 3, [i64(3)], []]);
      case "date": return date(pick(DATES));
      case "oidv": return oid(pick(OIDS));
      case "flag": return pick([true, false, 1, 0, null]);
      case "removed": return pick(["owner", "nullable", "meta.a", ["owner"]]);
      default: return scalar();
    }
  };
  // values usable with $gt/$lt: numbers, strings, dates, ObjectIds, null, booleans
  const orderedOf = (kind) => {
    if (chance(0.1)) return scalar();
    switch (kind) {
      case "num": return number();
      case "owner": case "status": case "op": case "db": case "coll": case "sku": case "tag": case "tags":
        return pick(OWNERS.concat(STATUSES, TAGS, SKUS, ["m", "Z"]));
      case "date": return date(pick(DATES) + int(-1, 1));
      case "oidv": case "id": return oid(pick(OIDS));
      default: return scalar();
    }
  };
  const REGEXES = ["^a", "^[A-Z]", "e$", "re", "^x-\\d$", "^$", "a.*e", "^(paid|new)$", "É", "^p.i"];
  const regexOpts = () => pick(["", "", "i", "m", "s", "im", "is"]);
  const TYPE_ALIASES = ["double", "string", "object", "array", "objectId", "bool", "date", "null",
    "regex", "int", "long", "number", "decimal"];
  const TYPE_CODES = [1, 2, 3, 4, 7, 8, 9, 10, 16, 18];
  const typeSpec = () =>
    wpick([
      [3, () => pick(TYPE_ALIASES)],
      [2, () => pick(TYPE_CODES)],
      [1, () => some(int(1, 3), () => (chance(0.5) ? pick(TYPE_ALIASES) : pick(TYPE_CODES)))],
    ]);

  // one operator (name, argument) for a path of this kind; depth limits $not/$elemMatch
  const operator = (kind, depth) =>
    wpick([
      [3, () => ["$eq", valueOf(kind)]],
      [2, () => ["$ne", valueOf(kind)]],
      [2, () => ["$gt", orderedOf(kind)]],
      [2, () => ["$gte", orderedOf(kind)]],
      [2, () => ["$lt", orderedOf(kind)]],
      [2, () => ["$lte", orderedOf(kind)]],
      [2.5, () => ["$in", inList(kind)]],
      [1.5, () => ["$nin", inList(kind)]],
      [2, () => ["$exists", pick([true, false])]],
      [1.5, () => ["$type", typeSpec()]],
      [1.5, () => ["$all", allList(kind, depth)]],
      [1.5, () => ["$size", int(0, 3)]],
      [1.5, () => ["$mod", [pick([2, 3, 5, -3, i64(4), dbl(2)]), pick([0, 1, -1, 2])]]],
      [depth < 2 ? 2 : 0, () => ["$elemMatch", elemMatch(kind, depth + 1)]],
      [depth < 2 ? 1.5 : 0, () => ["$not", chance(0.3) ? re(pick(REGEXES), regexOpts()) : opDoc(kind, depth + 1, true)]],
    ]);
  const inList = (kind) =>
    some(int(0, 4), () => wpick([[6, () => valueOf(kind)], [1, null], [1, () => re(pick(REGEXES), regexOpts())]]));
  // $all takes values, or only {$elemMatch} documents (MongoDB refuses a mix)
  const allList = (kind, depth) =>
    depth < 2 && chance(0.15)
      ? some(int(1, 2), () => ({ $elemMatch: elemMatch(kind, depth + 1) }))
      : some(int(0, 3), () => valueOf(kind));
  // an operator document {op: arg, ...} (1-2 operators); regex via $regex+$options.
  // Extended JSON parsers (libbson, bson) read a document whose FIRST key is "$regex" as a
  // regex value (legacy form), so $regex comes first only when it is alone with $options
  // (a regex value means the same as a field condition or under $not); inside $elemMatch,
  // where a regex value is not allowed, another operator goes first.
  const opDoc = (kind, depth, noNot = false, inElemMatch = false) => {
    const ops = [];
    let rx = null;
    const n = chance(0.25) ? 2 : 1;
    for (let i = 0; i < n; i++) {
      if (chance(0.12)) {
        const o = regexOpts();
        rx = o || chance(0.5) ? [["$regex", pick(REGEXES)], ["$options", o]] : [["$regex", pick(REGEXES)]];
        continue;
      }
      let [op, arg] = operator(kind, depth);
      if (noNot && op === "$not") [op, arg] = ["$gt", orderedOf(kind)];
      if (!ops.some(([o]) => o === op)) ops.push([op, arg]);
    }
    if (rx && ops.length === 0 && inElemMatch) ops.push(["$exists", true]);
    return Object.fromEntries(rx ? ops.concat(rx) : ops);
  };
  // $elemMatch criteria: on arrays of documents a query, on other arrays operators
  const elemMatch = (kind, depth) => {
    if (kind === "items" || kind === "any" || chance(0.2)) {
      return wpick([
        [3, () => ({ n: chance(0.5) ? number() : opDoc("num", depth) })],
        [2, () => ({ sku: chance(0.5) ? pick(SKUS) : opDoc("sku", depth), n: opDoc("num", depth) })],
        [1, () => ({ tags: valueOf("tag") })],
        [1, () => ({ $or: [{ sku: pick(SKUS) }, { n: opDoc("num", depth) }] })],
        [1, () => ({ a: { b: scalar() } })],
        [1, () => ({ "a.b": opDoc("any", depth) })],
        [0.5, () => ({})],
      ]);
    }
    const elemKind = kind === "tags" ? "tag" : kind === "matrix" ? "num" : kind;
    return opDoc(elemKind, depth, true, true);
  };
  // the condition for one path: a literal, a regex, or an operator document
  const condition = (kind, depth) =>
    wpick([
      [3, () => valueOf(kind)],
      [0.7, () => re(pick(REGEXES), regexOpts())],
      [7, () => opDoc(kind, depth)],
    ]);
  const query = (depth) => {
    const q = {};
    const n = depth === 0 ? wpick([[7, 1], [2, 2], [1, 3]]) : wpick([[5, 1], [2, 2]]);
    for (let i = 0; i < n; i++) {
      if (depth < 2 && chance(0.2)) {
        const op = wpick([[1, "$and"], [2, "$or"], [1, "$nor"]]);
        if (!(op in q)) q[op] = some(int(1, 3), () => query(depth + 1));
        continue;
      }
      const [path, kind] = pick(PATHS);
      if (!(path in q)) q[path] = condition(kind, depth);
    }
    return q;
  };

  let n = 0;
  return () => {
    n += 1;
    return { filter: query(0), doc: event(n) };
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const seed = Number(process.argv[2] ?? 1);
  const count = Number(process.argv[3] ?? 10000);
  if (!Number.isInteger(seed) || !Number.isInteger(count) || count < 0) {
    process.stderr.write("usage: node gen.mjs SEED N\n");
    process.exit(2);
  }
  const next = makeGenerator(seed);
  const out = [];
  for (let i = 0; i < count; i++) out.push(JSON.stringify(next()));
  process.stdout.write(out.join("\n") + (count ? "\n" : ""));
}
