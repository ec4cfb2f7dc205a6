"""Command dispatch: one function per MongoDB command, replies shaped like mongod 6.0's.

`run_command` is the single entry point used by the connection loop. It applies the
failCommand fail point, runs the handler, and adds `$clusterTime`/`operationTime` the
way a replica-set member does. Handlers receive (server, conn, db, cmd) and return the
reply document (without ok) or raise CommandError.
"""

import asyncio
import datetime
import os
import random
import sys
import time
import traceback
import uuid as uuidlib

from bson.binary import Binary, UUID_SUBTYPE
from bson.int64 import Int64
from bson.objectid import ObjectId

from . import aggregate as agg
from . import matcher
from .changestream import ChangeStream
from .errors import CommandError
from .store import SYSTEM_DBS

MAX_BSON = 16777216
MAX_MESSAGE = 48000000
MAX_BATCH = 100000
ELECTION_ID = ObjectId("7fffffff0000000000000001")
VERSION = "6.0.14"
DEFAULT_BATCH = 101
GETMORE_MAX_DOCS = 10000
DEFAULT_AWAIT_MS = 1000

ErrorCodeInvalidOptions = 72

CLOSE = object()  # returned by run_command: close the connection without replying

# Top-level aggregate fields a 6.0 server accepts; anything else is error 40415 (libmongoc
# copies unknown watch options here, so a misplaced option must fail as it would for real).
AGGREGATE_FIELDS = {
    "aggregate", "pipeline", "explain", "allowDiskUse", "cursor", "maxTimeMS",
    "bypassDocumentValidation", "readConcern", "collation", "hint", "writeConcern", "let",
    "comment", "$db", "lsid", "txnNumber", "$clusterTime", "$readPreference", "autocommit",
    "startTransaction", "apiVersion", "apiStrict", "apiDeprecationErrors", "$audit", "$client",
    "needsMerge", "fromMongos", "exchange", "isMapReduceCommand", "collectionUUID", "$queryOptions",
    "$configServerState", "$topologyTime", "$configTime", "encryptionInformation",
}


class FindCursor:
    """A cursor over a precomputed result list (find, listCollections, plain aggregate)."""

    is_change_stream = False

    def __init__(self, cursor_id, ns, docs):
        self.id = cursor_id
        self.ns = ns
        self.docs = docs
        self.pos = 0
        self.last_used = time.monotonic()

    def take(self, n):
        batch = self.docs[self.pos:self.pos + n]
        self.pos += len(batch)
        return batch

    @property
    def exhausted(self):
        return self.pos >= len(self.docs)


def _new_cursor_id(server):
    while True:
        cid = Int64(random.randint(1, 2**62))
        if cid not in server.cursors:
            return cid


def _coll_name(cmd, name, db):
    coll = cmd.get(name)
    if not isinstance(coll, str) or not coll:
        raise CommandError(73, "collection name has invalid type %s" % type(coll).__name__)
    return coll


def _cursor_reply(cursor_id, ns, batch, first=True, extra=None):
    cur = {"firstBatch" if first else "nextBatch": batch, "id": Int64(cursor_id), "ns": ns}
    if extra:
        cur.update(extra)
    return {"cursor": cur}


def _paginate(server, ns, docs, batch_size, single_batch=False):
    n = DEFAULT_BATCH if batch_size is None else int(batch_size)
    if n < 0:
        raise CommandError(51024, "BSON field 'batchSize' value must be >= 0, actual value '%d'" % n)
    first = docs[:n]
    if single_batch or len(first) == len(docs):
        return _cursor_reply(0, ns, first)
    cur = FindCursor(_new_cursor_id(server), ns, docs)
    cur.pos = len(first)
    server.cursors[cur.id] = cur
    return _cursor_reply(cur.id, ns, first)


# ---------------------------------------------------------------------------
# Handshake and server information
# ---------------------------------------------------------------------------

