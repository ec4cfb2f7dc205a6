"""Plain (non change stream) aggregation over a collection, and find/count helpers.

Just enough for what drivers build on top of aggregate: countDocuments ($match, $skip,
$limit, $group with $sum), simple reporting pipelines in tests ($sort, $project, $count).
"""

import functools

from . import matcher
from .changestream import compile_stage as compile_cs_stage
from .errors import CommandError


def run_pipeline(docs, pipeline):
    docs = list(docs)
    for stage in pipeline:
        if not isinstance(stage, dict) or len(stage) != 1:
            raise CommandError(40323, "A pipeline stage specification object must contain exactly one field.")
        name, spec = next(iter(stage.items()))
        if name == "$sort":
            docs.sort(key=functools.cmp_to_key(matcher.sort_key_compare(spec)))
        elif name == "$skip":
            docs = docs[int(spec):]
        elif name == "$limit":
            docs = docs[:int(spec)]
        elif name == "$count":
            docs = [{spec: len(docs)}] if docs else []
        elif name == "$group":
            docs = _group(docs, spec)
        elif name in ("$match", "$project", "$addFields", "$set", "$unset", "$replaceRoot", "$replaceWith"):
            fn = compile_cs_stage(stage)
            docs = [d for d in (fn(x) for x in docs) if d is not None]
        elif name == "$changeStream":
            raise CommandError(40602, "$changeStream is only valid as the first stage in a pipeline.")
        else:
            raise CommandError(40324, "Unrecognized pipeline stage name: '%s' (or not implemented by devmongo)"
                               % name)
    return docs


def _group(docs, spec):
    if "_id" not in spec:
        raise CommandError(15955, "a group specification must include an _id")
    groups = {}
    order = []
    for d in docs:
        key = matcher.eval_expr(spec["_id"], d)
        if key is matcher.MISSING:
            key = None
        k = repr(key)
        if k not in groups:
            groups[k] = {"_id": key, "_acc": {}}
            order.append(k)
        g = groups[k]
        for field, acc in spec.items():
            if field == "_id":
                continue
            if not isinstance(acc, dict) or len(acc) != 1:
                raise CommandError(40234, "The field '%s' must be an accumulator object" % field)
            op, expr = next(iter(acc.items()))
            val = matcher.eval_expr(expr, d)
            st = g["_acc"].setdefault(field, {"op": op, "vals": []})
            st["vals"].append(val)
    out = []
    for k in order:
        g = groups[k]
        res = {"_id": g["_id"]}
        for field, st in g["_acc"].items():
            res[field] = _accumulate(st["op"], st["vals"])
        out.append(res)
    return out


def _accumulate(op, vals):
    present = [v for v in vals if v is not matcher.MISSING and v is not None]
    nums = [v for v in present if matcher.type_rank(v) == 3 and not isinstance(v, bool)]
    if op == "$sum":
        total = sum(matcher._num(v) for v in nums)
        return total
    if op == "$count":
        return len(vals)
    if op == "$avg":
        return (sum(matcher._num(v) for v in nums) / len(nums)) if nums else None
    if op in ("$min", "$max"):
        if not present:
            return None
        best = present[0]
        for v in present[1:]:
            c = matcher.compare(v, best)
            if (op == "$min" and c < 0) or (op == "$max" and c > 0):
                best = v
        return best
    if op == "$first":
        return vals[0] if vals and vals[0] is not matcher.MISSING else None
    if op == "$last":
        return vals[-1] if vals and vals[-1] is not matcher.MISSING else None
    if op == "$push":
        return [v for v in vals if v is not matcher.MISSING]
    if op == "$addToSet":
        out = []
        for v in vals:
            if v is not matcher.MISSING and not any(matcher.values_equal(v, x) for x in out):
                out.append(v)
        return out
    raise CommandError(15952, "unknown group operator '%s'" % op)


def find_docs(store, db, coll, filt, sort=None, skip=0, limit=0, projection=None):
    docs = store.find(db, coll, filt or {})
    if sort:
        docs = sorted(docs, key=functools.cmp_to_key(matcher.sort_key_compare(sort)))
    if skip:
        docs = docs[skip:]
    if limit:
        docs = docs[:abs(limit)]
    if projection:
        proj = matcher.Projection(projection, allow_expressions=False)
        docs = [proj.apply(d) for d in docs]
    return docs
