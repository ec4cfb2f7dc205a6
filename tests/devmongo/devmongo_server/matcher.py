"""Query matching, value comparison, projection and simple expressions.

Query matching is done by mongomock (Debian's python3-mongomock 4.1.2,
`mongomock.filtering.filter_applies`), an implementation that is not ours, so devmongo and
changegate's C matcher check each other. devmongo's own matcher below is used only for
the field clauses mongomock lacks or gets wrong (see _needs_own_matcher for the list) and
for validating filters up front.

One matcher serves `find` filters, `$match` in plain aggregates and `$match` after
`$changeStream`, so a filter behaves the same whether changegate pushes it to the server
or a test queries with it. It follows MongoDB semantics where tests can see them:

* BSON comparison order across types (numbers compare across int32/int64/double/decimal,
  `true` is not `1`, field order matters for subdocument equality);
* dotted paths walk into subdocuments and arrays (any element may match);
* `{field: null}` matches a missing field;
* comparison operators ($gt...) only compare values of the same type bracket.
"""

import datetime
import decimal
import math
import re
import uuid

from bson.binary import Binary
from bson.code import Code
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

from .errors import CommandError

# Independent query semantics (not ours): Debian package python3-mongomock.
from mongomock import OperationFailure as _MongomockFailure
from mongomock.filtering import filter_applies as _mongomock_filter_applies


class _Missing:
    """Marks a path that does not exist in a document (distinct from null)."""

    def __repr__(self):
        return "MISSING"


MISSING = _Missing()

_PATTERN_TYPE = type(re.compile(""))


# ---------------------------------------------------------------------------
# Comparison in BSON order
# ---------------------------------------------------------------------------

def type_rank(v):
    """Canonical BSON type order used when comparing values of different types."""
    if v is None or v is MISSING:
        return 2
    if isinstance(v, bool):
        return 9
    if isinstance(v, (int, float, Decimal128)):
        return 3
    if isinstance(v, str):
        return 4  # includes Code (a str subclass); close enough for tests
    if isinstance(v, dict):
        return 5
    if isinstance(v, (list, tuple)):
        return 6
    if isinstance(v, (bytes, uuid.UUID)):
        return 7
    if isinstance(v, ObjectId):
        return 8
    if isinstance(v, datetime.datetime):
        return 10
    if isinstance(v, Timestamp):
        return 11
    if isinstance(v, (Regex, _PATTERN_TYPE)):
        return 12
    if isinstance(v, MinKey):
        return 1
    if isinstance(v, MaxKey):
        return 13
    return 14


def _num(v):
    if isinstance(v, Decimal128):
        return v.to_decimal()
    return v


def _cmp_numbers(a, b):
    a, b = _num(a), _num(b)
    a_nan = isinstance(a, (float, decimal.Decimal)) and a != a
    b_nan = isinstance(b, (float, decimal.Decimal)) and b != b
    if a_nan or b_nan:  # MongoDB: NaN equals NaN and sorts below every other number
        return 0 if a_nan and b_nan else (-1 if a_nan else 1)
    if isinstance(a, decimal.Decimal) and isinstance(b, float):
        b = decimal.Decimal(b) if not math.isinf(b) else b
    elif isinstance(b, decimal.Decimal) and isinstance(a, float):
        a = decimal.Decimal(a) if not math.isinf(a) else a
    return (a > b) - (a < b)


