"""Databases, collections and documents, and every write that changes them.

Each write goes through this module so that it can append exactly one oplog entry per
changed document (or per DDL operation), as a replica-set primary does. Documents that
have been handed to the oplog are never mutated: an update builds a new dict, so an
event produced later still shows the document as it was at that time.
"""

import copy
import datetime
import uuid as uuidlib

from bson.binary import Binary, UUID_SUBTYPE
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.timestamp import Timestamp

from . import matcher
from .errors import CommandError
from .oplog import Entry

SYSTEM_DBS = ("admin", "config", "local")


def id_key(value):
    """A hashable key for an _id with MongoDB equality (1 == 1.0, but true != 1)."""
    rank = matcher.type_rank(value)
    if rank == 3:
        return (3, matcher._num(value))
    if isinstance(value, (dict, list)):
        return (rank, repr(_canon(value)))
    if isinstance(value, bytes):
        return (rank, matcher._bin_key(value))
    return (rank, value)


def _canon(v):
    if isinstance(v, dict):
        return tuple((k, _canon(x)) for k, x in v.items())
    if isinstance(v, list):
        return ("__array__",) + tuple(_canon(x) for x in v)
    if matcher.type_rank(v) == 3 and not isinstance(v, bool):
        return ("num", float(matcher._num(v)))
    return (type(v).__name__, v)


def new_uuid():
    return Binary(uuidlib.uuid4().bytes, UUID_SUBTYPE)


class Collection:
    def __init__(self, db, name, options=None, uuid=None):
        self.db = db
        self.name = name
        self.uuid = uuid or new_uuid()
        self.options = dict(options or {})
        self.docs = {}  # id_key -> document, in insertion order
        self.indexes = [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]

    @property
    def images_enabled(self):
        opt = self.options.get("changeStreamPreAndPostImages")
        return isinstance(opt, dict) and bool(opt.get("enabled"))


def fmt_value(v):
    """Short shell-like rendering of a value for error messages."""
    if isinstance(v, str):
        return '"%s"' % v
    if isinstance(v, dict):
        return "{ " + ", ".join("%s: %s" % (k, fmt_value(x)) for k, x in v.items()) + " }"
    if isinstance(v, ObjectId):
        return "ObjectId('%s')" % v
    return repr(v)


