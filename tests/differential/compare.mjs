// compare.mjs: compares mingo's and the C matcher's answers for the same pairs.
//
//   node compare.mjs PAIRS MINGO_OUT C_OUT [KNOWN_JSON]
//
// PAIRS has one {"filter", "doc"} line per pair; MINGO_OUT and C_OUT one answer line per
// pair ("1", "0" or "E message"). Answers agree when equal, or when both are errors.
// Every disagreement must be explained by an entry of known_differences.json: each entry
// names a classifier below (`rule`) that recognises the construct the entry is about, in
// the filter and the document of that pair. Anything else is unexpected: the first few
// are printed with filter, document and both answers, and the exit status is 1.
// Prints `differential: N pairs, A agree, K known differences, U unexpected`.
import { readFileSync, writeFileSync } from "node:fs";
import { Query } from "mingo";
import { filterFromEJSON, fromEJSON } from "./ejson.mjs";

const [pairsFile, mingoFile, cFile, knownFile = new URL("./known_differences.json", import.meta.url)] =
  process.argv.slice(2);
if (!pairsFile || !mingoFile || !cFile) {
  process.stderr.write("usage: node compare.mjs PAIRS MINGO_OUT C_OUT [KNOWN_JSON]\n");
  process.exit(2);
}
const lines = (f) => readFileSync(f, "utf8").split("\n").filter((l) => l.length > 0);
const pairs = lines(pairsFile);
const mingo = lines(mingoFile);
const c = lines(cFile);
const known = JSON.parse(readFileSync(knownFile, "utf8"));

if (mingo.length !== pairs.length || c.length !== pairs.length) {
  console.log(`differential: answer count mismatch: ${pairs.length} pairs, ${mingo.length} mingo answers, ` +
    `${c.length} C answers`);
  process.exit(1);
}

// ---------------------------------------------------------------------------
// Helpers over the Extended JSON filter and document
// ---------------------------------------------------------------------------
const isObj = (x) => x !== null && typeof x === "object" && !Array.isArray(x);
const isOpDoc = (x) => isObj(x) && Object.keys(x).length > 0 && Object.keys(x)[0].startsWith("$") &&
  !["$numberInt", "$numberLong", "$numberDouble", "$date", "$oid", "$regularExpression"].includes(Object.keys(x)[0]);
const LOGICAL = new Set(["$and", "$or", "$nor"]);

// Every field clause {path, cond} in a filter, with paths made absolute through $elemMatch.
function clauses(q, prefix = "", out = []) {
  if (!isObj(q)) return out;
  for (const [k, v] of Object.entries(q)) {
    if (LOGICAL.has(k)) {
      if (Array.isArray(v)) for (const sub of v) clauses(sub, prefix, out);
    } else if (!k.startsWith("$")) {
      const path = prefix + k;
      out.push({ path, cond: v });
      if (isOpDoc(v)) nested(v, path, out);
    }
  }
  return out;
}
function nested(ops, path, out) {
  for (const [op, arg] of Object.entries(ops)) {
    if (op === "$elemMatch" && isObj(arg)) {
      if (isOpDoc(arg) && !LOGICAL.has(Object.keys(arg)[0])) nested(arg, path, out);
      else clauses(arg, path + ".", out);
    } else if (op === "$not" && isOpDoc(arg)) {
      nested(arg, path, out);
    } else if (op === "$all" && Array.isArray(arg)) {
      for (const x of arg) if (isObj(x) && isObj(x.$elemMatch)) clauses(x.$elemMatch, path + ".", out);
    }
  }
}
// the operators used in a condition (including inside $not), and its literal operands
function opsOf(cond, out = new Set()) {
  if (!isOpDoc(cond)) {
    out.add("(eq)");
    return out;
  }
  for (const [op, arg] of Object.entries(cond)) {
    out.add(op);
    if (op === "$not" && isOpDoc(arg)) opsOf(arg, out);
  }
  return out;
}
function operands(cond) {
  if (!isOpDoc(cond)) return [cond];
  const out = [];
  for (const [op, arg] of Object.entries(cond)) {
    if (["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"].includes(op)) out.push(arg);
    else if (["$in", "$nin", "$all"].includes(op) && Array.isArray(arg)) out.push(...arg.filter((x) => !isOpDoc(x)));
    else if (op === "$not" && isOpDoc(arg)) out.push(...operands(arg));
  }
  return out;
}
const EQUALITY_OPS = ["(eq)", "$eq", "$ne", "$in", "$nin", "$all"];
function equalityOperands(cond) {
  if (!isOpDoc(cond)) return [cond];
  const out = [];
  for (const [op, arg] of Object.entries(cond)) {
    if (op === "$eq" || op === "$ne") out.push(arg);
    else if (["$in", "$nin", "$all"].includes(op) && Array.isArray(arg)) out.push(...arg.filter((x) => !isOpDoc(x)));
    else if (op === "$not" && isOpDoc(arg)) out.push(...equalityOperands(arg));
  }
  return out;
}
const hasMultiKeyDoc = (v) =>
  Array.isArray(v) ? v.some(hasMultiKeyDoc)
    : isObj(v) && !isOpDoc(v) && !("$numberLong" in v || "$numberDouble" in v || "$date" in v || "$oid" in v ||
      "$regularExpression" in v) ? Object.keys(v).length > 1 || Object.values(v).some(hasMultiKeyDoc) : false;