def compare(a, b):
    """Return -1, 0 or 1 comparing two BSON values the way MongoDB sorts them."""
    ra, rb = type_rank(a), type_rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    if ra == 3:
        return _cmp_numbers(a, b)
    if ra in (1, 2, 13):
        return 0
    if ra == 5:
        ia, ib = iter(a.items()), iter(b.items())
        while True:
            ea, eb = next(ia, None), next(ib, None)
            if ea is None or eb is None:
                return 0 if ea is eb else (-1 if ea is None else 1)
            r = type_rank(ea[1]) - type_rank(eb[1])
            if r:
                return -1 if r < 0 else 1
            if ea[0] != eb[0]:
                return -1 if ea[0] < eb[0] else 1
            r = compare(ea[1], eb[1])
            if r:
                return r
    if ra == 6:
        for x, y in zip(a, b):
            r = compare(x, y)
            if r:
                return r
        return (len(a) > len(b)) - (len(a) < len(b))
    if ra == 7:
        ka = _bin_key(a)
        kb = _bin_key(b)
        return (ka > kb) - (ka < kb)
    if ra == 8:
        return (a.binary > b.binary) - (a.binary < b.binary)
    if ra == 11:
        ka, kb = (a.time, a.inc), (b.time, b.inc)
        return (ka > kb) - (ka < kb)
    if ra == 12:
        ka, kb = _regex_key(a), _regex_key(b)
        return (ka > kb) - (ka < kb)
    try:
        return (a > b) - (a < b)
    except TypeError:
        return 0


def _bin_key(v):
    if isinstance(v, uuid.UUID):
        return (16, 4, v.bytes)
    sub = v.subtype if isinstance(v, Binary) else 0
    return (len(v), sub, bytes(v))


def _regex_key(v):
    if isinstance(v, Regex):
        return (v.pattern, str(v.flags))
    return (v.pattern, str(v.flags))


def values_equal(a, b):
    return compare(a, b) == 0


# ---------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------

def path_values(doc, path):
    """All values reachable at a dotted path, expanding arrays like MongoDB.

    The result may contain MISSING when some branch lacks the field; an empty result
    never happens (a completely absent field gives [MISSING]).
    """
    out = []
    _collect(doc, path.split("."), 0, out)
    return out or [MISSING]


def _collect(value, parts, i, out):
    if i == len(parts):
        out.append(value)
        return
    part = parts[i]
    if isinstance(value, dict):
        if part in value:
            _collect(value[part], parts, i + 1, out)
        else:
            out.append(MISSING)
    elif isinstance(value, list):
        before = len(out)
        if part.isdigit():
            idx = int(part)
            if idx < len(value):
                _collect(value[idx], parts, i + 1, out)
        for el in value:
            if isinstance(el, dict):
                _collect(el, parts, i, out)
        if len(out) == before:
            out.append(MISSING)
    else:
        out.append(MISSING)


def get_path(doc, path, default=MISSING):
    """Plain lookup of a dotted path through subdocuments (and array indexes)."""
    cur = doc
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return default
    return cur


# ---------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------

def _is_operator_doc(v):
    return isinstance(v, dict) and len(v) > 0 and next(iter(v)).startswith("$")


def validate_filter(query):
    """Raise CommandError for filters the matcher cannot evaluate (checked up front).

    devmongo's own code: mongomock only notices some malformed filters when a document
    reaches the bad part, and reports them as its own exception type."""
    _own_match({}, query)


def match(doc, query):
    """True if doc satisfies the MongoDB query document.

    The logical operators are walked here so that each field clause {path: cond} goes to
    mongomock's filter_applies unless _needs_own_matcher says mongomock lacks what the
    clause needs; then devmongo's own _match_field decides that clause."""
    if not isinstance(query, dict):
        raise CommandError(2, "filter must be an object")
    for key, cond in query.items():
        if key.startswith("$"):
            if key == "$and":
                if not all(match(doc, q) for q in _clause_list(key, cond)):
                    return False
            elif key == "$or":
                if not any(match(doc, q) for q in _clause_list(key, cond)):
                    return False
            elif key == "$nor":
                if any(match(doc, q) for q in _clause_list(key, cond)):
                    return False
            elif key in ("$comment", "$alwaysTrue"):  # mongomock lacks $alwaysTrue/$alwaysFalse
                continue
            elif key == "$alwaysFalse":
                return False
            else:
                raise CommandError(2, "unknown top level operator: %s" % key)
        elif not _match_clause(doc, key, cond):
            return False
    return True


def _match_clause(doc, path, cond):
    if _needs_own_matcher(doc, path, cond):
        return _match_field(doc, path, cond)
    try:
        return bool(_mongomock_filter_applies({path: cond}, doc))
    except NotImplementedError:
        # mongomock cannot order some BSON types (Timestamp, MinKey/MaxKey, regex values...)
        return _match_field(doc, path, cond)
    except _MongomockFailure as e:
        raise CommandError(2, str(e)) from None


