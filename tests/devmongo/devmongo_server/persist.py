"""--dbpath: keep documents, the oplog and the clock across restarts, like mongod does.

The state is one file, DIR/devmongo.bson, a sequence of BSON documents:
a "meta" record (format version, clock, how far the oplog was trimmed), then one record
per collection, one per document, and one per oplog entry. It is written atomically
(temporary file, fsync, rename, fsync of the directory) on shutdown and periodically
while there are unsaved changes, so a killed process loses at most the last interval.
"""

import os

import bson
from bson.timestamp import Timestamp

from .oplog import Entry
from .wire import CODEC

FILENAME = "devmongo.bson"
FORMAT = 1


def save(server):
    path = os.path.join(server.dbpath, FILENAME)
    tmp = path + ".tmp"
    store, oplog = server.store, server.oplog
    with open(tmp, "wb") as f:
        meta = {"kind": "meta", "format": FORMAT,
                "clock": Timestamp(oplog.last_t, oplog.last_i) if oplog.last_t else None,
                "trimmedUpto": Timestamp(*oplog.trimmed_upto) if oplog.trimmed_upto else None}
        f.write(bson.encode(meta, codec_options=CODEC))
        for db, colls in store.dbs.items():
            for name, c in colls.items():
                f.write(bson.encode({"kind": "coll", "db": db, "coll": name, "uuid": c.uuid,
                                     "options": c.options, "indexes": c.indexes}, codec_options=CODEC))
                for d in c.docs.values():
                    f.write(bson.encode({"kind": "doc", "db": db, "coll": name, "doc": d},
                                        codec_options=CODEC))
        for e in oplog.entries:
            f.write(bson.encode({"kind": "oplog", "e": e.to_bson()}, codec_options=CODEC))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dirfd = os.open(server.dbpath, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
    store.dirty = False


def load(server):
    """Load saved state if DIR/devmongo.bson exists; return True if something was loaded."""
    path = os.path.join(server.dbpath, FILENAME)
    if not os.path.exists(path):
        return False
    store, oplog = server.store, server.oplog
    entries = []
    trimmed = None
    clock = None
    colls = {}
    with open(path, "rb") as f:
        for rec in bson.decode_file_iter(f, CODEC):
            kind = rec.get("kind")
            if kind == "meta":
                if rec.get("format") != FORMAT:
                    raise SystemExit("devmongo: %s has an unknown format" % path)
                clock = rec.get("clock")
                t = rec.get("trimmedUpto")
                trimmed = (t.time, t.inc) if t else None
            elif kind == "coll":
                colls[(rec["db"], rec["coll"])] = {"db": rec["db"], "coll": rec["coll"], "uuid": rec["uuid"],
                                                   "options": rec.get("options"),
                                                   "indexes": rec.get("indexes"), "docs": []}
            elif kind == "doc":
                colls[(rec["db"], rec["coll"])]["docs"].append(rec["doc"])
            elif kind == "oplog":
                entries.append(Entry.from_bson(rec["e"]))
    for rec in colls.values():
        store.load_collection(rec)
    oplog.load(entries, trimmed)
    if clock is not None:
        oplog.restore_clock(clock.time, clock.inc)
    return True