def cmd_hello(server, conn, db, cmd, name="hello"):
    if conn.app_name is None:
        client = cmd.get("client")
        if isinstance(client, dict):
            conn.app_name = (client.get("application") or {}).get("name")
    me = server.advertised
    reply = {"helloOk": True}
    if name == "hello":
        reply["isWritablePrimary"] = True
    else:
        reply["ismaster"] = True
    reply.update({
        "secondary": False,
        "setName": "rs0",
        "setVersion": 1,
        "hosts": [me],
        "primary": me,
        "me": me,
        "electionId": ELECTION_ID,
        "lastWrite": {"opTime": {"ts": server.oplog.current_ts(), "t": Int64(1)},
                      "lastWriteDate": datetime.datetime.now(datetime.timezone.utc)},
        "maxBsonObjectSize": MAX_BSON,
        "maxMessageSizeBytes": MAX_MESSAGE,
        "maxWriteBatchSize": MAX_BATCH,
        "localTime": datetime.datetime.now(datetime.timezone.utc),
        "logicalSessionTimeoutMinutes": 30,
        "connectionId": conn.id,
        "minWireVersion": 0,
        "maxWireVersion": 17,
        "readOnly": False,
    })
    # No topologyVersion: we do not implement awaitable hello, and advertising it would
    # make driver monitors stream hello requests that we answer at once (busy loop).
    return reply


def cmd_ismaster(server, conn, db, cmd):
    return cmd_hello(server, conn, db, cmd, name="isMaster")


def cmd_ping(server, conn, db, cmd):
    return {}


def cmd_build_info(server, conn, db, cmd):
    return {"version": VERSION, "gitVersion": "devmongo", "modules": [], "allocator": "system",
            "javascriptEngine": "none", "sysInfo": "deprecated",
            "versionArray": [6, 0, 14, 0], "openssl": {"running": "disabled"},
            "buildEnvironment": {}, "bits": 64, "debug": False, "maxBsonObjectSize": MAX_BSON,
            "storageEngines": ["devmongo"]}


def cmd_get_parameter(server, conn, db, cmd):
    known = {"featureCompatibilityVersion": {"version": "6.0"},
             "logLevel": 0, "enableTestCommands": True}
    if cmd.get("getParameter") == "*":
        return dict(known)
    out = {}
    for k in cmd:
        if k in known:
            out[k] = known[k]
    if not out:
        raise CommandError(72, "no option found to get")
    return out


def cmd_get_log(server, conn, db, cmd):
    if cmd.get("getLog") == "*":
        return {"names": ["global", "startupWarnings"]}
    return {"totalLinesWritten": 0, "log": []}


def cmd_noop(server, conn, db, cmd):
    return {}


def cmd_start_session(server, conn, db, cmd):
    return {"id": {"id": Binary(uuidlib.uuid4().bytes, UUID_SUBTYPE)}, "timeoutMinutes": 30}


def cmd_whatsmyuri(server, conn, db, cmd):
    return {"you": conn.peer}


def cmd_server_status(server, conn, db, cmd):
    return {"host": server.advertised, "version": VERSION, "process": "mongod", "pid": Int64(os.getpid()),
            "uptime": float(time.time() - server.started), "localTime": datetime.datetime.now(datetime.timezone.utc),
            "connections": {"current": len(server.connections), "available": 1000},
            "repl": {"setName": "rs0", "isWritablePrimary": True, "primary": server.advertised,
                     "hosts": [server.advertised], "me": server.advertised},
            "storageEngine": {"name": "devmongo", "persistent": bool(server.dbpath)}}


def cmd_repl_get_status(server, conn, db, cmd):
    now = datetime.datetime.now(datetime.timezone.utc)
    optime = {"ts": server.oplog.current_ts(), "t": Int64(1)}
    return {"set": "rs0", "date": now, "myState": 1, "term": Int64(1),
            "members": [{"_id": 0, "name": server.advertised, "health": 1.0, "state": 1,
                         "stateStr": "PRIMARY", "uptime": int(time.time() - server.started),
                         "optime": optime, "self": True, "electionId": ELECTION_ID}]}


def cmd_connection_status(server, conn, db, cmd):
    return {"authInfo": {"authenticatedUsers": [], "authenticatedUserRoles": []}}


def cmd_get_cmd_line_opts(server, conn, db, cmd):
    return {"argv": server.argv, "parsed": {"net": {"port": server.port}, "replication": {"replSet": "rs0"}}}


def cmd_auth_unsupported(server, conn, db, cmd):
    raise CommandError(18, "devmongo does not support authentication")


# ---------------------------------------------------------------------------
# CRUD
# ---------------------------------------------------------------------------

def _check_write_target(db, coll):
    if coll.startswith("system."):
        raise CommandError(73, "cannot write to '%s.%s'" % (db, coll))