# Where mongomock 4.1.2 (mongomock/filtering.py) lacks something, a field clause is decided
# by devmongo's own matcher instead. Each rule names what mongomock lacks:
#   $mod            not implemented ("unknown operator").
#   $type           only string aliases; numeric codes, lists of types and the aliases null,
#                   regex, timestamp, minKey, maxKey raise NotImplementedError; int/long are
#                   told apart by magnitude, not by BSON type (Int64(5) counts as "int").
#   $size           {$size: 1} matches any truthy scalar and $size counts the keys of a
#                   subdocument; MongoDB's $size only matches arrays.
#   $all            {$all: []} matches everything (MongoDB: nothing); array operands are
#                   only compared with array elements, not with the whole array.
#   $not + $options {$not: {$regex: .., $options: ..}} fails with "unknown operator".
#   Decimal128      anywhere in the clause or the document's field: not a number to
#                   mongomock (equality with 5 is false, ordering raises).
#   booleans        Python's True == 1: an equality against a boolean, or against a number
#                   when the document's field holds booleans, would match true to 1.
#   subdocuments    Python dict equality ignores field order; MongoDB's does not: equality
#                   against a subdocument with 2+ fields.
#   array operands  $eq/$ne/$in/$nin with an array operand compare only the whole field
#                   ($in/$nin: only its elements), not both as MongoDB does.
#   $all+$elemMatch matches fields that are not arrays.
#   $gte/$lte null  never match a missing field (MongoDB: they include equality with null).
#   {field: {}}     taken as "no condition" instead of equality with an empty document.
#   paths           (see _path_needs_own) through null or a scalar: mongomock yields no
#                   value instead of "missing"; a numeric component on an array of
#                   documents: mongomock takes only the indexed element; $not with no
#                   value, and $not or $exists: false on a path through an array: decided
#                   per value by mongomock, where MongoDB needs them to hold for all values.
_OWN_OPERATORS = ("$mod", "$type", "$size")


def _needs_own_matcher(doc, path, cond):
    state = {"own": False, "bool": False, "number": False, "decimal": False}

    def operand(v, in_list_op=False):
        if isinstance(v, bool):
            state["bool"] = True
        elif isinstance(v, (int, float)):
            state["number"] = True
            if v != v:  # NaN: MongoDB finds NaN equal to NaN, Python does not
                state["own"] = True
        elif isinstance(v, Decimal128):
            state["decimal"] = True
        elif isinstance(v, dict):
            if len(v) > 1:
                state["own"] = True
            for x in v.values():
                operand(x)
        elif isinstance(v, list):
            if in_list_op:
                state["own"] = True
            for x in v:
                operand(x)

    def walk(c):
        if isinstance(c, dict) and not c:
            state["own"] = True  # {field: {}}: mongomock treats it as no condition
        elif _is_operator_doc(c):
            for op, arg in c.items():
                if op in _OWN_OPERATORS:
                    state["own"] = True
                elif op == "$not":
                    if isinstance(arg, dict) and "$options" in arg:
                        state["own"] = True
                    walk(arg)
                elif op == "$elemMatch":
                    if isinstance(arg, dict):
                        for k, sub in arg.items():
                            if k in ("$and", "$or", "$nor") and isinstance(sub, list):
                                for q in sub:
                                    if isinstance(q, dict):
                                        for qv in q.values():
                                            walk(qv)
                            elif k.startswith("$"):
                                walk({k: sub})
                            else:
                                walk(sub)
                elif op in ("$in", "$nin", "$all"):
                    if isinstance(arg, list):
                        if op == "$all" and (not arg or any(isinstance(x, dict) and "$elemMatch" in x
                                                            for x in arg)):
                            state["own"] = True  # mongomock: $all of $elemMatch on non-arrays
                        for x in arg:
                            if isinstance(x, dict) and "$elemMatch" in x:
                                walk(x)
                            else:
                                operand(x, in_list_op=True)
                elif op in ("$eq", "$ne"):
                    operand(arg, in_list_op=True)
                elif op in ("$gt", "$gte", "$lt", "$lte"):
                    if arg is None and op in ("$gte", "$lte"):
                        state["own"] = True  # mongomock: $gte/$lte null never match a missing field
                    operand(arg)
        else:
            operand(c)

    walk(cond)
    if state["own"] or state["decimal"]:
        return True
    if not isinstance(doc, dict) or _path_needs_own(doc, path, cond):
        return True
    if state["bool"]:
        return True
    field = doc.get(path.split(".", 1)[0], MISSING) if isinstance(doc, dict) else MISSING
    held = _kinds(field)
    if "decimal" in held:
        return True
    return state["number"] and "bool" in held


