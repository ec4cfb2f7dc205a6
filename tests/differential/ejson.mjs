// ejson.mjs: Extended JSON v2 (as parsed by JSON.parse) -> the JavaScript values mingo
// understands, mapping each BSON type to the value mingo gives MongoDB's semantics for.
//
// The choice (see README.md):
// - int32, {"$numberInt"}, {"$numberLong"}, {"$numberDouble"} -> JavaScript numbers
//   (including NaN and +-Infinity). mingo compares numbers only when both are JS
//   numbers (`typeOf` must be "number"); bson's Int32/Long/Double wrapper objects would
//   each be their own "type" to mingo (Long(5) would neither equal nor compare with
//   Double(5)), which is the opposite of MongoDB's cross-type numeric comparison. The
//   generator keeps int64 values exact in a double, or uses values whose rounding is the
//   point of a known difference. Decimal128 is refused (mingo has no decimal).
// - {"$date"} -> Date; {"$oid"} -> bson's ObjectId (mingo compares objects of a class with
//   a custom toString() by that string: the lower-case hex, which orders like the bytes).
// - {"$regularExpression"} and the legacy {"$regex", "$options"} *value* form (only
//   inside $in/$nin/$all lists or as a literal) -> RegExp. A {"$regex", "$options"}
//   operator document on a field is left as is: mingo implements the $regex operator.
// - Everything else: arrays and objects are copied with key order kept (JSON.parse keeps
//   it; the generator never writes integer-like keys, which JS objects would reorder).
import { ObjectId } from "bson";

const WRAPPERS = new Set(["$numberInt", "$numberLong", "$numberDouble", "$numberDecimal", "$date", "$oid",
  "$regularExpression", "$binary", "$timestamp", "$minKey", "$maxKey", "$symbol", "$code",
  "$undefined", "$dbPointer"]);

function num(s) {
  if (s === "NaN") return NaN;
  if (s === "Infinity") return Infinity;
  if (s === "-Infinity") return -Infinity;
  return Number(s);
}

function regex(pattern, options) {
  let flags = "";
  for (const c of options) {
    if (c === "i" || c === "m" || c === "s") flags += c;
    else if (c === "u") continue; // JS strings are Unicode already
    else throw new Error(`regex option ${c} has no JavaScript equivalent`);
  }
  return new RegExp(pattern, flags);
}

export function fromEJSON(v) {
  if (v === null || typeof v !== "object") return v;
  if (Array.isArray(v)) return v.map(fromEJSON);
  const keys = Object.keys(v);
  if (keys.length === 1 && WRAPPERS.has(keys[0])) {
    const [k] = keys;
    const x = v[k];
    switch (k) {
      case "$numberInt":
      case "$numberLong":
      case "$numberDouble":
        return num(x);
      case "$date":
        if (typeof x === "string") return new Date(x);
        if (typeof x === "number") return new Date(x);
        return new Date(Number(x.$numberLong));
      case "$oid":
        return new ObjectId(x);
      case "$regularExpression":
        return regex(x.pattern, x.options);
      default:
        throw new Error(`Extended JSON ${k} is not mapped for mingo`);
    }
  }
  const out = {};
  for (const k of keys) out[k] = fromEJSON(v[k]);
  return out;
}

// A filter: as fromEJSON, but a {"$regex": s, "$options": o} document stays an operator
// document (mingo's $regex operator takes a string or a RegExp; $options is applied by
// compiling the pattern here with $options, the same as mingo does for a field condition,
// so that it also holds inside $not and $elemMatch).
export function filterFromEJSON(q) {
  if (q === null || typeof q !== "object") return q;
  if (Array.isArray(q)) return q.map(filterFromEJSON);
  const keys = Object.keys(q);
  if (keys.length === 1 && WRAPPERS.has(keys[0])) return fromEJSON(q);
  const out = {};
  for (const k of keys) {
    if (k === "$regex" && typeof q[k] === "string") {
      out.$regex = regex(q[k], typeof q.$options === "string" ? q.$options : "");
    } else if (k === "$options" && typeof q.$regex === "string") {
      continue;
    } else if (k === "$in" || k === "$nin" || k === "$all") {
      out[k] = Array.isArray(q[k]) ? q[k].map((x) => (isOperatorDoc(x) ? filterFromEJSON(x) : fromEJSON(x))) : q[k];
    } else if (k.startsWith("$") || isOperatorDoc(q[k]) || k === "$and" || k === "$or" || k === "$nor") {
      out[k] = filterFromEJSON(q[k]);
    } else {
      out[k] = fromEJSON(q[k]); // a literal (implicit equality)
    }
  }
  return out;
}

function isOperatorDoc(x) {
  return x !== null && typeof x === "object" && !Array.isArray(x) && Object.keys(x).length > 0 &&
    Object.keys(x)[0].startsWith("$") && !WRAPPERS.has(Object.keys(x)[0]);
}
