// run_mingo.mjs: evaluates each line {"filter": F, "doc": D} (Extended JSON) of stdin
// with mingo and prints one line per input: 1, 0, or "E <message>" when mingo refuses
// the filter.
//
//   node run_mingo.mjs < pairs.jsonl > mingo.out
import { readFileSync } from "node:fs";
import { Query } from "mingo";
import { filterFromEJSON, fromEJSON } from "./ejson.mjs";

const lines = readFileSync(0, "utf8").split("\n").filter((l) => l.length > 0);
const out = [];
for (const line of lines) {
  const { filter, doc } = JSON.parse(line);
  let q;
  try {
    q = new Query(filterFromEJSON(filter));
  } catch (e) {
    out.push("E " + String(e.message).replace(/\s+/g, " "));
    continue;
  }
  try {
    out.push(q.test(fromEJSON(doc)) ? "1" : "0");
  } catch (e) {
    out.push("E " + String(e.message).replace(/\s+/g, " "));
  }
}
process.stdout.write(out.join("\n") + (out.length ? "\n" : ""));
