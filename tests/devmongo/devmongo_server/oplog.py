"""The oplog: a bounded, ordered log of every write, and the cluster clock.

Change streams are a view of this log, as on a real replica set. Every write appends an
entry stamped with a strictly increasing clusterTime (Timestamp seconds, increment).
The log keeps at most ``max_size`` entries; when older ones are dropped, resuming from
a point before the oldest kept entry is impossible (ChangeStreamHistoryLost), which is
how tests provoke history loss with a small ``--oplog-size``.

The first entry of a new deployment is a no-op ``{msg: "initiating set"}``, as on a
replica set. While it is still the oldest entry nothing was ever dropped, and mongod
does not call a point before it history lost (collection_scan.cpp,
assertTsHasNotFallenOff: "If the first entry we see in the oplog is the replset
initialization, then it doesn't matter if its timestamp is later"): a token from
another deployment or an earlier in-memory run is then read like any other.

Resume tokens encode a *position* in this log, ``(t, i, kind)``:

* kind 0x00 "before t,i": used for startAtOperationTime (events with clusterTime >= t,i);
  internal only, never in a token (see ChangeStream.resume_token)
* kind 0x01 the event of the entry at t,i
* kind 0x02 the invalidate that follows the entry at t,i (drop/rename/dropDatabase)
* kind 0xFF high-water mark: "after everything up to t,i"

``_data`` is ``"82" + %08X t + %08X i + %02X kind``: fixed width, upper-case hex, so the
string order of tokens is the order of positions, hence of events. Tokens in mongod's
own encoding (from a real deployment) are understood too, see ``decode_token``.
"""

import asyncio
import bisect
import datetime
import re
import struct
import time
import uuid

from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.timestamp import Timestamp

from . import keystring
from .errors import CommandError

KIND_BEFORE = 0x00
KIND_EVENT = 0x01
KIND_INVALIDATE = 0x02
KIND_HIGH_WATER = 0xFF

_HEX_RE = re.compile(r"^(?:[0-9A-Fa-f]{2})*$")

# The kinds a devmongo token can carry; any other last byte is not one of ours, and is
# then read as mongod would read it (a mutated token mostly fails to decode there too).
_KINDS = (KIND_EVENT, KIND_INVALIDATE, KIND_HIGH_WATER)


def encode_token(pos):
    t, i, kind = pos
    return {"_data": "82%08X%08X%02X" % (t, i, kind)}


class Token:
    """A client-supplied resume token, decoded.

    ``pos`` is the position to scan from. ``event`` says whether the token names an
    event (mongod then checks that the stream really contains it, see
    changestream.py), as opposed to a high-water mark. ``foreign`` marks a token in
    mongod's own encoding: it comes from another deployment and can name no event here.
    """

    def __init__(self, pos, event, foreign=False):
        self.pos = pos
        self.event = event
        self.foreign = foreign

    @property
    def from_invalidate(self):
        return self.pos[2] == KIND_INVALIDATE


def decode_token(token, field="resumeAfter"):
    """Decode a client-supplied resume token, failing as mongod 6.0 does on bad ones.

    The order of the checks is mongod's: the IDL wants an object, ResumeToken's
    constructor wants a string `_data` (40647) and BinData `_typeBits` (40648), getData()
    wants valid hex (FailedToParse), then decodes the KeyString (keystring.py). Our own
    tokens (10 bytes: 0x82, clusterTime, kind) are recognised before that, since they
    are not KeyStrings; everything else is read as mongod's encoding, so a token from a
    real deployment is understood and garbage fails with mongod's codes.
    """
    if not isinstance(token, dict):
        raise CommandError(14, "BSON field '$changeStream.%s' is the wrong type '%s', expected type "
                               "'object'" % (field, bson_type_name(token)))
    data = token.get("_data")
    if not isinstance(data, str):
        raise CommandError(40647, "Bad resume token: _data of missing or of wrong type. Expected "
                                  "string, got %s" % _doc_string(token))
    type_bits = token.get("_typeBits")
    if "_typeBits" in token and not (isinstance(type_bits, bytes) and getattr(type_bits, "subtype", 0) == 0):
        raise CommandError(40648, "Bad resume token: _typeBits of wrong type %s" % _doc_string(token))
    if not _HEX_RE.match(data):
        raise CommandError(9, "resume token string was not a valid hex string")
    raw = bytes.fromhex(data)
    if len(raw) == 10 and raw[0] == keystring.TIMESTAMP and raw[9] in _KINDS:
        t, i = struct.unpack(">II", raw[1:9])
        pos = (t, i, raw[9])
        return Token(pos, event=raw[9] in (KIND_EVENT, KIND_INVALIDATE))
    td = keystring.decode(raw, type_bits)
    t, i = td.cluster_time
    if td.is_high_water_mark:
        # mongod's high-water mark at T sorts before every event at T.
        return Token((t, i, KIND_BEFORE), event=False, foreign=True)
    return Token((t, i, KIND_INVALIDATE if td.from_invalidate else KIND_EVENT), event=True, foreign=True)