def _path_needs_own(doc, path, cond):
    """Paths whose values mongomock's iter_key_candidates gets wrong for MongoDB.

    Through null or a scalar, MongoDB sees a missing field; mongomock yields no value at
    all, so null, $ne, $nin and $exists answers come out wrong. At a numeric component
    on an array of documents MongoDB also looks into the documents for a field of that
    name; mongomock takes only the element at the index. $not with no value, and $not or
    $exists: false on a path through an array, are decided per value by mongomock, where
    MongoDB needs them to hold for every value. (An empty array, an index past the end
    and non-document elements give no value in both, as they should.)"""
    parts = path.split(".")
    crosses_array = False
    cur = [doc]
    for i, part in enumerate(parts):
        nxt = []
        for v in cur:
            if isinstance(v, dict):
                if part in v:
                    nxt.append(v[part])
            elif isinstance(v, list):
                if part.isdigit():
                    if any(isinstance(e, dict) for e in v):
                        return True
                    if int(part) < len(v):
                        nxt.append(v[int(part)])
                else:
                    crosses_array = True
                    nxt.extend(e[part] for e in v if isinstance(e, dict) and part in e)
            elif i > 0:
                return True  # through null or a scalar
        cur = nxt
    if _is_operator_doc(cond):
        if "$not" in cond and (crosses_array or not cur):
            return True
        if crosses_array and cond.get("$exists", True) is False:
            return True
    return False


def _kinds(v, out=None):
    """The kinds of scalars ("bool", "decimal") found anywhere inside v."""
    out = set() if out is None else out
    if isinstance(v, bool):
        out.add("bool")
    elif isinstance(v, Decimal128):
        out.add("decimal")
    elif isinstance(v, dict):
        for x in v.values():
            _kinds(x, out)
    elif isinstance(v, list):
        for x in v:
            _kinds(x, out)
    return out


def _own_match(doc, query):
    """devmongo's own matcher for a whole query (used to validate filters)."""
    if not isinstance(query, dict):
        raise CommandError(2, "filter must be an object")
    for key, cond in query.items():
        if key.startswith("$"):
            if key == "$and":
                if not all(_own_match(doc, q) for q in _clause_list(key, cond)):
                    return False
            elif key == "$or":
                if not any(_own_match(doc, q) for q in _clause_list(key, cond)):
                    return False
            elif key == "$nor":
                if any(_own_match(doc, q) for q in _clause_list(key, cond)):
                    return False
            elif key in ("$comment", "$alwaysTrue"):
                continue
            elif key == "$alwaysFalse":
                return False
            else:
                raise CommandError(2, "unknown top level operator: %s" % key)
        elif not _match_field(doc, key, cond):
            return False
    return True


def _clause_list(op, cond):
    if not isinstance(cond, list) or not cond:
        raise CommandError(2, "%s argument must be a non-empty array" % op)
    for q in cond:
        if not isinstance(q, dict):
            raise CommandError(2, "$or/$and/$nor entries need to be full objects")
    return cond


def _match_field(doc, path, cond):
    values = path_values(doc, path)
    if _is_operator_doc(cond):
        return _match_operators(values, cond)
    return _op_eq(values, cond)


