"""Reading resume tokens in mongod's own encoding, to reject bad ones as mongod does.

devmongo issues tokens in its own short format (see oplog.py), but a client may hand it
anything: a token from a real MongoDB deployment, a truncated or corrupted one, random
hex. mongod decodes `_data` as a hex KeyString and checks the elements it holds; each
failure has its own error code, and clients (changegate among them) see those codes, so
devmongo walks the same steps and fails with the same codes and messages:

* KeyString decoding: mongo/db/storage/key_string.cpp (6.0), `toBsonSafe` and
  `toBsonValue`: an unknown type byte is 50811 "KeyString format error: Unknown type",
  reading past the end is 15 Overflow (BufReader::skip, ConstDataRangeCursor::advance),
  a string without its NUL is 50816, numbers whose type bits do not fit are 50810,
  50819, 50823, 50825, 50826, 50818.
* The elements of a token: mongo/db/pipeline/resume_token.cpp (6.0),
  `ResumeToken::getData`: clusterTime, version (int 0, 1 or 2), tokenType (v1+, int 0
  for a high-water mark or 128 for an event), txnOpIndex (int >= 0), fromInvalidate (v1+,
  bool), then an optional UUID and eventIdentifier.

`decode` returns the token's data or raises the CommandError mongod would. Only the
structure is decoded (values that resume tokens never hold keep no value), which is all
the checks above look at.
"""

import struct

from .errors import CommandError

# CType values from key_string.cpp.
MIN_KEY, UNDEFINED, NULLISH, NUMERIC = 10, 15, 20, 30
STRING_LIKE, OBJECT, ARRAY, BIN_DATA, OID = 60, 70, 80, 90, 100
BOOL_FALSE, BOOL_TRUE, DATE, TIMESTAMP = 110, 111, 120, 130
REGEX, DBREF, CODE, CODE_WITH_SCOPE, MAX_KEY = 140, 150, 160, 170, 240
NUM_NAN = NUMERIC + 0
NUM_NEG_LARGE = NUMERIC + 1
NUM_NEG_8, NUM_NEG_1 = NUMERIC + 2, NUMERIC + 9
NUM_NEG_SMALL = NUMERIC + 10
NUM_ZERO = NUMERIC + 11
NUM_POS_SMALL = NUMERIC + 12
NUM_POS_1, NUM_POS_8 = NUMERIC + 13, NUMERIC + 20
NUM_POS_LARGE = NUMERIC + 21
END, LESS, GREATER = 0x04, 1, 254

# TypeBits values for numbers (key_string.h).
TB_INT, TB_DOUBLE, TB_LONG, TB_DECIMAL = 0, 1, 2, 3
# Decimal continuation markers: 0 equal to the double, 2 equal rounded to 15 digits;
# 1 and 3 mean 8 more bytes of decimal follow.
DCM_EQUAL_TO_DOUBLE = 0
DCM_CONTINUATION = (1, 3)

# Resume token types (resume_token.h).
HIGH_WATER_MARK_TOKEN, EVENT_TOKEN = 0, 128


def _ks_error(code, msg):
    return CommandError(code, "KeyString format error: " + msg)


class _Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def remaining(self):
        return len(self.data) - self.pos

    def skip(self, n):
        if self.remaining() < n:
            raise CommandError(15, "Invalid advance (%d) past end of buffer[%d] at offset: %d"
                               % (n, len(self.data), self.pos))
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def byte(self):
        return self.skip(1)[0]

    def cstring(self):
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise _ks_error(50816, "Failed to find null terminator in string.")
        s = self.data[self.pos:end]
        self.pos = end + 1
        return s

    def cstring_with_nuls(self):
        s = self.cstring()
        while self.remaining() and self.data[self.pos] == 0xFF:  # a NUL inside is "\x00\xff"
            self.pos += 1
            s += b"\x00" + self.cstring()
        return s


class _TypeBits:
    """Reads the `_typeBits` that tell an int from a long, double or decimal (key_string.cpp
    TypeBits::resetFromBuffer/readBit). Absent type bits are all zeros: every number is an int."""

    def __init__(self, raw):
        self.data = b""
        self.all_zeros = True
        self.bit_pos = 0
        if not raw:
            return
        r = _Reader(raw)
        first = raw[0]
        if 0 < first < 0x80:
            size = 1  # all bits in this one byte
        else:
            r.skip(1)
            if first > 0x80:
                size = first & 0x7F
            elif first == 0x80:
                size = struct.unpack("<I", r.skip(4))[0]
                if size <= 127:
                    raise _ks_error(50910, "Invalid overlong encoding.")
            else:
                size = 0
        self.data = r.skip(size)
        self.all_zeros = size == 0

    def bit(self):
        if self.all_zeros:
            return 0
        byte, offset = divmod(self.bit_pos, 8)
        self.bit_pos += 1
        if byte >= len(self.data):
            raise _ks_error(50615, "Invalid size byte(s).")
        return (self.data[byte] >> offset) & 1

    def numeric(self):
        high = self.bit()
        return (high << 1) | self.bit()