def bson_type_name(value):
    """The type name mongod's IDL puts in "is the wrong type" messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Int64):
        return "long"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, Timestamp):
        return "timestamp"
    if isinstance(value, datetime.datetime):
        return "date"
    if isinstance(value, ObjectId):
        return "objectId"
    if isinstance(value, Decimal128):
        return "decimal"
    if isinstance(value, (bytes, uuid.UUID)):
        return "binData"
    return type(value).__name__


def _doc_string(doc):
    """Roughly how mongod prints a small document in an error message: {_data: 42}."""
    def val(v):
        if isinstance(v, str):
            return '"%s"' % v
        if isinstance(v, dict):
            return _doc_string(v)
        if isinstance(v, bool):
            return "true" if v else "false"
        return "null" if v is None else str(v)
    return "{" + ", ".join("%s: %s" % (k, val(v)) for k, v in doc.items()) + "}"


class Entry:
    """One oplog entry. ``op`` is insert, update, replace, delete, create, drop, rename,
    dropDatabase or noop. Documents referenced here are never mutated afterwards."""

    __slots__ = ("ts", "wall", "op", "db", "coll", "uuid", "key", "doc", "ud", "pre", "post", "to")

    def __init__(self, op, db=None, coll=None, uuid=None, key=None, doc=None, ud=None,
                 pre=None, post=None, to=None):
        self.ts = None  # (t, i), set by Oplog.append
        self.wall = None
        self.op = op
        self.db = db
        self.coll = coll
        self.uuid = uuid
        self.key = key
        self.doc = doc
        self.ud = ud
        self.pre = pre
        self.post = post
        self.to = to

    def timestamp(self):
        return Timestamp(self.ts[0], self.ts[1])

    def to_bson(self):
        d = {name: getattr(self, name) for name in self.__slots__ if getattr(self, name) is not None}
        d["ts"] = Timestamp(*self.ts)
        return d

    @classmethod
    def from_bson(cls, d):
        e = cls(d["op"])
        for name in cls.__slots__:
            if name in d and name != "ts":
                setattr(e, name, d[name])
        e.ts = (d["ts"].time, d["ts"].inc)
        return e


def _ts_key(entry):
    return entry.ts


# The o field of a replica set's first oplog entry (repl::kInitiatingSetMsg) and of the
# entry a node writes when it becomes primary.
INITIATING_SET = {"msg": "initiating set"}
NEW_PRIMARY = {"msg": "new primary"}


class Oplog:
    """Bounded list of entries plus the clock and a wake-up signal for waiting cursors."""

    def __init__(self, max_size):
        self.max_size = max(1, int(max_size))
        self.entries = []
        self.last_t = 0
        self.last_i = 0
        self.trimmed_upto = None  # ts of the newest entry dropped from the log
        self._changed = asyncio.Event()

    # -- clock ------------------------------------------------------------------
    def next_ts(self):
        """Next clusterTime: (wall-clock seconds, increment), strictly increasing.

        The increment is at least the microseconds elapsed in the current second. A
        restarted devmongo without --dbpath cannot know what the previous process
        issued, but because of this its times are still later than any time issued
        before it started, even within the same second (so old tokens are detected
        as history lost, never mistaken for new positions).
        """
        now = time.time()
        sec = int(now)
        usec = int((now - sec) * 1000000) + 1
        if sec > self.last_t:
            self.last_t, self.last_i = sec, usec
        else:
            self.last_i = max(self.last_i + 1, usec if sec == self.last_t else 0)
        return (self.last_t, self.last_i)

    def current_ts(self):
        return Timestamp(self.last_t, self.last_i)

    def restore_clock(self, t, i):
        if (t, i) > (self.last_t, self.last_i):
            self.last_t, self.last_i = t, i

    # -- log --------------------------------------------------------------------
    def append(self, entry):
        entry.ts = self.next_ts()
        entry.wall = datetime.datetime.now(datetime.timezone.utc)
        self.entries.append(entry)
        excess = len(self.entries) - self.max_size
        if excess > 0:
            self.trimmed_upto = self.entries[excess - 1].ts
            del self.entries[:excess]
        self.notify()
        return entry

    def load(self, entries, trimmed_upto):
        self.entries = entries[-self.max_size:]
        if len(entries) > self.max_size:
            trimmed_upto = entries[len(entries) - self.max_size - 1].ts
        self.trimmed_upto = trimmed_upto
        if self.entries:
            self.restore_clock(*self.entries[-1].ts)

    def notify(self):
        """Wake every cursor waiting in getMore (they re-scan from their position)."""
        ev = self._changed
        self._changed = asyncio.Event()
        ev.set()

    def waiter(self):
        """The event that the next append will set."""
        return self._changed

    def starts_at_initiation(self):
        """Is the oldest entry still the deployment's first? Then no history was lost."""
        return bool(self.entries) and self.entries[0].op == "noop" and self.entries[0].doc == INITIATING_SET

    def oldest_ts(self):
        return self.entries[0].ts if self.entries else (self.last_t, self.last_i)

    def newest_ts(self):
        return self.entries[-1].ts if self.entries else (self.last_t, self.last_i)

    def index_from(self, ts):
        """Index of the first entry with ts >= the given (t, i)."""
        return bisect.bisect_left(self.entries, ts, key=_ts_key)

    def find(self, ts):
        idx = self.index_from(ts)
        if idx < len(self.entries) and self.entries[idx].ts == ts:
            return self.entries[idx]
        return None