def _match_operators(values, ops):
    for op, arg in ops.items():
        if op == "$options":
            if "$regex" not in ops:
                raise CommandError(2, "$options needs a $regex")
            continue
        fn = _OPERATORS.get(op)
        if fn is None:
            raise CommandError(2, "unknown operator: %s" % op)
        if op == "$regex":
            arg = _make_regex(arg, ops.get("$options", ""))
        if not fn(values, arg):
            return False
    return True


def _candidates(values):
    """Values to test for an element-wise operator: each value, and elements of arrays."""
    for v in values:
        if v is MISSING:
            continue
        yield v
        if isinstance(v, list):
            yield from v


def _is_regex(v):
    return isinstance(v, (Regex, _PATTERN_TYPE))


def _make_regex(pattern, options=""):
    if isinstance(pattern, Regex):
        pattern = pattern.try_compile()
    if isinstance(pattern, _PATTERN_TYPE):
        return pattern
    if not isinstance(pattern, str):
        raise CommandError(2, "$regex has to be a string")
    flags = 0
    for ch in options or "":
        flags |= {"i": re.I, "m": re.M, "s": re.S, "x": re.X}.get(ch, 0)
    return re.compile(pattern, flags)


def _regex_matches(values, rx):
    rx = _make_regex(rx)
    return any(isinstance(v, str) and rx.search(v) for v in _candidates(values))


def _op_eq(values, target):
    if _is_regex(target):
        return _regex_matches(values, target)
    if target is None:
        for v in values:
            if v is MISSING or v is None:
                return True
            if isinstance(v, list) and any(x is None for x in v):
                return True
        return False
    return any(values_equal(v, target) for v in _candidates(values))


def _op_ne(values, target):
    return not _op_eq(values, target)


def _ordered(pred):
    def op(values, target):
        if target is None and pred(0):
            # $gte/$lte null contain equality with null, which matches a missing field too
            return _op_eq(values, None)
        rank = type_rank(target)
        for v in _candidates(values):
            if type_rank(v) == rank and pred(compare(v, target)):
                return True
        return False
    return op


def _op_in(values, targets):
    if not isinstance(targets, list):
        raise CommandError(2, "$in needs an array")
    return any(_op_eq(values, t) for t in targets)


def _op_nin(values, targets):
    if not isinstance(targets, list):
        raise CommandError(2, "$nin needs an array")
    return not _op_in(values, targets)


def _op_exists(values, want):
    present = any(v is not MISSING for v in values)
    return present == bool(want)


def _op_not(values, arg):
    if _is_regex(arg):
        return not _regex_matches(values, arg)
    if not isinstance(arg, dict) or not arg:
        raise CommandError(2, "$not needs a regex or a document")
    return not _match_operators(values, arg)


def _op_size(values, n):
    return any(isinstance(v, list) and len(v) == n for v in values)


def _op_all(values, targets):
    if not isinstance(targets, list):
        raise CommandError(2, "$all needs an array")
    return bool(targets) and all(_op_eq(values, t) for t in targets)


def _op_elem_match(values, sub):
    if not isinstance(sub, dict):
        raise CommandError(2, "$elemMatch needs an Object")
    for v in values:
        if not isinstance(v, list):
            continue
        for el in v:
            if _is_operator_doc(sub) and not next(iter(sub)) in ("$and", "$or", "$nor"):
                if _match_operators([el], sub):
                    return True
            elif isinstance(el, dict) and _own_match(el, sub):
                return True
    return False


_TYPE_ALIASES = {
    "double": 1, "string": 2, "object": 3, "array": 4, "binData": 5, "objectId": 7,
    "bool": 8, "date": 9, "null": 10, "regex": 11, "int": 16, "timestamp": 17,
    "long": 18, "decimal": 19, "minKey": -1, "maxKey": 127,
}