def _number(ctype, r, tb):
    """Decode one numeric value; returns ("int" | "long" | "double" | "decimal", value)."""
    if ctype == NUM_NAN:
        kind = tb.numeric()
        if kind not in (TB_DOUBLE, TB_DECIMAL):
            raise _ks_error(50819, "Invalid type bits for numeric NaN")
        return ("double" if kind == TB_DOUBLE else "decimal"), None
    if ctype == NUM_ZERO:
        kind = tb.numeric()
        if kind == TB_DECIMAL:  # negative or decimal zeros: 3 more bits (readZero)
            tb.bit(), tb.bit(), tb.bit()
            return "double", None
        return {TB_INT: "int", TB_DOUBLE: "double", TB_LONG: "long"}[kind], 0
    if ctype in (NUM_NEG_LARGE, NUM_POS_LARGE):
        kind = tb.numeric()
        encoded = struct.unpack(">Q", r.skip(8))[0]
        if ctype == NUM_NEG_LARGE:
            encoded ^= 0xFFFFFFFFFFFFFFFF
        if encoded != 0xFFFFFFFFFFFFFFFF and encoded & (1 << 63):
            if kind != TB_DECIMAL:
                raise _ks_error(50818, "Invalid type bits for decimal number.")
            r.skip(8)
            return "decimal", None
        if kind == TB_DOUBLE:
            return "double", None
        if kind == TB_LONG:
            return "long", None  # only -2**63 can be encoded so; close enough for a token
        if kind != TB_DECIMAL:
            raise _ks_error(50826, "Unexpected type of large number.")
        if encoded & 1 and encoded != 0xFFFFFFFFFFFFFFFF:
            r.skip(8)
        return "decimal", None
    if ctype in (NUM_NEG_SMALL, NUM_POS_SMALL):
        kind = tb.numeric()
        encoded = struct.unpack(">Q", r.skip(8))[0]
        if ctype == NUM_NEG_SMALL:
            encoded ^= 0xFFFFFFFFFFFFFFFF
        top = encoded >> 62
        if top == 0:
            r.skip(8)
            return "decimal", None
        if top in (1, 2):
            if kind == TB_DOUBLE:
                if encoded & 1:
                    raise _ks_error(50822, "Unexpected decimal continuation.")
                return "double", None
            if kind != TB_DECIMAL or not encoded & 1:
                raise _ks_error(50823, "Expected decimal continuation.")
            r.skip(8)
            return "decimal", None
        if kind == TB_DOUBLE:
            if encoded & 3 != DCM_EQUAL_TO_DOUBLE:
                raise _ks_error(50824, "Decimal contuation mismatch.")
            return "double", None
        if kind != TB_DECIMAL:
            raise _ks_error(50825, "Unexpected type for small number, expected decimal.")
        if encoded & 3 in DCM_CONTINUATION:
            r.skip(8)
        return "decimal", None
    # 1..8 byte integers, possibly with a fraction.
    negative = ctype <= NUM_NEG_1
    nbytes = ctype - NUM_POS_1 + 1 if not negative else NUM_NEG_1 - ctype + 1
    kind = tb.numeric()
    encoded = 0
    for b in r.skip(nbytes):
        encoded = (encoded << 8) | (b ^ 0xFF if negative else b)
    if not encoded & 1:
        value = encoded >> 1
        value = -value if negative else value
        return {TB_INT: "int", TB_DOUBLE: "double", TB_LONG: "long", TB_DECIMAL: "decimal"}[kind], value
    frac = r.skip(8 - nbytes)
    if kind == TB_DOUBLE:
        return "double", None
    dcm = (frac[-1] ^ (0xFF if negative else 0)) & 3 if frac else 3
    if kind != TB_DECIMAL:
        raise _ks_error(50810, "Expected type Decimal.")
    if dcm in DCM_CONTINUATION:
        r.skip(8)
    return "decimal", None


def _value(ctype, r, tb, depth=1):
    """Decode one value of type `ctype`; returns (bson type name, value or None)."""
    if depth > 200:
        raise _ks_error(15, "KeyString encoding exceeded maximum allowable BSON nesting depth")
    if ctype == MIN_KEY:
        return "minKey", None
    if ctype == MAX_KEY:
        return "maxKey", None
    if ctype == NULLISH:
        return "null", None
    if ctype == UNDEFINED:
        return "undefined", None
    if ctype in (BOOL_TRUE, BOOL_FALSE):
        return "bool", ctype == BOOL_TRUE
    if ctype == DATE:
        return "date", struct.unpack(">Q", r.skip(8))[0] ^ (1 << 63)
    if ctype == TIMESTAMP:
        v = struct.unpack(">Q", r.skip(8))[0]
        return "timestamp", (v >> 32, v & 0xFFFFFFFF)
    if ctype == OID:
        r.skip(12)
        return "objectId", None
    if ctype in (STRING_LIKE, CODE):
        if ctype == STRING_LIKE:
            tb.bit()
        return ("string" if ctype == STRING_LIKE else "javascript"), r.cstring_with_nuls()
    if ctype == CODE_WITH_SCOPE:
        r.cstring_with_nuls()
        _object(r, tb, depth + 2)
        return "javascriptWithScope", None
    if ctype == BIN_DATA:
        size = r.byte()
        if size == 0xFF:
            size = struct.unpack(">I", r.skip(4))[0]
        subtype = r.byte()
        return "binData", (subtype, r.skip(size))
    if ctype == REGEX:
        r.cstring(), r.cstring()
        return "regex", None
    if ctype == DBREF:
        size = struct.unpack(">I", r.skip(4))[0]
        r.skip(size), r.skip(12)
        return "dbPointer", None
    if ctype == OBJECT:
        _object(r, tb, depth + 1)
        return "object", None
    if ctype == ARRAY:
        while True:
            t = r.byte()
            if t == 0:
                break
            _value(t, r, tb, depth + 1)
        return "array", None
    if NUM_NAN <= ctype <= NUM_POS_LARGE:
        return _number(ctype, r, tb)
    raise _ks_error(50811, "Unknown type: %d" % ctype)


