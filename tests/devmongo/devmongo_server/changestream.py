"""Change streams: turn oplog entries into change events for one cursor.

A ChangeStream remembers a position (see oplog.py for the token format) and, on each
aggregate/getMore, scans the oplog forward from it: entries outside its namespace are
skipped, the rest become events, the user's pipeline ($match, $project, ...) runs on
each event, and a drop/rename/dropDatabase that ends the stream adds an `invalidate`.
The cursor's postBatchResumeToken is always its position after the scan, so resuming
from it gives exactly the events not yet seen.
"""

import time

from . import matcher
from .errors import CommandError
from .oplog import (KIND_BEFORE, KIND_EVENT, KIND_HIGH_WATER, KIND_INVALIDATE,
                    decode_token, encode_token)
from .store import SYSTEM_DBS, id_key

FULL_DOCUMENT_MODES = ("default", "updateLookup", "whenAvailable", "required")
BEFORE_CHANGE_MODES = ("off", "whenAvailable", "required")
STAGE_OPTIONS = ("resumeAfter", "startAfter", "startAtOperationTime", "fullDocument",
                 "fullDocumentBeforeChange", "allChangesForCluster", "showExpandedEvents",
                 "showSystemEvents", "showMigrationEvents", "allowToRunOnConfigDB",
                 "allowToRunOnSystemNS")

# Stages MongoDB accepts after $changeStream, and known stages it refuses there.
_ALLOWED = ("$match", "$project", "$addFields", "$set", "$unset", "$replaceRoot", "$replaceWith",
            "$redact")
_NOT_PERMITTED = ("$group", "$sort", "$limit", "$skip", "$lookup", "$graphLookup", "$unwind",
                  "$out", "$merge", "$count", "$facet", "$bucket", "$bucketAuto", "$sample",
                  "$geoNear", "$sortByCount", "$unionWith", "$densify", "$fill", "$documents",
                  "$collStats", "$indexStats", "$currentOp", "$listSessions", "$planCacheStats",
                  "$setWindowFields", "$search", "$changeStream", "$changeStreamSplitLargeEvent")


def compile_stage(stage):
    """Turn one pipeline stage into a function event -> event or None (filtered out)."""
    if not isinstance(stage, dict) or len(stage) != 1:
        raise CommandError(40323, "A pipeline stage specification object must contain exactly one field.")
    name, spec = next(iter(stage.items()))
    if name == "$match":
        if not isinstance(spec, dict):
            raise CommandError(15959, "the match filter must be an expression in an object")
        matcher.validate_filter(spec)
        return lambda ev: ev if matcher.match(ev, spec) else None
    if name == "$project":
        proj = matcher.Projection(spec)
        return proj.apply
    if name in ("$addFields", "$set"):
        if not isinstance(spec, dict):
            raise CommandError(40272, "%s specification stage must be an object" % name)
        return lambda ev: _add_fields(ev, spec)
    if name == "$unset":
        paths = [spec] if isinstance(spec, str) else spec
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise CommandError(31002, "$unset specification must be a string or an array of strings")
        proj = matcher.Projection({p: 0 for p in paths})
        return proj.apply
    if name in ("$replaceRoot", "$replaceWith"):
        expr = spec.get("newRoot") if name == "$replaceRoot" and isinstance(spec, dict) else spec
        return lambda ev: _replace_root(ev, expr)
    if name in _ALLOWED:
        raise CommandError(40324, "devmongo: stage %s is valid on MongoDB but not implemented here" % name)
    if name in _NOT_PERMITTED:
        raise CommandError(20, "%s is not permitted in a $changeStream pipeline" % name)
    raise CommandError(40324, "Unrecognized pipeline stage name: '%s'" % name)