def _check_txn(cmd):
    if cmd.get("startTransaction") or cmd.get("autocommit") is False:
        raise CommandError(20, "devmongo: multi-document transactions are not supported")


def cmd_insert(server, conn, db, cmd):
    coll = _coll_name(cmd, "insert", db)
    _check_txn(cmd)
    _check_write_target(db, coll)
    docs = cmd.get("documents") or []
    ordered = cmd.get("ordered", True)
    n = 0
    errors = []
    for i, doc in enumerate(docs):
        try:
            server.store.insert(db, coll, doc)
            n += 1
        except CommandError as e:
            errors.append(_write_error(i, e))
            if ordered:
                break
    reply = {"n": n}
    if errors:
        reply["writeErrors"] = errors
    return reply


def _write_error(index, e):
    we = {"index": index, "code": e.code, "errmsg": e.errmsg}
    we.update(e.extra)
    return we


def cmd_update(server, conn, db, cmd):
    coll = _coll_name(cmd, "update", db)
    _check_txn(cmd)
    _check_write_target(db, coll)
    ordered = cmd.get("ordered", True)
    n = modified = 0
    upserted = []
    errors = []
    for i, st in enumerate(cmd.get("updates") or []):
        try:
            if "q" not in st or "u" not in st:
                raise CommandError(40414, "BSON field 'update.updates.%s' is missing but a required field"
                                   % ("q" if "q" not in st else "u"))
            matcher.validate_filter(st["q"])
            m, mod, up_id = server.store.update(db, coll, st["q"], st["u"], upsert=bool(st.get("upsert")),
                                                multi=bool(st.get("multi")))
            if up_id is not None:
                upserted.append({"index": i, "_id": up_id})
                n += 1
            n += m
            modified += mod
        except CommandError as e:
            errors.append(_write_error(i, e))
            if ordered:
                break
    reply = {"n": n, "nModified": modified}
    if upserted:
        reply["upserted"] = upserted
    if errors:
        reply["writeErrors"] = errors
    return reply


def cmd_delete(server, conn, db, cmd):
    coll = _coll_name(cmd, "delete", db)
    _check_txn(cmd)
    ordered = cmd.get("ordered", True)
    n = 0
    errors = []
    for i, st in enumerate(cmd.get("deletes") or []):
        try:
            if "q" not in st or "limit" not in st:
                raise CommandError(40414, "BSON field 'delete.deletes.%s' is missing but a required field"
                                   % ("q" if "q" not in st else "limit"))
            matcher.validate_filter(st["q"])
            n += server.store.delete(db, coll, st["q"], int(st["limit"]))
        except CommandError as e:
            errors.append(_write_error(i, e))
            if ordered:
                break
    reply = {"n": n}
    if errors:
        reply["writeErrors"] = errors
    return reply


def cmd_find(server, conn, db, cmd):
    coll = _coll_name(cmd, "find", db)
    filt = cmd.get("filter") or {}
    matcher.validate_filter(filt)
    limit = int(cmd.get("limit", 0) or 0)
    docs = agg.find_docs(server.store, db, coll, filt, cmd.get("sort"), int(cmd.get("skip", 0) or 0),
                         limit, cmd.get("projection"))
    batch_size = cmd.get("batchSize")
    single = bool(cmd.get("singleBatch")) or limit < 0
    return _paginate(server, "%s.%s" % (db, coll), docs, batch_size, single)


def cmd_count(server, conn, db, cmd):
    coll = _coll_name(cmd, "count", db)
    q = cmd.get("query") or {}
    docs = agg.find_docs(server.store, db, coll, q, None, int(cmd.get("skip", 0) or 0),
                         int(cmd.get("limit", 0) or 0))
    return {"n": len(docs)}


def cmd_distinct(server, conn, db, cmd):
    coll = _coll_name(cmd, "distinct", db)
    key = cmd.get("key")
    values = []
    for d in server.store.find(db, coll, cmd.get("query") or {}):
        for v in matcher.path_values(d, key):
            for x in (v if isinstance(v, list) else [v]):
                if x is not matcher.MISSING and not any(matcher.values_equal(x, y) for y in values):
                    values.append(x)
    return {"values": values}


