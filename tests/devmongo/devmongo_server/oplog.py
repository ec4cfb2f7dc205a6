"""The oplog: a bounded, ordered log of every write, and the cluster clock.

Change streams are a view of this log, as on a real replica set. Every write appends an
entry stamped with a strictly increasing clusterTime (Timestamp seconds, increment).
The log keeps at most ``max_size`` entries; when older ones are dropped, resuming from
a point before the oldest kept entry is impossible (ChangeStreamHistoryLost), which is
how tests provoke history loss with a small ``--oplog-size``.

Resume tokens encode a *position* in this log, ``(t, i, kind)``:

* kind 0x00 "before t,i": used for startAtOperationTime (events with clusterTime >= t,i)
* kind 0x01 the event of the entry at t,i
* kind 0x02 the invalidate that follows the entry at t,i (drop/rename/dropDatabase)
* kind 0xFF high-water mark: "after everything up to t,i"

``_data`` is ``"82" + %08X t + %08X i + %02X kind``: fixed width, upper-case hex, so the
string order of tokens is the order of positions, hence of events.
"""

import asyncio
import bisect
import datetime
import re
import time

from bson.timestamp import Timestamp

from .errors import CommandError

KIND_BEFORE = 0x00
KIND_EVENT = 0x01
KIND_INVALIDATE = 0x02
KIND_HIGH_WATER = 0xFF

_TOKEN_RE = re.compile(r"^82([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{2})$")


def encode_token(pos):
    t, i, kind = pos
    return {"_data": "82%08X%08X%02X" % (t, i, kind)}


def decode_token(token):
    """Turn a client-supplied resume token into a position tuple (t, i, kind)."""
    data = token.get("_data") if isinstance(token, dict) else None
    m = _TOKEN_RE.match(data) if isinstance(data, str) else None
    if not m:
        raise CommandError(9, "Invalid resume token: %r is not a devmongo resume token" % (token,))
    return int(m.group(1), 16), int(m.group(2), 16), int(m.group(3), 16)


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
