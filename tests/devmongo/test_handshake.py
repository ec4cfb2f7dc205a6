#!/usr/bin/python3
"""Handshake and replica-set discovery: pymongo must see devmongo as primary of rs0, the
hello fields must have the types libmongoc checks, legacy OP_QUERY must work, unknown
commands must fail like mongod's, and SIGTERM/SIGINT must end the process cleanly."""

import datetime
import signal
import socket
import struct

import bson
from bson.objectid import ObjectId
from pymongo.errors import OperationFailure

from devmongo_testlib import Check, DevMongo, main_guard

check = Check("test_handshake")


def op_query(port, db, cmd):
    """Send a command as legacy OP_QUERY to db.$cmd and decode the OP_REPLY."""
    body = struct.pack("<i", 0) + (db + ".$cmd").encode() + b"\x00" + struct.pack("<ii", 0, -1) + bson.encode(cmd)
    msg = struct.pack("<iiii", 16 + len(body), 7, 0, 2004) + body
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(msg)
        hdr = _recv(s, 16)
        length, _rid, resp_to, op = struct.unpack("<iiii", hdr)
        rest = _recv(s, length - 16)
    check.eq(op, 1, "OP_QUERY is answered with OP_REPLY")
    check.eq(resp_to, 7, "OP_REPLY responseTo")
    flags, cursor_id, start, nret = struct.unpack_from("<iqii", rest, 0)
    check.eq((cursor_id, nret), (0, 1), "OP_REPLY cursorID and numberReturned")
    return bson.decode(rest[20:])


def op_msg(port, cmd, flags=0, seqs=()):
    """Send an OP_MSG (optionally with kind-1 sections); return the reply or None."""
    body = struct.pack("<IB", flags, 0) + bson.encode(cmd)
    for ident, docs in seqs:
        payload = ident.encode() + b"\x00" + b"".join(bson.encode(d) for d in docs)
        body += struct.pack("<Bi", 1, 4 + len(payload)) + payload
    msg = struct.pack("<iiii", 16 + len(body), 9, 0, 2013) + body
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(msg)
        if flags & 0x2:
            return None
        hdr = _recv(s, 16)
        length, _rid, resp_to, op = struct.unpack("<iiii", hdr)
        rest = _recv(s, length - 16)
    check.eq(op, 2013, "OP_MSG is answered with OP_MSG")
    return bson.decode(rest[5:])