def cmd_find_and_modify(server, conn, db, cmd):
    coll = _coll_name(cmd, "findAndModify", db)
    _check_txn(cmd)
    q = cmd.get("query") or {}
    matcher.validate_filter(q)
    docs = agg.find_docs(server.store, db, coll, q, cmd.get("sort"), 0, 1)
    fields = cmd.get("fields")
    proj = matcher.Projection(fields, allow_expressions=False) if fields else None
    store = server.store
    if cmd.get("remove"):
        if not docs:
            return {"lastErrorObject": {"n": 0}, "value": None}
        old = docs[0]
        store.delete(db, coll, {"_id": old["_id"]}, 1)
        return {"lastErrorObject": {"n": 1}, "value": proj.apply(old) if proj else old}
    if "update" not in cmd:
        raise CommandError(9, "Either an update or remove=true must be specified")
    u = cmd["update"]
    if docs:
        old = docs[0]
        store.update(db, coll, {"_id": old["_id"]}, u)
        new = store.find(db, coll, {"_id": old["_id"]})[0]
        value = new if cmd.get("new") else old
        return {"lastErrorObject": {"n": 1, "updatedExisting": True},
                "value": proj.apply(value) if proj else value}
    if not cmd.get("upsert"):
        return {"lastErrorObject": {"n": 0, "updatedExisting": False}, "value": None}
    _, _, up_id = store.update(db, coll, q, u, upsert=True)
    value = store.find(db, coll, {"_id": up_id})[0] if cmd.get("new") else None
    return {"lastErrorObject": {"n": 1, "updatedExisting": False, "upserted": up_id},
            "value": proj.apply(value) if (proj and value) else value}


# ---------------------------------------------------------------------------
# Cursors: aggregate, getMore, killCursors
# ---------------------------------------------------------------------------

def cmd_aggregate(server, conn, db, cmd):
    for k in cmd:
        if k not in AGGREGATE_FIELDS:
            raise CommandError(40415, "BSON field 'aggregate.%s' is an unknown field." % k)
    target = cmd.get("aggregate")
    pipeline = cmd.get("pipeline")
    if not isinstance(pipeline, list):
        raise CommandError(14, "'pipeline' option must be specified as an array")
    if "cursor" not in cmd and not cmd.get("explain"):
        raise CommandError(9, "The 'cursor' option is required, except for aggregate with the explain argument")
    cursor_opts = cmd.get("cursor") or {}
    batch_size = cursor_opts.get("batchSize")
    if pipeline and isinstance(pipeline[0], dict) and "$changeStream" in pipeline[0]:
        return _open_change_stream(server, db, target, pipeline, batch_size)
    for st in pipeline[1:]:
        if isinstance(st, dict) and "$changeStream" in st:
            raise CommandError(40602, "$changeStream is only valid as the first stage in a pipeline.")
    if not isinstance(target, str):
        raise CommandError(73, "devmongo: collectionless aggregate is only supported for $changeStream")
    docs = agg.find_docs(server.store, db, target, {})
    docs = agg.run_pipeline(docs, pipeline)
    return _paginate(server, "%s.%s" % (db, target), docs, batch_size)


def _open_change_stream(server, db, target, pipeline, batch_size):
    stage = pipeline[0]["$changeStream"]
    cluster = bool(isinstance(stage, dict) and stage.get("allChangesForCluster"))
    if cluster:
        if db != "admin" or target != 1:
            raise CommandError(ErrorCodeInvalidOptions, "A $changeStream with 'allChangesForCluster:true' may "
                                                        "only be opened on the 'admin' database, and with no "
                                                        "collection name")
        coll = None
    elif target == 1 or target == 1.0:
        if db == "admin":
            raise CommandError(ErrorCodeInvalidOptions, "$changeStream on an entire database is not allowed for "
                                                        "the admin database, use {allChangesForCluster:true} instead")
        coll = None
    elif isinstance(target, str):
        coll = target
        if db in SYSTEM_DBS:
            raise CommandError(73, "$changeStream may not be opened on the internal %s database" % db)
        if coll.startswith("system."):
            raise CommandError(73, "$changeStream may not be opened on the internal %s.%s collection"
                               % (db, coll))
    else:
        raise CommandError(73, "Invalid aggregate namespace")
    if db in ("config", "local") and coll is None:
        raise CommandError(73, "$changeStream may not be opened on the internal %s database" % db)
    cs = ChangeStream(server, _new_cursor_id(server), db, coll, stage, pipeline[1:], cluster)
    n = DEFAULT_BATCH if batch_size is None else int(batch_size)
    try:
        events = cs.next_batch(n) if n > 0 else []
    except CommandError as e:
        raise _executor_error(e, "aggregate command on namespace: %s" % cs.ns)
    if not cs.closed:
        server.cursors[cs.id] = cs
    return _cursor_reply(0 if cs.closed else cs.id, cs.ns, events,
                         extra={"postBatchResumeToken": cs.resume_token()})