class Store:
    def __init__(self, oplog):
        self.oplog = oplog
        self.dbs = {}  # db name -> {coll name -> Collection}
        self.dirty = False

    # -- namespaces ---------------------------------------------------------------
    def get(self, db, coll):
        return self.dbs.get(db, {}).get(coll)

    def ensure(self, db, coll, options=None):
        """Return the collection, creating it (with a 'create' oplog entry) if needed."""
        c = self.get(db, coll)
        if c is None:
            check_ns(db, coll)
            c = Collection(db, coll, options)
            self.dbs.setdefault(db, {})[coll] = c
            self._log(Entry("create", db, coll, c.uuid, doc=dict(c.options)))
        return c

    def _log(self, entry):
        self.dirty = True
        return self.oplog.append(entry)

    # -- CRUD ---------------------------------------------------------------------
    def insert(self, db, coll, doc):
        """Insert one document (adding _id if absent); raises CommandError 11000 on dup."""
        if "_id" not in doc:
            doc = dict([("_id", ObjectId())] + list(doc.items()))
        elif next(iter(doc)) != "_id":
            doc = dict([("_id", doc["_id"])] + [(k, v) for k, v in doc.items() if k != "_id"])
        _check_storable(doc)
        if isinstance(doc["_id"], list):
            raise CommandError(2, "can't use an array for _id")
        c = self.get(db, coll)
        if c is not None and id_key(doc["_id"]) in c.docs:
            raise dup_key_error(db, coll, doc["_id"])
        c = self.ensure(db, coll)
        c.docs[id_key(doc["_id"])] = doc
        self._log(Entry("insert", db, coll, c.uuid, key={"_id": doc["_id"]}, doc=doc))
        return doc

    def find(self, db, coll, query):
        c = self.get(db, coll)
        if c is None:
            return []
        # Fast path for {_id: value}
        if len(query) == 1 and "_id" in query and not matcher._is_operator_doc(query["_id"]) \
                and not isinstance(query["_id"], (dict, list)):
            d = c.docs.get(id_key(query["_id"]))
            return [d] if d is not None else []
        return [d for d in c.docs.values() if matcher.match(d, query)]

    def update(self, db, coll, q, u, upsert=False, multi=False, array_filters=None):
        """Apply one update statement; return (n matched, n modified, upserted _id or None)."""
        is_replacement = isinstance(u, dict) and not (u and next(iter(u)).startswith("$"))
        if isinstance(u, list):
            raise CommandError(2, "devmongo: pipeline-style updates are not supported")
        if is_replacement and multi:
            raise CommandError(9, "multi update is not supported for replacement-style update")
        if not is_replacement:
            _validate_update(u)
        matched = self.find(db, coll, q)
        if not multi:
            matched = matched[:1]
        if not matched:
            if not upsert:
                return 0, 0, None
            base = _equality_fields(q)
            if is_replacement:
                new = dict(u)
                if "_id" in base and "_id" not in new:
                    new = dict([("_id", base["_id"])] + list(new.items()))
            else:
                new = apply_update(base, u, inserting=True)[0]
            doc = self.insert(db, coll, new)
            return 0, 0, doc["_id"]
        c = self.get(db, coll)
        modified = 0
        for old in matched:
            if is_replacement:
                new = dict(u)
                if "_id" in new and not matcher.values_equal(new["_id"], old["_id"]):
                    raise CommandError(66, "After applying the update, the (immutable) field '_id' "
                                           "was found to have been altered to _id: %s" % fmt_value(new["_id"]))
                new = dict([("_id", old["_id"])] + [(k, v) for k, v in new.items() if k != "_id"])
                _check_storable(new)
                if _same_doc(old, new):
                    continue
                c.docs[id_key(old["_id"])] = new
                self._log(Entry("replace", db, coll, c.uuid, key={"_id": old["_id"]}, doc=new,
                                pre=old if c.images_enabled else None))
            else:
                new, ud = apply_update(old, u)
                if "_id" in new and not matcher.values_equal(new.get("_id"), old["_id"]):
                    raise CommandError(66, "Performing an update on the path '_id' would modify the "
                                           "immutable field '_id'")
                if _same_doc(old, new):
                    continue
                c.docs[id_key(old["_id"])] = new
                self._log(Entry("update", db, coll, c.uuid, key={"_id": old["_id"]}, ud=ud,
                                pre=old if c.images_enabled else None,
                                post=new if c.images_enabled else None))
            modified += 1
        return len(matched), modified, None

    def delete(self, db, coll, q, limit):
        matched = self.find(db, coll, q)
        if limit:
            matched = matched[:1]
        c = self.get(db, coll)
        for old in matched:
            del c.docs[id_key(old["_id"])]
            self._log(Entry("delete", db, coll, c.uuid, key={"_id": old["_id"]},
                            pre=old if c.images_enabled else None))
        return len(matched)

    # -- DDL ------------------------------------------------------------------------
    def create(self, db, coll, options):
        if self.get(db, coll) is not None:
            raise CommandError(48, "Collection %s.%s already exists." % (db, coll))
        return self.ensure(db, coll, options)

    def drop(self, db, coll):
        c = self.get(db, coll)
        if c is None:
            raise CommandError(26, "ns not found")
        del self.dbs[db][coll]
        if not self.dbs[db]:
            del self.dbs[db]
        self._log(Entry("drop", db, coll, c.uuid))

    def drop_database(self, db):
        colls = list(self.dbs.get(db, {}))
        for name in colls:
            self.drop(db, name)
        # Like mongod, the dropDatabase entry is written even when nothing was dropped.
        self._log(Entry("dropDatabase", db))

    def rename(self, src_db, src, dst_db, dst, drop_target=False):
        c = self.get(src_db, src)
        if c is None:
            raise CommandError(26, "Source collection %s.%s does not exist" % (src_db, src))
        check_ns(dst_db, dst)
        if self.get(dst_db, dst) is not None:
            if not drop_target:
                raise CommandError(48, "target namespace exists")
            self.drop(dst_db, dst)
        del self.dbs[src_db][src]
        if not self.dbs[src_db]:
            del self.dbs[src_db]
        c.db, c.name = dst_db, dst
        self.dbs.setdefault(dst_db, {})[dst] = c
        self._log(Entry("rename", src_db, src, c.uuid, to={"db": dst_db, "coll": dst}))

    # -- persistence ----------------------------------------------------------------
    def snapshot_docs(self):
        """Yield one BSON-ready record per collection (for --dbpath)."""
        for db, colls in self.dbs.items():
            for name, c in colls.items():
                yield {"db": db, "coll": name, "uuid": c.uuid, "options": c.options,
                       "indexes": c.indexes, "docs": list(c.docs.values())}

    def load_collection(self, rec):
        c = Collection(rec["db"], rec["coll"], rec.get("options"), rec.get("uuid"))
        c.indexes = rec.get("indexes") or c.indexes
        for d in rec["docs"]:
            c.docs[id_key(d["_id"])] = d
        self.dbs.setdefault(c.db, {})[c.name] = c


