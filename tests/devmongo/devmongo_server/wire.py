"""MongoDB wire protocol framing: parse requests, build replies.

Drivers talk to a server with 16-byte headers followed by an opcode-specific body.
We need only three opcodes to look like a real mongod 6.0 to libmongoc, pymongo and
the Node.js driver:

* OP_QUERY (2004): legacy handshake (isMaster/hello sent to ``admin.$cmd``) and any
  command a driver sends before it knows the server speaks OP_MSG.
* OP_MSG (2013): every command after the handshake.
* OP_REPLY (1): the answer to an OP_QUERY.

OP_COMPRESSED is never sent to us because we do not advertise compression.
This module knows nothing about commands; it turns bytes into (command document,
reply builder) pairs and back.
"""

import struct

import bson
from bson.codec_options import CodecOptions

OP_REPLY = 1
OP_QUERY = 2004
OP_COMPRESSED = 2012
OP_MSG = 2013

HEADER = struct.Struct("<iiii")
# OP_MSG flag bits (see the OP_MSG specification).
CHECKSUM_PRESENT = 0x1
MORE_TO_COME = 0x2
EXHAUST_ALLOWED = 0x10000
KNOWN_FLAGS = CHECKSUM_PRESENT | MORE_TO_COME | EXHAUST_ALLOWED

# Documents are decoded as plain dicts (ordered), keeping int32 vs Int64 apart.
CODEC = CodecOptions(document_class=dict, tz_aware=True)


class ProtocolError(Exception):
    """A malformed message: the connection is closed, like mongod does."""


class Request:
    """One decoded request.

    ``command`` is the command document (sections merged, for OP_MSG), ``db`` the
    database it runs in, ``more_to_come`` whether the client expects no reply.
    """

    __slots__ = ("request_id", "op_code", "command", "db", "more_to_come", "exhaust")

    def __init__(self, request_id, op_code, command, db, more_to_come=False, exhaust=False):
        self.request_id = request_id
        self.op_code = op_code
        self.command = command
        self.db = db
        self.more_to_come = more_to_come
        self.exhaust = exhaust


def _read_cstring(buf, pos):
    end = buf.index(b"\x00", pos)
    return buf[pos:end].decode("utf-8"), end + 1


def _bson_at(buf, pos):
    """Decode the BSON document starting at buf[pos]; return (doc, next position)."""
    if pos + 4 > len(buf):
        raise ProtocolError("truncated BSON document")
    (size,) = struct.unpack_from("<i", buf, pos)
    if size < 5 or pos + size > len(buf):
        raise ProtocolError("invalid BSON document size %d" % size)
    return bson.decode(bytes(buf[pos:pos + size]), CODEC), pos + size


def parse_message(request_id, op_code, body):
    """Turn a message body (everything after the header) into a Request."""
    if op_code == OP_MSG:
        return _parse_op_msg(request_id, body)
    if op_code == OP_QUERY:
        return _parse_op_query(request_id, body)
    raise ProtocolError("unsupported opCode %d" % op_code)


def _parse_op_msg(request_id, body):
    (flags,) = struct.unpack_from("<I", body, 0)
    if flags & 0xFFFF & ~KNOWN_FLAGS:
        # The spec says unknown required (low 16) bits are an error.
        raise ProtocolError("unknown OP_MSG flag bits 0x%x" % flags)
    end = len(body)
    if flags & CHECKSUM_PRESENT:
        end -= 4  # trailing CRC-32C; we trust TCP and do not verify it
    pos = 4
    command = None
    sequences = []
    while pos < end:
        kind = body[pos]
        pos += 1
        if kind == 0:
            if command is not None:
                raise ProtocolError("more than one kind 0 section")
            command, pos = _bson_at(body, pos)
        elif kind == 1:
            (size,) = struct.unpack_from("<i", body, pos)
            sec_end = pos + size
            ident, p = _read_cstring(body, pos + 4)
            docs = []
            while p < sec_end:
                doc, p = _bson_at(body, p)
                docs.append(doc)
            sequences.append((ident, docs))
            pos = sec_end
        else:
            raise ProtocolError("unknown OP_MSG section kind %d" % kind)
    if command is None:
        raise ProtocolError("OP_MSG without a kind 0 section")
    # Kind 1 sections (document sequences) become arrays in the command.
    for ident, docs in sequences:
        command.setdefault(ident, []).extend(docs)
    db = command.get("$db")
    return Request(request_id, OP_MSG, command, db,
                   more_to_come=bool(flags & MORE_TO_COME),
                   exhaust=bool(flags & EXHAUST_ALLOWED))


def _parse_op_query(request_id, body):
    pos = 4  # int32 flags (ignored)
    full_name, pos = _read_cstring(body, pos)
    pos += 8  # int32 numberToSkip, int32 numberToReturn
    query, pos = _bson_at(body, pos)
    db, _, coll = full_name.partition(".")
    if coll != "$cmd":
        raise ProtocolError("legacy OP_QUERY on %s is not supported (only commands)" % full_name)
    # Old drivers wrap the command with read preference: {$query: {...}, $readPreference: ...}
    if "$query" in query:
        query = query["$query"]
    return Request(request_id, OP_QUERY, query, db)


def encode_reply(request, reply_doc, request_id):
    """Encode reply_doc as the answer to request (OP_MSG or OP_REPLY)."""
    payload = bson.encode(reply_doc, codec_options=CODEC)
    if request.op_code == OP_MSG:
        body = struct.pack("<IB", 0, 0) + payload
        op = OP_MSG
    else:
        # responseFlags 0 (AwaitCapable is irrelevant), cursorID 0, startingFrom 0, numberReturned 1
        body = struct.pack("<iqii", 0, 0, 0, 1) + payload
        op = OP_REPLY
    return HEADER.pack(16 + len(body), request_id, request.request_id, op) + body
