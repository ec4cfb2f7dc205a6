"""A raw FastCGI 1.0 client for changegate's integration scenarios: the web server's side
of the protocol, written out byte by byte so that a test can send exactly what it means,
including what no web server would send.

Encoding (each function returns bytes):
    record(type, request_id, content)            one record; version, padding adjustable
    name_value(name, value), pairs(items)        name-value pairs, 1- or 4-byte lengths
    begin_request(id, role, keep_conn)           FCGI_BEGIN_REQUEST
    params(id, items)                            a whole PARAMS stream (split at 65535,
                                                 ended by the empty record)
    stdin(id, body)                              a whole STDIN stream
    abort_request(id), get_values(names)
    request(id, items, keep_conn, body)          BEGIN_REQUEST + PARAMS + STDIN
    cgi_params(method, uri, headers=...)         the CGI variables nginx would send

Decoding:
    RecordReader.feed(bytes) -> [Record]         whole records out of a byte stream
    Connection                                   one socket; records sorted per request id
                                                 into Response objects (stdout, stderr,
                                                 end), management answers kept apart
    parse_cgi(stdout) -> (status, headers, body) the CGI head ("Status: 404 Not Found")
    Stream                                       an SSE or NDJSON body read incrementally
                                                 from one request's STDOUT

Every wait is bounded; failures raise harness.TestFailure with what was received.
"""

import json
import select
import socket
import struct
import time

import harness as h

VERSION_1 = 1
HEADER_LEN = 8
MAX_CONTENT = 65535

BEGIN_REQUEST = 1
ABORT_REQUEST = 2
END_REQUEST = 3
PARAMS = 4
STDIN = 5
STDOUT = 6
STDERR = 7
DATA = 8
GET_VALUES = 9
GET_VALUES_RESULT = 10
UNKNOWN_TYPE = 11

RESPONDER = 1
AUTHORIZER = 2
FILTER = 3

KEEP_CONN = 1

REQUEST_COMPLETE = 0
CANT_MPX_CONN = 1
OVERLOADED = 2
UNKNOWN_ROLE = 3

TYPE_NAMES = {1: "BEGIN_REQUEST", 2: "ABORT_REQUEST", 3: "END_REQUEST", 4: "PARAMS",
              5: "STDIN", 6: "STDOUT", 7: "STDERR", 8: "DATA", 9: "GET_VALUES",
              10: "GET_VALUES_RESULT", 11: "UNKNOWN_TYPE"}
STATUS_NAMES = {0: "REQUEST_COMPLETE", 1: "CANT_MPX_CONN", 2: "OVERLOADED", 3: "UNKNOWN_ROLE"}


# --------------------------------------------------------------------------- encoding

def _b(s):
    return s if isinstance(s, (bytes, bytearray)) else str(s).encode("latin-1")


def record(type_, request_id, content=b"", padding=None, version=VERSION_1,
           content_length=None):
    """One record. padding: bytes of padding (default: to a multiple of 8).
    content_length: what the header declares, when a test wants it to lie."""
    content = _b(content)
    if padding is None:
        padding = (8 - len(content) % 8) % 8
    clen = len(content) if content_length is None else content_length
    return (struct.pack(">BBHHBx", version, type_, request_id, clen, padding) + content
            + b"\0" * padding)


def nv_length(n):
    """A name-value length: one byte up to 127, else four with the high bit set."""
    return bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)


def name_value(name, value):
    name, value = _b(name), _b(value)
    return nv_length(len(name)) + nv_length(len(value)) + name + value


def pairs(items):
    """items: a dict or a list of (name, value)."""
    if isinstance(items, dict):
        items = list(items.items())
    return b"".join(name_value(k, v) for k, v in items)


def stream(type_, request_id, data):
    """A whole stream (PARAMS, STDIN): data split into records of at most 65535 bytes,
    then the empty record that ends it."""
    data = _b(data)
    out = [record(type_, request_id, data[i:i + MAX_CONTENT])
           for i in range(0, len(data), MAX_CONTENT)]
    return b"".join(out) + record(type_, request_id)


def begin_request(request_id, role=RESPONDER, keep_conn=False):
    return record(BEGIN_REQUEST, request_id,
                  struct.pack(">HB5x", role, KEEP_CONN if keep_conn else 0))


def params(request_id, items):
    return stream(PARAMS, request_id, pairs(items))


def stdin(request_id, body=b""):
    return stream(STDIN, request_id, body)


def abort_request(request_id):
    return record(ABORT_REQUEST, request_id)


def get_values(names):
    return record(GET_VALUES, 0, pairs([(n, "") for n in names]))


def request(request_id, items, keep_conn=False, body=b""):
    """What a web server sends for one request: BEGIN_REQUEST, PARAMS, STDIN."""
    return begin_request(request_id, keep_conn=keep_conn) + params(request_id, items) + \
        stdin(request_id, body)