def check_ns(db, coll):
    if not db or "." in db or " " in db or "$" in db:
        raise CommandError(73, "Invalid database name: '%s'" % db)
    if not coll or "$" in coll or "\x00" in coll:
        raise CommandError(73, "Invalid collection name: %s" % coll)


def dup_key_error(db, coll, _id):
    return CommandError(11000, "E11000 duplicate key error collection: %s.%s index: _id_ dup key: "
                               "{ _id: %s }" % (db, coll, fmt_value(_id)),
                        extra={"keyPattern": {"_id": 1}, "keyValue": {"_id": _id}})


def _check_storable(doc):
    for k in doc:
        if k.startswith("$"):
            raise CommandError(52, "Document can't have $ prefixed field names: %s" % k)


def _same_doc(a, b):
    return matcher.compare(a, b) == 0 and _same_types(a, b)


def _same_types(a, b):
    # compare() says 1 == 1.0; an update from int to double is still a modification.
    if isinstance(a, dict):
        return isinstance(b, dict) and all(_same_types(a[k], b.get(k)) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and all(_same_types(x, y) for x, y in zip(a, b))
    return type(a) is type(b)


def _equality_fields(q):
    """The document an upsert starts from: the filter's equality conditions."""
    out = {}
    for k, v in q.items():
        if k == "$and" and isinstance(v, list):
            for sub in v:
                for k2, v2 in _equality_fields(sub).items():
                    out[k2] = v2
        elif k.startswith("$"):
            continue
        elif matcher._is_operator_doc(v):
            if "$eq" in v:
                _set_path(out, k.split("."), v["$eq"])
        else:
            _set_path(out, k.split("."), v)
    if "_id" in out:
        out = dict([("_id", out["_id"])] + [(k, v) for k, v in out.items() if k != "_id"])
    return out


# ---------------------------------------------------------------------------
# Update operators
# ---------------------------------------------------------------------------

_UPDATE_OPS = ("$set", "$unset", "$inc", "$mul", "$min", "$max", "$rename", "$setOnInsert",
               "$push", "$addToSet", "$pull", "$pop", "$currentDate")


def _validate_update(u):
    if not u:
        raise CommandError(9, "Update document must not be empty")
    seen = {}
    for op, fields in u.items():
        if op not in _UPDATE_OPS:
            if op.startswith("$"):
                raise CommandError(9, "Unknown modifier: %s. Expected a valid update modifier or "
                                      "pipeline-style update specified as an array" % op)
            raise CommandError(9, "Unknown modifier: %s" % op)
        if not isinstance(fields, dict):
            raise CommandError(9, "Modifiers operate on fields but we found type %s instead"
                               % type(fields).__name__)
        for path in fields:
            for other in seen:
                if path == other or path.startswith(other + ".") or other.startswith(path + "."):
                    raise CommandError(40, "Updating the path '%s' would create a conflict at '%s'"
                                       % (path, other))
            seen[path] = op


def apply_update(old, u, inserting=False):
    """Apply update operators to a copy of old; return (new doc, updateDescription)."""
    doc = copy.deepcopy(old)
    updated = {}
    removed = []
    for op, fields in u.items():
        if op == "$setOnInsert" and not inserting:
            continue
        for path, arg in fields.items():
            parts = path.split(".")
            if op in ("$set", "$setOnInsert"):
                _set_path(doc, parts, copy.deepcopy(arg))
            elif op == "$unset":
                if _unset_path(doc, parts):
                    removed.append(path)
                continue
            elif op in ("$inc", "$mul"):
                if matcher.type_rank(arg) != 3 or isinstance(arg, bool):
                    raise CommandError(14, "Cannot %s with non-numeric argument: {%s: %s}"
                                       % ("increment" if op == "$inc" else "multiply", path, fmt_value(arg)))
                cur = matcher.get_path(doc, path)
                if cur is matcher.MISSING:
                    new = arg if op == "$inc" else _zero_like(arg)
                elif matcher.type_rank(cur) != 3 or isinstance(cur, bool):
                    raise CommandError(14, "Cannot apply %s to a value of non-numeric type. "
                                       "{_id: %s} has the field '%s' of non-numeric type %s"
                                       % (op, fmt_value(old.get("_id")), parts[-1], type(cur).__name__))
                else:
                    new = _arith(cur, arg, op)
                _set_path(doc, parts, new)
            elif op in ("$min", "$max"):
                cur = matcher.get_path(doc, path)
                c = None if cur is matcher.MISSING else matcher.compare(arg, cur)
                if c is None or (op == "$min" and c < 0) or (op == "$max" and c > 0):
                    _set_path(doc, parts, copy.deepcopy(arg))
                else:
                    continue
            elif op == "$rename":
                cur = matcher.get_path(doc, path)
                if cur is matcher.MISSING:
                    continue
                _unset_path(doc, parts)
                removed.append(path)
                _set_path(doc, arg.split("."), cur)
                updated[arg] = cur
                continue
            elif op == "$currentDate":
                now = datetime.datetime.now(datetime.timezone.utc)
                if isinstance(arg, dict) and arg.get("$type") == "timestamp":
                    now = Timestamp(now, 0)
                _set_path(doc, parts, now)
            elif op in ("$push", "$addToSet"):
                cur = matcher.get_path(doc, path)
                if cur is matcher.MISSING:
                    cur = []
                elif not isinstance(cur, list):
                    raise CommandError(2, "The field '%s' must be an array but is of type %s in "
                                          "document {_id: %s}" % (path, type(cur).__name__, fmt_value(old.get("_id"))))
                items = arg["$each"] if isinstance(arg, dict) and "$each" in arg else [arg]
                cur = list(cur)
                for it in items:
                    if op == "$push" or not any(matcher.values_equal(it, x) for x in cur):
                        cur.append(copy.deepcopy(it))
                _set_path(doc, parts, cur)
            elif op == "$pull":
                cur = matcher.get_path(doc, path)
                if not isinstance(cur, list):
                    continue
                if isinstance(arg, dict):
                    keep = [x for x in cur if not _pull_matches(x, arg)]
                else:
                    keep = [x for x in cur if not matcher.values_equal(x, arg)]
                if len(keep) == len(cur):
                    continue
                _set_path(doc, parts, keep)
            elif op == "$pop":
                cur = matcher.get_path(doc, path)
                if not isinstance(cur, list) or not cur:
                    continue
                _set_path(doc, parts, cur[1:] if arg == -1 else cur[:-1])
            updated[path] = matcher.get_path(doc, path)
    for p in removed:
        updated.pop(p, None)
    ud = {"updatedFields": updated, "removedFields": removed, "truncatedArrays": []}
    return doc, ud


def _pull_matches(x, cond):
    if matcher._is_operator_doc(cond):
        return matcher._match_operators([x], cond)
    return isinstance(x, dict) and matcher.match(x, cond)


def _zero_like(v):
    return 0.0 if isinstance(v, float) else (Int64(0) if isinstance(v, Int64) else 0)


def _arith(cur, arg, op):
    res = cur + arg if op == "$inc" else cur * arg
    if isinstance(cur, float) or isinstance(arg, float):
        return float(res)
    if isinstance(cur, Int64) or isinstance(arg, Int64) or not (-2**31 <= res < 2**31):
        return Int64(res)
    return int(res)


def _set_path(doc, parts, value):
    cur = doc
    for i, part in enumerate(parts[:-1]):
        if isinstance(cur, dict):
            nxt = cur.get(part, matcher.MISSING)
            if nxt is matcher.MISSING:
                nxt = {}
                cur[part] = nxt
        elif isinstance(cur, list) and part.isdigit():
            idx = int(part)
            while len(cur) <= idx:
                cur.append(None)
            if cur[idx] is None:
                cur[idx] = {}
            nxt = cur[idx]
        else:
            raise CommandError(28, "Cannot create field '%s' in element {%s: %s}"
                               % (part, parts[i - 1] if i else "", fmt_value(cur)))
        if not isinstance(nxt, (dict, list)):
            raise CommandError(28, "Cannot create field '%s' in element {%s: %s}"
                               % (parts[i + 1], part, fmt_value(nxt)))
        cur = nxt
    last = parts[-1]
    if isinstance(cur, list):
        if not last.isdigit():
            raise CommandError(28, "Cannot create field '%s' in element {%s: %s}"
                               % (last, parts[-2] if len(parts) > 1 else "", fmt_value(cur)))
        idx = int(last)
        while len(cur) <= idx:
            cur.append(None)
        cur[idx] = value
    else:
        cur[last] = value


def _unset_path(doc, parts):
    cur = doc
    for part in parts[:-1]:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return False
    last = parts[-1]
    if isinstance(cur, dict) and last in cur:
        del cur[last]
        return True
    if isinstance(cur, list) and last.isdigit() and int(last) < len(cur):
        cur[int(last)] = None
        return True
    return False