def _recv(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def test_discovery(dm):
    c = dm.client()
    c.admin.command("ping")
    check.eq(c.primary, ("127.0.0.1", dm.port), "pymongo sees the primary")
    check.ok(c.is_primary, "pymongo: is_primary")
    check.eq(c._topology.description.topology_type_name, "ReplicaSetWithPrimary", "topology type")
    check.eq(c._topology.description.replica_set_name, "rs0", "replica set name")
    check.ok(dm.ready_line == "devmongo ready on 127.0.0.1:%d" % dm.port, "ready line: %r" % dm.ready_line)


def test_hello_types(dm):
    me = "127.0.0.1:%d" % dm.port
    for name in ("hello", "isMaster", "ismaster"):
        r = op_query(dm.port, "admin", {name: 1, "helloOk": True})
        check.eq(r.get("ok"), 1.0, name + " ok")
        if name == "hello":
            check.eq(r.get("isWritablePrimary"), True, "hello isWritablePrimary")
            check.ok("ismaster" not in r, "hello has no ismaster field")
        else:
            check.eq(r.get("ismaster"), True, name + " ismaster")
        check.eq((r.get("setName"), r.get("hosts"), r.get("primary"), r.get("me")),
                 ("rs0", [me], me, me), name + " replica set fields")
        for f in ("maxBsonObjectSize", "maxMessageSizeBytes", "maxWriteBatchSize", "minWireVersion",
                  "maxWireVersion", "setVersion", "connectionId", "logicalSessionTimeoutMinutes"):
            check.ok(type(r.get(f)) is int, "%s.%s must be int32, got %r" % (name, f, type(r.get(f))))
        check.eq((r["maxBsonObjectSize"], r["maxMessageSizeBytes"], r["maxWriteBatchSize"]),
                 (16777216, 48000000, 100000), name + " size limits")
        check.eq((r["minWireVersion"], r["maxWireVersion"]), (0, 17), name + " wire versions")
        check.ok(isinstance(r.get("electionId"), ObjectId), name + " electionId is an ObjectId")
        check.ok(isinstance(r.get("localTime"), datetime.datetime), name + " localTime is a date")
        check.eq(r.get("secondary"), False, name + " secondary")
        check.eq(r.get("readOnly"), False, name + " readOnly")
        check.eq(r.get("helloOk"), True, name + " helloOk")
        check.ok("topologyVersion" not in r, name + " must not advertise topologyVersion")
        check.ok("compression" not in r, name + " must not advertise compression")
        check.ok("$clusterTime" in r and "operationTime" in r, name + " carries $clusterTime")
    # {$query: ...} wrapping, as old drivers send with a read preference
    r = op_query(dm.port, "admin", {"$query": {"isMaster": 1}, "$readPreference": {"mode": "primary"}})
    check.eq(r.get("ismaster"), True, "isMaster wrapped in $query")


def test_op_msg_framing(dm):
    r = op_msg(dm.port, {"insert": "raw", "$db": "hs"}, seqs=[("documents", [{"_id": 1}, {"_id": 2}])])
    check.eq((r.get("ok"), r.get("n")), (1.0, 2), "insert through a kind 1 document sequence")
    # moreToCome: executed, no reply
    op_msg(dm.port, {"insert": "raw", "documents": [{"_id": 3}], "$db": "hs"}, flags=0x2)
    c = dm.client()
    for _ in range(50):
        if c.hs.raw.count_documents({}) == 3:
            break
    check.eq(c.hs.raw.count_documents({}), 3, "moreToCome insert was executed")
    # checksumPresent: trailing CRC-32C is stripped (we send 4 zero bytes)
    body = struct.pack("<IB", 0x1, 0) + bson.encode({"ping": 1, "$db": "admin"}) + b"\x00\x00\x00\x00"
    msg = struct.pack("<iiii", 16 + len(body), 11, 0, 2013) + body
    with socket.create_connection(("127.0.0.1", dm.port), timeout=5) as s:
        s.sendall(msg)
        hdr = _recv(s, 16)
        rest = _recv(s, struct.unpack("<i", hdr[:4])[0] - 16)
    check.eq(bson.decode(rest[5:]).get("ok"), 1.0, "OP_MSG with checksum flag")


def test_commands(dm):
    c = dm.client()
    bi = c.admin.command("buildInfo")
    check.ok(bi["version"].startswith("6.0."), "buildInfo version 6.0.x: %r" % bi["version"])
    check.eq(bi["versionArray"][:2], [6, 0], "buildInfo versionArray")
    try:
        c.admin.command("noSuchThing")
        check.ok(False, "unknown command must fail")
    except OperationFailure as e:
        check.eq((e.code, e.details.get("codeName"), e.details.get("errmsg")),
                 (59, "CommandNotFound", "no such command: 'noSuchThing'"), "unknown command error")
    check.eq(c.admin.command("endSessions", [])["ok"], 1.0, "endSessions")
    check.eq(c.admin.command("getParameter", 1, featureCompatibilityVersion=1)["featureCompatibilityVersion"],
             {"version": "6.0"}, "getParameter featureCompatibilityVersion")
    names = c.list_database_names()
    check.ok("hs" in names, "listDatabases shows hs: %r" % names)


def test_signals():
    for sig in (signal.SIGTERM, signal.SIGINT):
        dm = DevMongo().start()
        try:
            dm.client().admin.command("ping")
            rc = dm.stop(sig)
            check.eq(rc, 0, "exit code after %s" % signal.Signals(sig).name)
        finally:
            dm.kill()


def main():
    with DevMongo() as dm:
        for t in (test_discovery, test_hello_types, test_op_msg_framing, test_commands):
            check.run(t, dm)
    check.run(test_signals)
    return check.finish()


if __name__ == "__main__":
    main_guard(main)