def bson_type_number(v):
    if v is None:
        return 10
    if isinstance(v, bool):
        return 8
    if isinstance(v, Int64):
        return 18
    if isinstance(v, int):
        return 16 if -2**31 <= v < 2**31 else 18
    if isinstance(v, float):
        return 1
    if isinstance(v, Decimal128):
        return 19
    if isinstance(v, Code):
        return 13
    if isinstance(v, str):
        return 2
    if isinstance(v, dict):
        return 3
    if isinstance(v, list):
        return 4
    if isinstance(v, (bytes, uuid.UUID)):
        return 5
    if isinstance(v, ObjectId):
        return 7
    if isinstance(v, datetime.datetime):
        return 9
    if isinstance(v, (Regex, _PATTERN_TYPE)):
        return 11
    if isinstance(v, Timestamp):
        return 17
    if isinstance(v, MinKey):
        return -1
    if isinstance(v, MaxKey):
        return 127
    return 0


def _op_type(values, spec):
    wanted = spec if isinstance(spec, list) else [spec]
    nums = set()
    for w in wanted:
        if w == "number":
            nums.update({1, 16, 18, 19})
        elif isinstance(w, str):
            if w not in _TYPE_ALIASES:
                raise CommandError(2, "Unknown type name alias: %s" % w)
            nums.add(_TYPE_ALIASES[w])
        else:
            nums.add(int(w))
    for v in values:
        if v is MISSING:
            continue
        if bson_type_number(v) in nums:
            return True
        if isinstance(v, list) and any(bson_type_number(x) in nums for x in v):
            return True
    return False


def _op_mod(values, arg):
    if not isinstance(arg, list) or len(arg) != 2:
        raise CommandError(2, "malformed mod, needs to be an array of two numbers")
    d, r = int(arg[0]), int(arg[1])
    if d == 0:
        raise CommandError(2, "divisor cannot be 0")
    for v in _candidates(values):
        if type_rank(v) == 3 and not isinstance(v, bool):
            n = int(_num(v))
            if math.fmod(n, d) == r:
                return True
    return False


_OPERATORS = {
    "$eq": _op_eq,
    "$ne": _op_ne,
    "$gt": _ordered(lambda c: c > 0),
    "$gte": _ordered(lambda c: c >= 0),
    "$lt": _ordered(lambda c: c < 0),
    "$lte": _ordered(lambda c: c <= 0),
    "$in": _op_in,
    "$nin": _op_nin,
    "$exists": _op_exists,
    "$not": _op_not,
    "$size": _op_size,
    "$all": _op_all,
    "$elemMatch": _op_elem_match,
    "$type": _op_type,
    "$regex": _regex_matches,
    "$mod": _op_mod,
}


# ---------------------------------------------------------------------------
# Expressions (just enough for $project/$addFields/$replaceRoot in change streams)
# ---------------------------------------------------------------------------

def eval_expr(expr, root):
    """Evaluate an aggregation expression: field paths, $literal, objects, arrays."""
    if isinstance(expr, str) and expr.startswith("$"):
        if expr in ("$$ROOT", "$$CURRENT"):
            return root
        if expr.startswith("$$ROOT.") or expr.startswith("$$CURRENT."):
            expr = "$" + expr.split(".", 1)[1]
        elif expr.startswith("$$"):
            raise CommandError(17276, "Use of undefined variable: %s" % expr[2:].split(".")[0])
        return _expr_path(root, expr[1:].split("."))
    if isinstance(expr, dict):
        if len(expr) == 1 and next(iter(expr)).startswith("$"):
            op, arg = next(iter(expr.items()))
            if op == "$literal":
                return arg
            if op == "$ifNull" and isinstance(arg, list) and arg:
                for e in arg:
                    v = eval_expr(e, root)
                    if v is not MISSING and v is not None:
                        return v
                return None
            raise CommandError(168, "devmongo: unsupported expression operator %s" % op)
        out = {}
        for k, v in expr.items():
            r = eval_expr(v, root)
            if r is not MISSING:
                out[k] = r
        return out
    if isinstance(expr, list):
        return [None if v is MISSING else v for v in (eval_expr(e, root) for e in expr)]
    return expr