def _executor_error(e, where):
    """mongod adds where it happened to errors raised while the pipeline runs (as opposed
    to while it is parsed): "Executor error during getMore :: caused by :: ..." (getmore_cmd.cpp),
    "Executor error during aggregate command on namespace: db.coll :: caused by :: ..."."""
    e.errmsg = "Executor error during %s :: caused by :: %s" % (where, e.errmsg)
    return e


async def cmd_get_more(server, conn, db, cmd):
    cid = cmd.get("getMore")
    if not isinstance(cid, int) or isinstance(cid, bool):
        raise CommandError(14, "Field 'getMore' must be of type long in: %r" % (cid,))
    cur = server.cursors.get(cid)
    if cur is None:
        raise CommandError(43, "cursor id %d not found" % cid)
    coll = cmd.get("collection")
    if not isinstance(coll, str):
        raise CommandError(40414, "BSON field 'getMore.collection' is missing but a required field")
    cur.last_used = time.monotonic()
    batch_size = cmd.get("batchSize")
    try:
        server.failpoints.fail_getmore_after_checkout(cur, conn)
        if not getattr(cur, "is_change_stream", False):
            n = int(batch_size) if batch_size else GETMORE_MAX_DOCS
            batch = cur.take(n)
            if cur.exhausted:
                server.cursors.pop(cid, None)
                return _cursor_reply(0, cur.ns, batch, first=False)
            return _cursor_reply(cur.id, cur.ns, batch, first=False)
        return await _change_stream_get_more(server, cur, batch_size, cmd.get("maxTimeMS"))
    except CommandError:
        # As on mongod (getmore_cmd.cpp, cursorDeleter): an error once the cursor is
        # checked out deletes it; the next getMore gets 43 CursorNotFound.
        server.cursors.pop(cid, None)
        if getattr(cur, "is_change_stream", False):
            cur.closed = True
        raise


async def _change_stream_get_more(server, cs, batch_size, max_time_ms):
    """Return events as soon as there are any, else wait (woken by writes) up to maxTimeMS."""
    limit = int(batch_size) if batch_size else GETMORE_MAX_DOCS
    wait_ms = DEFAULT_AWAIT_MS if max_time_ms is None else max(0, int(max_time_ms))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_ms / 1000.0
    while True:
        waiter = server.oplog.waiter()  # take it before scanning so no write is missed
        try:
            events = cs.next_batch(limit)
        except CommandError as e:
            raise _executor_error(e, "getMore")
        if events or cs.closed:
            break
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            await asyncio.wait_for(waiter.wait(), remaining)
        except asyncio.TimeoutError:
            pass
        if server.cursors.get(cs.id) is not cs:  # killed while we waited
            break
    if cs.closed:
        server.cursors.pop(cs.id, None)
    return _cursor_reply(0 if cs.closed else cs.id, cs.ns, events, first=False,
                         extra={"postBatchResumeToken": cs.resume_token()})


def cmd_kill_cursors(server, conn, db, cmd):
    killed, not_found = [], []
    for cid in cmd.get("cursors") or []:
        cur = server.cursors.pop(cid, None)
        if cur is None:
            not_found.append(Int64(cid))
        else:
            killed.append(Int64(cid))
            if getattr(cur, "is_change_stream", False):
                cur.closed = True
    if killed:
        server.oplog.notify()  # let a getMore waiting on a killed cursor return
    return {"cursorsKilled": killed, "cursorsNotFound": not_found, "cursorsAlive": [],
            "cursorsUnknown": []}


# ---------------------------------------------------------------------------
# Namespaces
# ---------------------------------------------------------------------------

def cmd_create(server, conn, db, cmd):
    coll = _coll_name(cmd, "create", db)
    opts = {k: v for k, v in cmd.items()
            if k not in ("create", "$db", "lsid", "$clusterTime", "$readPreference", "writeConcern",
                         "txnNumber", "comment")}
    server.store.create(db, coll, opts)
    return {}