// Walk a dotted path through the document (JS values), MongoDB style, reporting whether a
// non-numeric path component met an array (so the path fans out over array elements),
// and the values reached.
function walk(doc, path) {
  const parts = path.split(".");
  const values = [];
  let crossesArray = false;
  let lacking = false; // an array crossed by a field name has an element without that field
  let pastEnd = false; // a numeric component beyond the end of an array
  let docElements = false; // a numeric component on an array holding documents
  const go = (v, i) => {
    if (i === parts.length) {
      values.push(v);
      return;
    }
    const p = parts[i];
    if (Array.isArray(v)) {
      if (/^\d+$/.test(p)) {
        if (Number(p) < v.length) go(v[Number(p)], i + 1);
        else pastEnd = true;
        if (v.some(isObj)) docElements = true;
      } else {
        crossesArray = true;
        if (v.length === 0 || v.some((el) => !isObj(el) || !(p in el))) lacking = true;
      }
      for (const el of v) if (isObj(el)) go(el, i);
      return;
    }
    if (v !== null && typeof v === "object" && !(v instanceof Date) && p in v) go(v[p], i + 1);
  };
  go(doc, 0);
  return { values, crossesArray, lacking, pastEnd, docElements };
}
const isNumber = (v) => typeof v === "number";
const plain = (x) => x !== null && typeof x === "object" && x.constructor === Object;
// equal as unordered maps (what mingo compares), but not in field order (what MongoDB does)
function sameButOrder(a, b) {
  if (!plain(a) || !plain(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length || !ka.every((k) => k in b)) return false;
  const unorderedEqual = (x, y) => {
    if (plain(x) && plain(y)) {
      const kx = Object.keys(x);
      return kx.length === Object.keys(y).length && kx.every((k) => k in y && unorderedEqual(x[k], y[k]));
    }
    if (Array.isArray(x) && Array.isArray(y)) return x.length === y.length && x.every((e, i) => unorderedEqual(e, y[i]));
    if (x instanceof Date && y instanceof Date) return +x === +y;
    return x === y || (x !== null && y !== null && typeof x === "object" && String(x) === String(y));
  };
  return unorderedEqual(a, b) && JSON.stringify(a) !== JSON.stringify(b);
}

// ---------------------------------------------------------------------------
// Classifiers: (pair) -> true when the pair has the construct a known difference is about
// ---------------------------------------------------------------------------
function mingoAnswer(filter, doc) {
  try {
    return new Query(filterFromEJSON(filter)).test(fromEJSON(doc)) ? "1" : "0";
  } catch (e) {
    return "E " + e.message;
  }
}
// $all rewritten as the $and of its values (the documented equivalence)
function rewriteAll(q) {
  if (Array.isArray(q)) return q.map(rewriteAll);
  if (!isObj(q)) return q;
  const out = {};
  const extra = [];
  for (const [k, v] of Object.entries(q)) {
    if (LOGICAL.has(k) && Array.isArray(v)) {
      out[k] = v.map(rewriteAll);
    } else if (!k.startsWith("$") && isOpDoc(v) && Array.isArray(v.$all) && v.$all.length > 0) {
      const rest = { ...v };
      delete rest.$all;
      for (const x of v.$all) {
        extra.push({ [k]: isObj(x) && "$elemMatch" in x ? { $elemMatch: rewriteAll(x.$elemMatch) } : x });
      }
      if (Object.keys(rest).length) extra.push({ [k]: rest });
    } else if (!k.startsWith("$") && isOpDoc(v) && isObj(v.$elemMatch) && !isOpDoc(v.$elemMatch)) {
      out[k] = { ...v, $elemMatch: rewriteAll(v.$elemMatch) };
    } else {
      out[k] = v;
    }
  }
  if (extra.length) out.$and = (out.$and || []).concat(extra);
  return out;
}

const RULES = {
  // mingo's $all is false unless the field's value is an array; MongoDB's $all is the $and
  // of equalities. Explained when mingo, given the documented $and form, agrees with C.
  all_as_and: ({ filter, doc, cAns }) => {
    if (!JSON.stringify(filter).includes('"$all"')) return false;
    return mingoAnswer(rewriteAll(filter), doc) === cAns;
  },
  // mingo cannot see BSON number subtypes or ObjectIds in $type
  type_bson_subtypes: ({ filter }) =>
    clauses(filter).some(({ cond }) => {
      const spec = isOpDoc(cond) ? [cond.$type, isOpDoc(cond.$not) ? cond.$not.$type : undefined] : [];
      const names = spec.flatMap((s) => (Array.isArray(s) ? s : [s]));
      return names.some((n) => ["int", "long", "double", "decimal", "objectId", 1, 7, 16, 18, 19].includes(n));
    }),
  // mingo computes $mod with JavaScript's % on any value (strings, dates, null, fractions)
  mod_non_integer: ({ filter, jsDoc }) =>
    clauses(filter).some(({ path, cond }) => {
      if (!opsOf(cond).has("$mod")) return false;
      const { values } = walk(jsDoc, path);
      const flat = values.flatMap((v) => (Array.isArray(v) ? [v, ...v] : [v]));
      return flat.some((v) => !isNumber(v) || !Number.isSafeInteger(v));
    }),
  // mingo compares embedded documents without regard to field order
  // (counted only when the field reaches a document equal to the operand but for order)
  document_field_order: ({ filter, jsDoc }) =>
    clauses(filter).some(({ path, cond }) => {
      const ops = equalityOperands(cond).filter(hasMultiKeyDoc).map(fromEJSON);
      if (!ops.length) return false;
      const vals = walk(jsDoc, path).values.flatMap((v) => (Array.isArray(v) ? [v, ...v] : [v]));
      return ops.some((o) => vals.some((v) => sameButOrder(v, o)));
    }),
  // mingo's path resolution over arrays of documents drops the elements that lack the
  // field and hands operators the collected values as a new array
  array_traversal: ({ filter, jsDoc }) =>
    clauses(filter).some(({ path, cond }) => {
      const w = walk(jsDoc, path);
      if (!w.crossesArray) return false;
      if (w.values.some(Array.isArray)) return true; // mingo nests the leaf arrays it collects
      const ops = opsOf(cond);
      const lits = operands(cond);
      // mingo hands $elemMatch/$size/$type/$all and array literals its collected array
      if (lits.some(Array.isArray) || ["$type", "$size", "$elemMatch", "$all"].some((o) => ops.has(o))) return true;
      // null, $exists and negations see the elements without the field differently
      return w.lacking && (lits.some((x) => x === null) || ["$exists", "$ne", "$nin", "$not"].some((o) => ops.has(o)));
    }),
  // $gte/$lte null include equality with null, which matches a missing field; mingo
  // compares only values of the same type and never sees a missing field as null
  null_range: ({ filter }) =>
    clauses(filter).some(({ cond }) => {
      if (!isOpDoc(cond)) return false;
      const own = [cond, isOpDoc(cond.$not) ? cond.$not : {}];
      return own.some((o) => ("$gte" in o && o.$gte === null) || ("$lte" in o && o.$lte === null));
    }),
  // a numeric path component on an array: changegate follows mongod's path iteration
  // (the element at the index is the value, compared whole; an index past the end gives
  // no value; document elements are also looked into for a field with that name);
  // mingo's resolve() gives undefined past the end and flattens what it finds
  positional_index: ({ filter, jsDoc }) =>
    clauses(filter).some(({ path, cond }) => {
      if (!/\.\d+(\.|$)/.test(path)) return false;
      const w = walk(jsDoc, path);
      if (w.values.some(Array.isArray)) return true; // the element at the index is an array
      const ops = opsOf(cond);
      const missingMatters = operands(cond).some((x) => x === null) ||
        ["$exists", "$ne", "$nin", "$not"].some((o) => ops.has(o));
      return missingMatters && (w.pastEnd || w.docElements);
    }),
  // mingo's equality and $regex also look inside arrays nested in arrays
  nested_arrays: ({ filter, jsDoc }) =>
    clauses(filter).some(({ path, cond }) => {
      const ops = opsOf(cond);
      if (![...EQUALITY_OPS, "$regex"].some((o) => ops.has(o)) && !(cond && cond.$regularExpression)) return false;
      return walk(jsDoc, path).values.some((v) => Array.isArray(v) && v.some(Array.isArray));
    }),
};

// rules about one side refusing the filter (none at present); all others are about 1
// against 0. (A libbson parse problem with operator documents starting with $type was
// such a case until match.c learned to read them; see git history.)
const ERROR_RULES = new Set([]);
for (const k of known) {
  if (!RULES[k.rule]) {
    console.log(`differential: known_differences.json names an unknown rule ${k.rule}`);
    process.exit(1);
  }
}

// ---------------------------------------------------------------------------
let agree = 0;
let knownCount = 0;
const perKnown = new Map(known.map((k) => [k.id, 0]));
const unexpected = [];
for (let i = 0; i < pairs.length; i++) {
  const m = mingo[i];
  const x = c[i];
  if (m === x || (m.startsWith("E") && x.startsWith("E"))) {
    agree++;
    continue;
  }
  const { filter, doc } = JSON.parse(pairs[i]);
  let jsDoc;
  try {
    jsDoc = fromEJSON(doc);
  } catch {
    jsDoc = {};
  }
  const ctx = { filter, doc, jsDoc, mingoAns: m, cAns: x };
  const errorCase = x.startsWith("E") || m.startsWith("E");
  const hit = known.find((k) => ERROR_RULES.has(k.rule) === errorCase && RULES[k.rule](ctx));
  if (hit) {
    knownCount++;
    perKnown.set(hit.id, perKnown.get(hit.id) + 1);
  } else {
    unexpected.push({ line: i + 1, filter, doc, mingo: m, c: x });
  }
}

// DIFFERENTIAL_DUMP=FILE: write every unexpected pair there (one {"filter", "doc"} line each)
if (process.env.DIFFERENTIAL_DUMP) {
  writeFileSync(process.env.DIFFERENTIAL_DUMP,
    unexpected.map((u) => JSON.stringify({ filter: u.filter, doc: u.doc })).join("\n") + (unexpected.length ? "\n" : ""));
}
for (const u of unexpected.slice(0, 5)) {
  console.log(`UNEXPECTED (pair ${u.line}): mingo=${u.mingo} changegate=${u.c}`);
  console.log(`  filter: ${JSON.stringify(u.filter)}`);
  console.log(`  doc:    ${JSON.stringify(u.doc)}`);
}
if (unexpected.length > 5) console.log(`... and ${unexpected.length - 5} more unexpected`);
for (const [id, n] of perKnown) if (n) console.log(`  known difference ${id}: ${n}`);
console.log(`differential: ${pairs.length} pairs, ${agree} agree, ${knownCount} known differences, ` +
  `${unexpected.length} unexpected`);
process.exit(unexpected.length ? 1 : 0);