def _add_fields(ev, spec):
    out = dict(ev)
    for path, expr in spec.items():
        val = matcher.eval_expr(expr, ev)
        if val is matcher.MISSING:
            continue
        parts = path.split(".")
        cur = out
        for p in parts[:-1]:  # copy along the path: events may share subdocuments
            nxt = cur.get(p)
            nxt = dict(nxt) if isinstance(nxt, dict) else {}
            cur[p] = nxt
            cur = nxt
        cur[parts[-1]] = val
    return out


def _replace_root(ev, expr):
    val = matcher.eval_expr(expr, ev)
    if not isinstance(val, dict):
        raise CommandError(40228, "'newRoot' expression must evaluate to an object, but resulting "
                                  "value was: %r" % (None if val is matcher.MISSING else val,))
    return val


class ChangeStream:
    """One open change stream cursor."""

    is_change_stream = True

    def __init__(self, server, cursor_id, db, coll, stage, pipeline, cluster):
        self.server = server
        self.store = server.store
        self.oplog = server.oplog
        self.id = cursor_id
        self.db = db
        self.coll = coll  # None for database and cluster streams
        self.cluster = cluster
        if cluster:
            self.ns = "admin.$cmd.aggregate"
        elif coll is None:
            self.ns = "%s.$cmd.aggregate" % db
        else:
            self.ns = "%s.%s" % (db, coll)
        self.closed = False
        self.last_used = time.monotonic()
        self._parse_options(stage)
        self.stages = [compile_stage(s) for s in pipeline]

    def _parse_options(self, stage):
        if not isinstance(stage, dict):
            raise CommandError(40573, "the $changeStream stage must be specified as an object")
        for k in stage:
            if k not in STAGE_OPTIONS:
                raise CommandError(40415, "BSON field '$changeStream.%s' is an unknown field." % k)
        self.full_document = stage.get("fullDocument", "default")
        if self.full_document not in FULL_DOCUMENT_MODES:
            raise CommandError(2, "'%s' is not a valid value for fullDocument" % self.full_document)
        self.before_change = stage.get("fullDocumentBeforeChange", "off")
        if self.before_change not in BEFORE_CHANGE_MODES:
            raise CommandError(2, "'%s' is not a valid value for fullDocumentBeforeChange" % self.before_change)
        self.expanded = bool(stage.get("showExpandedEvents", False))
        resume_after = stage.get("resumeAfter")
        start_after = stage.get("startAfter")
        start_at = stage.get("startAtOperationTime")
        if resume_after is not None and start_after is not None:
            raise CommandError(50865, "Do not specify both 'resumeAfter' and 'startAfter' in a $changeStream stage")
        token = resume_after if resume_after is not None else start_after
        if token is not None and start_at is not None:
            raise CommandError(40674, "Only one type of resume option is allowed, but multiple were found.")
        # The event a resume token names, until the scan has seen it (see next_batch).
        self.unverified = None
        # The resume point whose history the first scan checks (see _check_history).
        self.history_from = None
        if token is not None:
            tok = decode_token(token, "resumeAfter" if resume_after is not None else "startAfter")
            if tok.from_invalidate and resume_after is not None:
                raise CommandError(260, "Attempting to resume a change stream using 'resumeAfter' is not "
                                        "allowed from an invalidate notification.")
            if tok.event:
                self.unverified = tok
            self.pos = tok.pos
            self.history_from = tok.pos
        elif start_at is not None:
            try:
                self.pos = (start_at.time, start_at.inc, KIND_BEFORE)
            except AttributeError:
                raise CommandError(14, "startAtOperationTime must be a timestamp")
            self.history_from = self.pos
        else:
            # Start "now": after the newest entry.
            self.pos = self.oplog.newest_ts() + (KIND_HIGH_WATER,)

    def _check_history(self):
        """286 if the oplog no longer reaches back to the resume point. On mongod the oplog
        scan checks this when it first reads (CollectionScan::assertTsHasNotFallenOff, turned
        into ChangeStreamHistoryLost by DocumentSourceChangeStreamCheckResumability): in the
        aggregate, or in the first getMore after `batchSize: 0`. Never while the oldest
        entry is still the deployment's first (see oplog.py)."""
        pos, self.history_from = self.history_from, None
        if pos[:2] < self.oplog.oldest_ts() and not self.oplog.starts_at_initiation():
            self.server.cursors.pop(self.id, None)
            self.closed = True
            raise CommandError(286, "Resume of change stream was not possible, as the resume point may "
                                    "no longer be in the oplog.")

    # -- scanning -----------------------------------------------------------------
    def _visible(self, e):
        """Does entry e concern this stream's namespace (as an event, not an invalidate)?"""
        if e.op == "noop":
            return False
        if e.op == "create" and not self.expanded:
            return False
        if self.cluster:
            return e.db not in SYSTEM_DBS and not (e.coll or "").startswith("system.")
        if e.db != self.db:
            return False
        if self.coll is None:
            return not (e.coll or "").startswith("system.")
        return e.coll == self.coll and e.op != "dropDatabase"

    def _invalidates(self, e):
        if self.cluster:
            return False
        if e.db != self.db:
            return False
        if self.coll is None:
            return e.op == "dropDatabase"
        return (e.op in ("drop", "rename") and e.coll == self.coll) or e.op == "dropDatabase"

    def next_batch(self, limit):
        """Collect up to `limit` events after the current position and advance it.

        Returns the list of events; sets self.closed after an invalidate.
        """
        if self.closed:
            return []
        oplog = self.oplog
        if self.history_from is not None:
            self._check_history()
        self._check_position()
        events = []
        last_returned = None
        entries = oplog.entries
        idx = oplog.index_from(self.pos[:2])
        n = len(entries)
        while idx < n and len(events) < limit:
            e = entries[idx]
            idx += 1
            if self.unverified is not None:
                self._look_for_token(e)
            ev_pos = e.ts + (KIND_EVENT,)
            if ev_pos > self.pos:
                self.pos = ev_pos
                if self._visible(e):
                    self._check_token_seen(ev_pos)
                    ev = self._run_pipeline(self._make_event(e, ev_pos))
                    if ev is not None:
                        events.append(ev)
                        last_returned = ev_pos
            inv_pos = e.ts + (KIND_INVALIDATE,)
            if inv_pos > self.pos and self._invalidates(e):
                if len(events) >= limit:
                    break  # the invalidate goes in the next batch
                self._check_token_seen(inv_pos)
                self.pos = inv_pos
                events.append({"_id": encode_token(inv_pos), "operationType": "invalidate",
                               "clusterTime": e.timestamp(), "wallTime": e.wall})
                self.closed = True
                return events
        if idx >= n and len(events) < limit:
            # Scanned everything: move to the high-water mark of the log, unless the last
            # event we return is the newest entry (then its _id already says "up to now").
            hw = oplog.newest_ts() + (KIND_HIGH_WATER,)
            if hw > self.pos and last_returned != self.pos:
                self.pos = hw
        return events

    # mongod 6.0 (DocumentSourceChangeStreamEnsureResumeTokenPresent, placed after the
    # namespace filter and the invalidate check, before the user's stages) lets a stream
    # resumed from an event token run until the first event of this stream after the
    # token: if the token's own event was not seen before it, the token was never issued
    # by this deployment for this stream, and the getMore (or the aggregate, if that
    # event already exists) fails with 280. Nothing is checked at open time, so a token
    # from the future is accepted and the stream waits; entries of other namespaces move
    # the postBatchResumeToken on (ChangeStreamProxyStage) without deciding anything.
    def _look_for_token(self, e):
        tok = self.unverified
        if tok.foreign or e.ts != tok.pos[:2]:
            return
        if self._invalidates(e) if tok.from_invalidate else self._visible(e):
            self.unverified = None

    def _check_token_seen(self, pos):
        if self.unverified is None:
            return
        self.server.cursors.pop(self.id, None)
        self.closed = True
        raise CommandError(280, 'cannot resume stream; the resume token was not found. {_data: "%s"}'
                           % encode_token(pos)["_data"])

    def _check_position(self):
        """CappedPositionLost (136) once the entry our position stands on was trimmed away:
        mongod's oplog cursor cannot be restored when the last record it read is gone
        (CollectionScan / WiredTiger cursor restore), even if nothing unread was lost."""
        trimmed = self.oplog.trimmed_upto
        if trimmed is None:
            return
        if self.pos[:2] <= trimmed:
            self.server.cursors.pop(self.id, None)
            self.closed = True
            raise CommandError(136, "CollectionScan died due to position in capped collection being "
                                    "deleted. Last seen record id: RecordId(%d)"
                               % (self.pos[0] << 32 | self.pos[1]))

    def resume_token(self):
        """The postBatchResumeToken. A position "before t,i" (startAtOperationTime not yet
        reached) is not a token we issue: it goes out as the equal "after everything up to
        the time just before t,i", so every token a client holds is an event, an invalidate
        or a high-water mark, and a token with any other kind byte is rejected (oplog.py)."""
        t, i, kind = self.pos
        if kind == KIND_BEFORE and (t or i):
            t, i = (t, i - 1) if i else (t - 1, 0xFFFFFFFF)
            kind = KIND_HIGH_WATER
        return encode_token((t, i, kind))

    # -- events -------------------------------------------------------------------
    def _make_event(self, e, pos):
        ev = {"_id": encode_token(pos), "operationType": e.op, "clusterTime": e.timestamp(),
              "wallTime": e.wall}
        if self.expanded and e.uuid is not None:
            ev["collectionUUID"] = e.uuid
        op = e.op
        if op in ("insert", "replace"):
            ev["fullDocument"] = e.doc
        if op == "dropDatabase":
            ev["ns"] = {"db": e.db}
        else:
            ev["ns"] = {"db": e.db, "coll": e.coll}
        if op in ("insert", "update", "replace", "delete"):
            ev["documentKey"] = e.key
        if op == "update":
            ev["updateDescription"] = e.ud
            mode = self.full_document
            if mode == "updateLookup":
                c = self.store.get(e.db, e.coll)
                doc = c.docs.get(id_key(e.key["_id"])) if c is not None and c.uuid == e.uuid else None
                ev["fullDocument"] = doc
            elif mode in ("whenAvailable", "required"):
                if e.post is None and mode == "required":
                    raise CommandError(47, "Change stream was configured to require a post-image for all "
                                           "update, delete and replace events, but the post-image was not "
                                           "found for event: %s" % ev["_id"]["_data"])
                ev["fullDocument"] = e.post
        if op == "rename":
            ev["to"] = e.to
        if op == "create":
            ev["operationDescription"] = {"idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}}
        if op in ("update", "replace", "delete") and self.before_change != "off":
            if e.pre is None and self.before_change == "required":
                raise CommandError(47, "Change stream was configured to require a pre-image for all "
                                       "update, delete and replace events, but the pre-image was not "
                                       "found for event: %s" % ev["_id"]["_data"])
            ev["fullDocumentBeforeChange"] = e.pre
        return ev

    def _run_pipeline(self, ev):
        token = ev["_id"]
        for fn in self.stages:
            ev = fn(ev)
            if ev is None:
                return None
        if "_id" not in ev or not matcher.values_equal(ev["_id"], token):
            self.server.cursors.pop(self.id, None)
            self.closed = True
            raise CommandError(280, "Encountered an event whose _id field, which contains the resume token, "
                                    "was modified by the pipeline. Modifying the _id field of an event "
                                    "makes it impossible to resume the stream from that point. Only "
                                    "transformations that retain the unmodified _id field are allowed. "
                                    "Expected: %s but found: %s" % (token, ev.get("_id", "(missing)")))
        return ev