def cmd_coll_mod(server, conn, db, cmd):
    coll = _coll_name(cmd, "collMod", db)
    c = server.store.get(db, coll)
    if c is None:
        raise CommandError(26, "ns does not exist")
    if "changeStreamPreAndPostImages" in cmd:
        c.options["changeStreamPreAndPostImages"] = cmd["changeStreamPreAndPostImages"]
        server.store.dirty = True
    return {}


def cmd_drop(server, conn, db, cmd):
    coll = _coll_name(cmd, "drop", db)
    c = server.store.get(db, coll)
    nindexes = len(c.indexes) if c else 0
    server.store.drop(db, coll)
    return {"nIndexesWas": nindexes, "ns": "%s.%s" % (db, coll)}


def cmd_drop_database(server, conn, db, cmd):
    if db in ("admin", "config", "local"):
        raise CommandError(20, "Dropping the '%s' database is prohibited." % db)
    server.store.drop_database(db)
    return {"dropped": db}


def cmd_rename_collection(server, conn, db, cmd):
    if db != "admin":
        raise CommandError(13, "renameCollection may only be run against the admin database.")
    src, dst = cmd.get("renameCollection"), cmd.get("to")
    if not isinstance(src, str) or not isinstance(dst, str) or "." not in src or "." not in dst:
        raise CommandError(73, "Invalid namespace specified")
    sdb, scoll = src.split(".", 1)
    ddb, dcoll = dst.split(".", 1)
    if src == dst:
        raise CommandError(20, "Can't rename a collection to itself")
    server.store.rename(sdb, scoll, ddb, dcoll, bool(cmd.get("dropTarget")))
    return {}