def _expr_path(value, parts):
    # Aggregation field paths map over arrays (unlike query paths they do not add MISSING).
    for i, part in enumerate(parts):
        if isinstance(value, dict):
            value = value.get(part, MISSING)
            if value is MISSING:
                return MISSING
        elif isinstance(value, list):
            rest = parts[i:]
            out = []
            for el in value:
                if isinstance(el, (dict, list)):
                    r = _expr_path(el, rest)
                    if r is not MISSING:
                        out.append(r)
            return out
        else:
            return MISSING
    return value


# ---------------------------------------------------------------------------
# Projection ($project stage and find's projection)
# ---------------------------------------------------------------------------

class Projection:
    """A parsed inclusion or exclusion projection, applied with apply(doc)."""

    def __init__(self, spec, allow_expressions=True):
        if not isinstance(spec, dict):
            raise CommandError(2, "projection must be an object")
        self.tree = {}
        self.include_id = True
        self.inclusion = None
        for key, val in spec.items():
            if key == "_id" and (isinstance(val, (bool, int, float)) and not isinstance(val, dict)):
                self.include_id = bool(val)
                continue
            self._add(key, val, allow_expressions)
        if self.inclusion is None:
            # Only _id was mentioned: {_id: 0} is an exclusion, {_id: 1} an inclusion.
            self.inclusion = self.include_id and "_id" in spec
        if not self.inclusion and not self.include_id:
            self.tree["_id"] = False

    def _add(self, key, val, allow_expressions):
        parts = key.split(".")
        node = self.tree
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise CommandError(31250, "Path collision at %s" % key)
        leaf = parts[-1]
        if isinstance(val, dict) and not _is_operator_doc(val):
            # nested projection {a: {b: 1}} is the same as {"a.b": 1}
            for k, v in val.items():
                self._add(key + "." + k, v, allow_expressions)
            return
        if isinstance(val, (bool, int, float)) and not isinstance(val, dict):
            include = bool(val)
            mode = include
            node[leaf] = include
        else:
            if not allow_expressions:
                raise CommandError(2, "devmongo: projection expressions are not supported here")
            mode = True
            node[leaf] = ("expr", val)
        if self.inclusion is None:
            self.inclusion = mode
        elif self.inclusion != mode:
            if mode:
                raise CommandError(31254, "Cannot do inclusion on field %s in exclusion projection" % key)
            raise CommandError(31253, "Cannot do exclusion on field %s in inclusion projection" % key)

    def apply(self, doc):
        if self.inclusion:
            out = {}
            if self.include_id and "_id" in doc and "_id" not in self.tree:
                out["_id"] = doc["_id"]
            out.update(_include(doc, self.tree, doc))
            return out
        return _exclude(doc, self.tree)


def _include(doc, tree, root):
    out = {}
    for k, v in doc.items():
        spec = tree.get(k)
        if spec is True:
            out[k] = v
        elif isinstance(spec, dict):
            if isinstance(v, dict):
                out[k] = _include(v, spec, root)
            elif isinstance(v, list):
                out[k] = [_include(e, spec, root) for e in v if isinstance(e, dict)]
    for k, spec in tree.items():
        if isinstance(spec, tuple):
            r = eval_expr(spec[1], root)
            if r is not MISSING:
                out[k] = r
        elif isinstance(spec, dict) and _has_expr(spec) and k not in out:
            out[k] = _include({}, spec, root)
    return out


def _has_expr(tree):
    return any(isinstance(s, tuple) or (isinstance(s, dict) and _has_expr(s)) for s in tree.values())


def _exclude(doc, tree):
    out = {}
    for k, v in doc.items():
        spec = tree.get(k)
        if spec is False:
            continue
        if isinstance(spec, dict):
            if isinstance(v, dict):
                v = _exclude(v, spec)
            elif isinstance(v, list):
                v = [_exclude(e, spec) if isinstance(e, dict) else e for e in v]
        out[k] = v
    return out


def sort_key_compare(spec):
    """Return a cmp function for a sort specification like {a: 1, b: -1}."""
    items = list(spec.items())

    def cmp(d1, d2):
        for path, direction in items:
            v1, v2 = get_path(d1, path, None), get_path(d2, path, None)
            r = compare(v1, v2)
            if r:
                return r if direction >= 0 else -r
        return 0
    return cmp