def cgi_params(method="GET", uri="/healthz", headers=None, query=None, **extra):
    """The CGI variables a web server sends for `method uri`. headers: HTTP header names
    as sent on the wire ("Last-Event-ID") -> HTTP_LAST_EVENT_ID. query: sent as
    QUERY_STRING only (None: the part of uri after '?'). extra: more variables; a value
    None removes one (e.g. REQUEST_URI=None to route on SCRIPT_NAME + PATH_INFO)."""
    path, _, qs = uri.partition("?")
    p = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": "changegate-tests",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "REQUEST_METHOD": method,
        "REQUEST_URI": uri,
        "SCRIPT_NAME": path,
        "QUERY_STRING": qs if query is None else query,
        "HTTP_HOST": "127.0.0.1",
    }
    for name, value in (headers or {}).items():
        p["HTTP_" + name.upper().replace("-", "_")] = value
    for k, v in extra.items():
        if v is None:
            p.pop(k, None)
        else:
            p[k] = v
    return p


# --------------------------------------------------------------------------- decoding

class Record:
    def __init__(self, version, type_, request_id, content):
        self.version, self.type, self.request_id, self.content = version, type_, request_id, content

    def __repr__(self):
        return "<%s id=%d %d bytes%s>" % (TYPE_NAMES.get(self.type, "type %d" % self.type),
                                          self.request_id, len(self.content),
                                          " %r" % self.content[:60] if self.content else "")