def cmd_list_collections(server, conn, db, cmd):
    filt = cmd.get("filter") or {}
    matcher.validate_filter(filt)
    out = []
    for name, c in server.store.dbs.get(db, {}).items():
        info = {"name": name, "type": "collection", "options": dict(c.options),
                "info": {"readOnly": False, "uuid": c.uuid},
                "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}}
        if matcher.match(info, filt):
            out.append({"name": name, "type": "collection"} if cmd.get("nameOnly") else info)
    batch = (cmd.get("cursor") or {}).get("batchSize")
    return _paginate(server, "%s.$cmd.listCollections" % db, out, batch)


def cmd_list_databases(server, conn, db, cmd):
    filt = cmd.get("filter") or {}
    dbs = []
    for name, colls in server.store.dbs.items():
        size = sum(len(c.docs) for c in colls.values()) * 100
        entry = {"name": name, "sizeOnDisk": Int64(size or 4096), "empty": False}
        if matcher.match(entry, filt):
            dbs.append({"name": name} if cmd.get("nameOnly") else entry)
    reply = {"databases": dbs}
    if not cmd.get("nameOnly"):
        reply["totalSize"] = Int64(sum(d["sizeOnDisk"] for d in dbs))
        reply["totalSizeMb"] = Int64(0)
    return reply


def cmd_create_indexes(server, conn, db, cmd):
    coll = _coll_name(cmd, "createIndexes", db)
    existed = server.store.get(db, coll) is not None
    c = server.store.ensure(db, coll)
    before = len(c.indexes)
    for spec in cmd.get("indexes") or []:
        if not any(ix["name"] == spec.get("name") for ix in c.indexes):
            c.indexes.append(dict({"v": 2}, **spec))
    server.store.dirty = True
    return {"numIndexesBefore": before, "numIndexesAfter": len(c.indexes),
            "createdCollectionAutomatically": not existed}


def cmd_list_indexes(server, conn, db, cmd):
    coll = _coll_name(cmd, "listIndexes", db)
    c = server.store.get(db, coll)
    if c is None:
        raise CommandError(26, "ns does not exist: %s.%s" % (db, coll))
    return _paginate(server, "%s.%s" % (db, coll), list(c.indexes), (cmd.get("cursor") or {}).get("batchSize"))


def cmd_drop_indexes(server, conn, db, cmd):
    coll = _coll_name(cmd, "dropIndexes", db)
    c = server.store.get(db, coll)
    if c is None:
        raise CommandError(26, "ns not found %s.%s" % (db, coll))
    n = len(c.indexes)
    which = cmd.get("index")
    c.indexes = [ix for ix in c.indexes
                 if ix["name"] == "_id_" or not (which == "*" or ix["name"] == which or ix["key"] == which)]
    return {"nIndexesWas": n}


def cmd_configure_fail_point(server, conn, db, cmd):
    if db != "admin":
        raise CommandError(13, "configureFailPoint may only be run against the admin database.")
    return {"count": server.failpoints.configure(cmd)}


def cmd_transactions_unsupported(server, conn, db, cmd):
    raise CommandError(251, "devmongo: transactions are not supported")


COMMANDS = {
    "hello": cmd_hello,
    "isMaster": cmd_ismaster,
    "ismaster": cmd_ismaster,
    "ping": cmd_ping,
    "buildInfo": cmd_build_info,
    "buildinfo": cmd_build_info,
    "getParameter": cmd_get_parameter,
    "getLog": cmd_get_log,
    "endSessions": cmd_noop,
    "killSessions": cmd_noop,
    "refreshSessions": cmd_noop,
    "startSession": cmd_start_session,
    "whatsmyuri": cmd_whatsmyuri,
    "serverStatus": cmd_server_status,
    "replSetGetStatus": cmd_repl_get_status,
    "connectionStatus": cmd_connection_status,
    "getCmdLineOpts": cmd_get_cmd_line_opts,
    "saslStart": cmd_auth_unsupported,
    "authenticate": cmd_auth_unsupported,
    "insert": cmd_insert,
    "update": cmd_update,
    "delete": cmd_delete,
    "find": cmd_find,
    "count": cmd_count,
    "distinct": cmd_distinct,
    "findAndModify": cmd_find_and_modify,
    "findandmodify": cmd_find_and_modify,
    "aggregate": cmd_aggregate,
    "getMore": cmd_get_more,
    "killCursors": cmd_kill_cursors,
    "create": cmd_create,
    "collMod": cmd_coll_mod,
    "drop": cmd_drop,
    "dropDatabase": cmd_drop_database,
    "renameCollection": cmd_rename_collection,
    "listCollections": cmd_list_collections,
    "listDatabases": cmd_list_databases,
    "createIndexes": cmd_create_indexes,
    "listIndexes": cmd_list_indexes,
    "dropIndexes": cmd_drop_indexes,
    "configureFailPoint": cmd_configure_fail_point,
    "commitTransaction": cmd_transactions_unsupported,
    "abortTransaction": cmd_transactions_unsupported,
}


async def run_command(server, conn, request):
    """Execute one request; return the reply document, or CLOSE to drop the connection."""
    cmd = request.command
    db = request.db
    if not cmd:
        return _finish(server, CommandError(9, "Empty command").to_doc())
    name = next(iter(cmd))
    if server.trace:
        print("devmongo: conn %d %s.%r" % (conn.id, db, cmd), file=sys.stderr, flush=True)
    if db is None:
        return _finish(server, CommandError(40571, "OP_MSG requests require a $db argument").to_doc())
    handler = COMMANDS.get(name)
    if handler is None:
        return _finish(server, CommandError(59, "no such command: '%s'" % name).to_doc())
    action = server.failpoints.fail_command(name, cmd, conn)
    wce = None
    if action:
        if action.get("block_ms"):
            await asyncio.sleep(action["block_ms"] / 1000.0)
        if action.get("close"):
            return CLOSE
        if "error" in action:
            return _finish(server, action["error"].to_doc())
        wce = action.get("write_concern_error")
    try:
        reply = handler(server, conn, db, cmd)
        if asyncio.iscoroutine(reply):
            reply = await reply
    except CommandError as e:
        return _finish(server, e.to_doc())
    except Exception as e:  # a devmongo bug: answer like an internal error, keep serving
        traceback.print_exc()
        return _finish(server, CommandError(1, "devmongo internal error in %s: %r" % (name, e)).to_doc())
    reply["ok"] = 1.0
    if wce is not None:
        reply["writeConcernError"] = wce
    return _finish(server, reply)


def _finish(server, reply):
    ts = server.oplog.current_ts()
    reply["$clusterTime"] = {"clusterTime": ts,
                             "signature": {"hash": Binary(b"\x00" * 20, 0), "keyId": Int64(0)}}
    reply["operationTime"] = ts
    return reply