def _object(r, tb, depth):
    while True:
        t = r.byte()
        if t == 0:
            return
        r.cstring()
        _value(t, r, tb, depth)


def _elements(raw, type_bits):
    """KeyString::toBsonSafe: the top-level values, up to kEnd or the end of the bytes."""
    r = _Reader(raw)
    tb = _TypeBits(type_bits)
    out = []
    while r.remaining():
        ctype = r.byte()
        if ctype in (LESS, GREATER):  # a discriminator: the type follows
            ctype = r.byte()
        if ctype == END:
            break
        out.append(_value(ctype, r, tb))
    return out


class TokenData:
    """What mongod reads from a resume token (ResumeTokenData)."""

    def __init__(self):
        self.cluster_time = (0, 0)
        self.version = 0
        self.token_type = EVENT_TOKEN
        self.txn_op_index = 0
        self.from_invalidate = False
        self.uuid = None
        self.has_event_identifier = False

    @property
    def is_high_water_mark(self):
        return (self.token_type == HIGH_WATER_MARK_TOKEN and not self.txn_op_index
                and not self.from_invalidate and self.uuid is None
                and not self.has_event_identifier)


def decode(raw, type_bits=None):
    """ResumeToken::getData on the decoded bytes of `_data`."""
    elems = iter(_elements(raw, type_bits))
    data = TokenData()
    first = next(elems, None)
    if first is None:
        raise CommandError(40649, "invalid empty resume token")
    if first[0] == "timestamp":
        data.cluster_time = first[1]
    elif first[0] == "date":  # BSONElement::timestamp() reads a Date's bits too
        data.cluster_time = (first[1] >> 32 & 0xFFFFFFFF, first[1] & 0xFFFFFFFF)
    version = next(elems, None)
    if version is None:
        raise CommandError(50796, "Resume Token does not contain version")
    if version[0] != "int":
        raise CommandError(50854, "Invalid resume token: wrong type for version")
    data.version = version[1]
    if data.version not in (0, 1, 2):
        raise CommandError(50795, "Invalid Resume Token: only supports version 0, 1 and 2")
    if data.version >= 1:
        token_type = next(elems, None)
        if token_type is None:
            raise CommandError(51055, "Resume Token does not contain tokenType")
        if token_type[0] != "int":
            raise CommandError(51056, "Resume Token tokenType is not an int.")
        if token_type[1] not in (HIGH_WATER_MARK_TOKEN, EVENT_TOKEN):
            raise CommandError(51057, "Token type %d not recognized" % token_type[1])
        data.token_type = token_type[1]
    txn = next(elems, None)
    if txn is None:
        raise CommandError(50793, "Resume Token does not contain txnOpIndex")
    if txn[0] != "int":
        raise CommandError(50855, "Resume Token txnOpIndex is not an integer")
    if txn[1] < 0:
        raise CommandError(50794, "Invalid Resume Token: txnOpIndex should be non-negative")
    data.txn_op_index = txn[1]
    if data.version >= 1:
        inv = next(elems, None)
        if inv is None:
            raise CommandError(50872, "Resume Token does not contain fromInvalidate")
        if inv[0] != "bool":
            raise CommandError(50870, "Resume Token fromInvalidate is not a boolean.")
        data.from_invalidate = inv[1]
    uuid = next(elems, None)
    if uuid is None:
        if data.version >= 2:
            raise CommandError(6189500, "Expected UUID or null")
        return data
    if uuid[0] != "null":
        if uuid[0] != "binData" or uuid[1][0] != 4 or len(uuid[1][1]) != 16:
            raise CommandError(207, "UUID must be a 16-byte binary field with UUID (4) subtype")
        data.uuid = uuid[1][1]
    event_id = next(elems, None)
    if data.token_type == HIGH_WATER_MARK_TOKEN and event_id is not None:
        raise CommandError(6189504, "Invalid high water mark token")
    if event_id is None:
        if data.token_type == EVENT_TOKEN and data.version >= 2:
            raise CommandError(6189501, "Expected an eventIdentifier for an event resume token")
        return data
    data.has_event_identifier = True
    if next(elems, None) is not None:
        raise CommandError(40646, "invalid oversized resume token")
    return data