class RecordReader:
    """Whole records out of bytes fed in any pieces."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data
        out = []
        while len(self.buf) >= HEADER_LEN:
            version, type_, rid, clen, plen = struct.unpack(">BBHHBx", self.buf[:HEADER_LEN])
            h.check(version == VERSION_1, "changegate sent a record of version %d: %r",
                    version, bytes(self.buf[:16]))
            end = HEADER_LEN + clen + plen
            if len(self.buf) < end:
                break
            out.append(Record(version, type_, rid, bytes(self.buf[HEADER_LEN:HEADER_LEN + clen])))
            del self.buf[:end]
        return out

    def mid_record(self):
        return len(self.buf) > 0


def decode_pairs(data):
    """Name-value pairs -> list of (name, value) bytes."""
    out, pos = [], 0

    def length():
        nonlocal pos
        if data[pos] & 0x80:
            n = struct.unpack(">I", data[pos:pos + 4])[0] & 0x7fffffff
            pos += 4
        else:
            n = data[pos]
            pos += 1
        return n
    while pos < len(data):
        nl = length()
        vl = length()
        out.append((data[pos:pos + nl], data[pos + nl:pos + nl + vl]))
        pos += nl + vl
    h.check(pos == len(data), "name-value pairs run past their record: %r", data)
    return out


def parse_cgi(stdout):
    """A CGI response (what a Responder writes on STDOUT) -> (status, reason, headers as a
    lowercase dict, body). Fails when there is no complete head."""
    data = bytes(stdout)
    end = data.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end, sep = data.find(b"\n\n"), 2
    h.check(end >= 0, "no complete CGI head in STDOUT: %r", data[:300])
    headers = {}
    for line in data[:end].decode("latin-1").splitlines():
        k, colon, v = line.partition(":")
        h.check(colon, "CGI head line without a colon: %r (head %r)", line, data[:end])
        h.check(k.strip().lower() not in headers, "header %s twice in %r", k, data[:end])
        headers[k.strip().lower()] = v.strip()
    h.check("status" in headers, "CGI head without Status: %r", data[:end])
    code, _, reason = headers["status"].partition(" ")
    return int(code), reason, headers, data[end + sep:]


class Response:
    """What came back for one request id: STDOUT and STDERR bytes, and END_REQUEST."""

    def __init__(self, request_id):
        self.id = request_id
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.stdout_closed = False   # the empty STDOUT record came
        self.ended = False           # END_REQUEST came
        self.app_status = None
        self.protocol_status = None
        self.types = []              # the record types received, in order

    def add(self, rec):
        h.check(not self.ended, "request %d: %r after its END_REQUEST", self.id, rec)
        self.types.append(rec.type)
        if rec.type == STDOUT:
            h.check(not self.stdout_closed, "request %d: STDOUT after its empty STDOUT record",
                    self.id)
            if rec.content:
                self.stdout += rec.content
            else:
                self.stdout_closed = True
        elif rec.type == STDERR:
            self.stderr += rec.content
        elif rec.type == END_REQUEST:
            h.check(len(rec.content) == 8, "END_REQUEST with %d bytes of body", len(rec.content))
            self.app_status, self.protocol_status = struct.unpack(">IB3x", rec.content)
            self.ended = True
            # A stream that was opened is closed before END_REQUEST (an answer that
            # wrote nothing, like a refusal or an early abort, opened none).
            if self.stdout:
                h.check(self.stdout_closed, "request %d: END_REQUEST before the empty STDOUT "
                        "record", self.id)
        else:
            raise h.TestFailure("request %d: unexpected record %r" % (self.id, rec))

    def cgi(self):
        """(status, reason, headers, body) of a finished request."""
        return parse_cgi(self.stdout)

    def json(self):
        status, _, headers, body = self.cgi()
        return status, headers, h.json_body(body, "FastCGI answer")

    def __repr__(self):
        return "<request %d: %d bytes of stdout%s>" % (
            self.id, len(self.stdout), ", ended %s" % STATUS_NAMES.get(self.protocol_status)
            if self.ended else "")


class Connection:
    """One FastCGI connection from the web server's side, over TCP ((host, port)) or a Unix
    socket (a path). Records received are sorted into self.responses[id] (the Response of
    the latest request begun with that id) and, for id 0, into self.values
    (GET_VALUES_RESULT) and self.unknown_types (UNKNOWN_TYPE's type byte)."""

    def __init__(self, address, timeout=10):
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        self.address = address
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout * h.SLOW)
        self.sock.connect(address)
        self.sock.setblocking(False)
        self.reader = RecordReader()
        self.responses = {}
        self.values = None
        self.values_answers = 0
        self.unknown_types = []
        self.eof = False          # changegate closed the connection (or reset it)
        self.reset = False

    # -- sending
    def send(self, data, ignore_close=False):
        """Sends all of data. ignore_close: changegate may close the connection part-way
        (it refuses what it reads): stop sending then, without failing."""
        view = memoryview(_b(data))
        deadline = time.monotonic() + 10 * h.SLOW
        while view:
            try:
                n = self.sock.send(view)
                view = view[n:]
            except BlockingIOError:
                select.select([], [self.sock], [], 0.2)
            except (BrokenPipeError, ConnectionResetError):
                if ignore_close:
                    return False
                raise h.TestFailure("changegate closed the FastCGI connection while we sent")
            if time.monotonic() > deadline:
                raise h.TestFailure("could not send %d more bytes in 10 s" % len(view))
        return True

    def begin(self, request_id, items, keep_conn=True, body=b""):
        """Sends a whole request; returns its Response (filled as records arrive)."""
        self.responses[request_id] = Response(request_id)
        self.send(request(request_id, items, keep_conn=keep_conn, body=body))
        return self.responses[request_id]

    def expect(self, request_id):
        """A fresh Response for request_id (for requests sent by hand with send())."""
        self.responses[request_id] = Response(request_id)
        return self.responses[request_id]

    # -- receiving
    def pump(self, timeout):
        """Reads what arrives within timeout (at least one read attempt); returns the
        records received. Sets eof when changegate closed the connection."""
        if self.eof:
            return []
        r, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not r:
            return []
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return []
        except ConnectionResetError:
            data = b""
            self.reset = True
        if not data:
            self.eof = True
            return []
        recs = self.reader.feed(data)
        for rec in recs:
            self._dispatch(rec)
        return recs

    def _dispatch(self, rec):
        if rec.request_id == 0:
            if rec.type == GET_VALUES_RESULT:
                self.values = {k.decode(): v.decode() for k, v in decode_pairs(rec.content)}
                self.values_answers += 1
            elif rec.type == UNKNOWN_TYPE:
                h.check(len(rec.content) == 8, "UNKNOWN_TYPE with %d bytes", len(rec.content))
                self.unknown_types.append(rec.content[0])
            else:
                raise h.TestFailure("unexpected management record %r" % rec)
            return
        resp = self.responses.get(rec.request_id)
        h.check(resp is not None, "%r for a request id never begun", rec)
        resp.add(rec)

    def wait(self, pred, timeout, what):
        """Pumps until pred() is true; fails naming what (and what came) on timeout."""
        deadline = time.monotonic() + timeout * h.SLOW
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                raise h.TestFailure("FastCGI %s: timed out after %.0fs waiting for %s (eof %s; "
                                    "responses %r)" % (self.address, timeout * h.SLOW, what,
                                                       self.eof, list(self.responses.values())))
            if self.eof and not pred():
                raise h.TestFailure("FastCGI %s: changegate closed the connection while we "
                                    "waited for %s (responses %r)" % (
                                        self.address, what, list(self.responses.values())))
            self.pump(min(left, 0.5))
        return True

    def wait_end(self, request_id, timeout=10):
        resp = self.responses[request_id]
        self.wait(lambda: resp.ended, timeout, "END_REQUEST of request %d" % request_id)
        return resp

    def wait_closed(self, timeout=10):
        """Waits for changegate to close the connection; every record before is kept."""
        deadline = time.monotonic() + timeout * h.SLOW
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise h.TestFailure("FastCGI %s: changegate did not close the connection "
                                    "within %.0fs" % (self.address, timeout * h.SLOW))
            self.pump(min(left, 0.5))
        return True

    def sync(self, timeout=10):
        """A GET_VALUES round trip: changegate handles a connection's records in order,
        so once its answer is here, everything sent before has been handled (and
        whatever it answered to that has arrived)."""
        before = self.values_answers
        self.send(get_values(["FCGI_MPXS_CONNS"]))
        self.wait(lambda: self.values_answers > before, timeout, "GET_VALUES_RESULT (sync)")

    def get(self, request_id=1, timeout=10, keep_conn=True, body=b"", **kw):
        """One whole request (cgi_params(**kw)) and its answer: the finished Response."""
        self.begin(request_id, cgi_params(**kw), keep_conn=keep_conn, body=body)
        return self.wait_end(request_id, timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------- streams

class Stream:
    """An SSE (or NDJSON) body read incrementally from one request's STDOUT, on a
    Connection that may carry other requests too. The CGI head is parsed first."""

    def __init__(self, conn, request_id, timeout=10):
        self.conn, self.id = conn, request_id
        self.resp = conn.responses[request_id]
        conn.wait(lambda: b"\r\n\r\n" in self.resp.stdout or self.resp.ended, timeout,
                  "the CGI head of request %d" % request_id)
        self.status, self.reason, self.headers, _ = parse_cgi(self.resp.stdout)
        self.offset = bytes(self.resp.stdout).index(b"\r\n\r\n") + 4
        self.parser = h.SSEParser()
        self.pending = []
        self.lines = bytearray()    # NDJSON: the unfinished line

    def _new_bytes(self):
        data = bytes(self.resp.stdout[self.offset:])
        self.offset += len(data)
        return data

    def raw(self):
        """The body bytes received so far (SSE), from the start."""
        self.pending.extend(self.parser.feed(self._new_bytes()))
        return bytes(self.parser.raw)

    def ended(self):
        return self.resp.ended

    def next_item(self, timeout=10):
        """The next SSE item (harness Message, Comment or IdOnly); None once the request
        has ended and everything was read."""
        deadline = time.monotonic() + timeout * h.SLOW
        while True:
            self.pending.extend(self.parser.feed(self._new_bytes()))
            if self.pending:
                return self.pending.pop(0)
            if self.resp.ended or self.conn.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("request %d: no SSE item" % self.id)
            self.conn.pump(min(left, 0.5))

    def read_messages(self, n, timeout=20):
        """Exactly n data messages (comments and id-only heartbeats skipped)."""
        got = []
        deadline = time.monotonic() + timeout * h.SLOW
        while len(got) < n:
            try:
                item = self.next_item(max(0.0, deadline - time.monotonic()) / h.SLOW)
            except TimeoutError:
                raise h.TestFailure("FastCGI request %d: %d of %d SSE messages before the "
                                    "timeout; last %r" % (self.id, len(got), n, got[-1:]))
            h.check(item is not None, "FastCGI request %d ended (%r) after %d of %d messages",
                    self.id, self.resp, len(got), n)
            if isinstance(item, h.Message):
                got.append(item)
        return got

    def next_line(self, timeout=10):
        """NDJSON: the next line parsed as JSON; None once the request ended."""
        deadline = time.monotonic() + timeout * h.SLOW
        while True:
            self.lines += self._new_bytes()
            k = self.lines.find(b"\n")
            if k >= 0:
                line = bytes(self.lines[:k])
                del self.lines[:k + 1]
                try:
                    return json.loads(line.decode())
                except ValueError as e:
                    raise h.TestFailure("NDJSON line is not JSON (%s): %r" % (e, line[:300]))
            if self.resp.ended or self.conn.eof:
                return None
            left = deadline - time.monotonic()
            h.check(left > 0, "FastCGI request %d: no NDJSON line in time", self.id)
            self.conn.pump(min(left, 0.5))

    def read_events(self, n, timeout=20):
        """Exactly n NDJSON event lines (heartbeats skipped)."""
        got = []
        while len(got) < n:
            obj = self.next_line(timeout)
            h.check(obj is not None, "FastCGI request %d ended after %d of %d NDJSON events",
                    self.id, len(got), n)
            if not h.is_heartbeat(obj):
                got.append(obj)
        return got


def open_stream(conn, request_id, uri="/events", headers=None, keep_conn=True, **kw):
    """Begins GET uri on conn and returns its Stream once the head is in."""
    conn.begin(request_id, cgi_params("GET", uri, headers=headers, **kw), keep_conn=keep_conn)
    return Stream(conn, request_id)
