#!/usr/bin/python3
"""Story: changegate's FastCGI front end speaks the protocol as the specification says,
answers exactly what its HTTP front end answers, and shrugs off broken peers without
disturbing anyone else. Every byte is written by fcgi_client.py on real sockets.

1. Listeners. A stale socket file (bound, never listened on) waits at SOCK. changegate
   starts with an HTTP listener, fcgi://127.0.0.1:PORT and fcgi:unix:SOCK with
   --fcgi-socket-mode 0600 --fcgi-socket-owner nobody:nogroup (as root; otherwise our own
   user and group), --cors-origin https://app.example: SOCK is now a socket it serves,
   with that mode and owner. A second changegate asked for SOCK exits 1 saying another
   process listens there (SOCK untouched, still served); one asked for a regular file
   exits 1 saying it is not a socket (the file untouched).
2. Two sentinels subscribe and stay to the end: an SSE stream over FastCGI on the Unix
   socket, and an SSE stream over HTTP. An idle keep-conn FastCGI connection stays too.
3. Management records: GET_VALUES is answered with FCGI_MAX_CONNS, FCGI_MAX_REQS (the
   --max-subscribers) and FCGI_MPXS_CONNS 1, an unknown name left out; record types 42
   and 12 with id 0 get UNKNOWN_TYPE naming them.
4. The same request over FastCGI and over HTTP gets the same answer (status, body,
   Content-Type, Content-Length, Allow, Cache-Control, CORS headers): /healthz, 404, 405
   with Allow, 400 unknown_parameter, invalid_position (parameter and Last-Event-ID),
   invalid_parameter, 403 origin_not_allowed, HEAD /healthz and /events, OPTIONS
   preflights; /metrics has the same families. Routing is on the last path segment
   (/mount/point/healthz), or on SCRIPT_NAME + PATH_INFO without REQUEST_URI, with the
   query in QUERY_STRING alone. NUL bytes in HTTP_LAST_EVENT_ID or HTTP_ACCEPT, %00 in the
   path or a parameter, no REQUEST_METHOD, no path at all: 400 with the JSON error code.
   A PARAMS stream cut into 3-byte records (pairs and lengths across records) and
   records carrying 255 bytes of padding parse.
5. Keep-conn: one connection with FCGI_KEEP_CONN carries five requests one after
   another, ids reused; without KEEP_CONN changegate closes after END_REQUEST.
6. Events: inserts arrive on a FastCGI SSE stream (preamble first) with the ids the HTTP
   sentinel sees; HTTP_LAST_EVENT_ID resumes with exactly the rest (with the CORS headers
   for an allowed HTTP_ORIGIN); NDJSON by HTTP_ACCEPT from lastEventId in the query
   (opening with a heartbeat line); /poll with lastEventId in REQUEST_URI, and in
   QUERY_STRING alone with limit=2; events of 150 kB and 70 kB (several STDOUT records
   each) whole on SSE and in a /poll answer whose Content-Length is its length. Closing
   the connection drops its three streams at once (changegate_subscribers down,
   drops_total{client_gone} up by 3).
7. Multiplexing: requests 1 and 2 on one connection, their records interleaved, each an
   SSE stream of its own collection, get only their own events; ABORT_REQUEST of 1 ends
   it with END_REQUEST (nothing after) and a client_gone drop, 2 goes on, id 1 is reused;
   an ABORT_REQUEST before PARAMS ended gets END_REQUEST. 64 live requests on one
   connection are served, the 65th gets END_REQUEST OVERLOADED.
8. Broken peers, each on its own connection: a record cut short by the peer's close
   (a live stream on it is dropped); a name-value pair running past the end of PARAMS
   (400 bad_request, the connection goes on) and one declaring 2^31-1 bytes (431 at
   once, the connection goes on); malformed GET_VALUES pairs (closed); a second
   BEGIN_REQUEST for a live id (ignored, the stream goes on); a body on a GET (read and
   dropped); roles Authorizer, Filter and 99 (END_REQUEST UNKNOWN_ROLE; closed after it
   without KEEP_CONN); 64 KiB of random garbage, version 2, an HTTP request, a 5-byte
   BEGIN_REQUEST body (each closed, nothing answered); PARAMS of 64 KiB and 1024 pairs
   (answered) and one byte or pair more (431 headers_too_large JSON, the connection goes
   on); records for ids never begun, DATA and STDOUT for a live one (ignored); a request
   followed at once by the web server's FIN (shutdown of its sending side): answered,
   then closed. Afterwards both sentinels have every event written since step 2,
   exactly; the idle connection answers; changegate_subscribers is back to the two
   sentinels and drops_total{client_gone} rose by exactly the streams cut off.
9. fcgi:stdin: a changegate with a listening Unix socket as its stdin and no --listen
   serves FastCGI on it; `--listen fcgi:stdin` with /dev/null as stdin exits 1 saying
   so. fcgi:systemd: one started through `sh -c 'export LISTEN_PID=$$; exec "$@"'` with
   the socket at fd 3 and LISTEN_FDS=1 serves on it; with LISTEN_PID not its own it
   exits 1 saying systemd passed no socket. Those started exit 0 on SIGTERM.
10. changegate exits 0 on SIGTERM: the FastCGI sentinel gets its END_REQUEST before the
   connection closes, SOCK is removed; no log has a sanitizer report.

Checks that found bugs in changegate are collected and reported together at the end
(after everything else has run), so one bug does not hide the others.
"""
import grp
import os
import pwd
import random
import signal
import socket
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fcgi_client as fc  # noqa: E402
import harness as h  # noqa: E402

ORIGIN = "https://app.example"
MAX_SUBSCRIBERS = 100


# --------------------------------------------------------------------------- processes

class FcgiOnlyChangegate(h.Changegate):
    """A changegate with only the given listen arguments (no HTTP listener), started
    with inherited sockets; healthy when /healthz answers 200 over FastCGI."""

    def __init__(self, sc, mongo_uri, name, listen_args, address, stdin=None, pass_fds=(),
                 env=None, prefix=()):
        super().__init__(sc, mongo_uri, name=name)
        self.listen_args, self.address = list(listen_args), address
        self.stdin, self.pass_fds, self.env, self.prefix = stdin, pass_fds, env, list(prefix)

    def argv(self):
        return (self.prefix + h.WRAPPER + [h.CHANGEGATE, "--mongo-uri", self.mongo_uri,
                                           "--watch", self.watch, "--state-dir", self.state_dir,
                                           "--log-level", h.LOG_LEVEL,
                                           "--allow-public-unauthenticated"] + self.listen_args)

    def spawn(self):
        self.proc = h.Proc(self.name, self.argv(), self.log_path, stdin=self.stdin,
                                   pass_fds=self.pass_fds, env=self.env)
        self.sc.procs.append(self.proc)
        if self not in self.sc.changegates:
            self.sc.changegates.append(self)
        return self

    def start(self, wait_healthy=True, timeout=None):
        self.spawn()

        def healthy():
            self._check_alive()
            try:
                return fcgi_health(self.address, timeout=2) == 200
            except h.TestFailure:   # not answering yet: its listening socket predates it
                return False
        h.wait_until(healthy, 20 * h.SLOW, "%s /healthz over FastCGI" % self.name,
                     interval=0.1)
        h.say("%s (pid %d) serves FastCGI on %s", self.name, self.proc.pid, self.address)
        return self

    def wait_exit(self, timeout=20):
        try:
            return self.proc.popen.wait(timeout=timeout * h.SLOW)
        except subprocess.TimeoutExpired:
            raise h.TestFailure("%s did not exit within %ss" % (self.name, timeout * h.SLOW))


def fcgi_health(address, timeout=10):
    """The status of GET /healthz over one FastCGI connection without KEEP_CONN."""
    conn = fc.Connection(address)
    try:
        resp = conn.get(uri="/healthz", keep_conn=False, timeout=timeout)
        return resp.cgi()[0]
    finally:
        conn.close()


def listening_socket(path=None):
    """A listening socket: TCP on a free loopback port, or Unix at path."""
    s = socket.socket(socket.AF_UNIX if path else socket.AF_INET, socket.SOCK_STREAM)
    s.bind(path or ("127.0.0.1", 0))
    s.listen(64)
    return s


# --------------------------------------------------------------------------- checks

def check_length(resp, what):
    """A finished answer with a Content-Length: it is the body's length."""
    status, _, headers, body = resp.cgi()
    if "content-length" in headers:
        h.check(int(headers["content-length"]) == len(body), "%s: Content-Length %s, body of "
                "%d bytes", what, headers["content-length"], len(body))
    return status, headers, body


def answer_of(resp):
    """(status, JSON body or raw body, the headers both front ends must agree on)."""
    status, _, headers, body = resp.cgi()
    return status, body, headers


def same_as_http(cg, conn, method, uri, headers=None, what=None):
    """One request over FastCGI (on conn, keep-conn) and over HTTP: same status, same
    body, same Content-Type / Allow / Access-Control-* / Content-Length headers."""
    resp = conn.get(method=method, uri=uri, headers=headers)
    h.check(resp.protocol_status == fc.REQUEST_COMPLETE and resp.app_status == 0,
            "%s %s over FastCGI ended with %r", method, uri, resp)
    if method != "HEAD":
        check_length(resp, "%s %s" % (method, uri))
    f_status, f_body, f_headers = answer_of(resp)
    status, hdrs, body = h.request(cg.port, method, uri, headers=headers)
    what = what or "%s %s" % (method, uri)
    h.check(f_status == status, "%s: FastCGI answered %d, HTTP %d (%r / %r)", what, f_status,
            status, f_body[:200], body[:200])
    # /healthz carries the watcher's position, which a quiet change stream may move
    # between the two requests (post-batch resume tokens): compared without it.
    volatile = uri.endswith("/healthz")
    if volatile and method == "GET":
        f_json, json_ = h.json_body(f_body), h.json_body(body)
        f_json.pop("lastEventId", None)
        json_.pop("lastEventId", None)
        h.check(f_json == json_, "%s: FastCGI body %r differs from HTTP's %r", what, f_body,
                body)
    else:
        h.check(f_body == body, "%s: FastCGI body %r differs from HTTP's %r", what,
                f_body[:300], body[:300])
    for name in ("content-type", "allow", "content-length", "access-control-allow-origin",
                 "access-control-allow-credentials", "access-control-allow-methods",
                 "access-control-allow-headers", "access-control-max-age", "cache-control"):
        if name == "content-length" and (volatile or method == "HEAD" and name not in hdrs):
            continue
        h.check(f_headers.get(name) == hdrs.get(name), "%s: header %s is %r over FastCGI, "
                "%r over HTTP", what, name, f_headers.get(name), hdrs.get(name))
    return f_status, f_body


def params_of_size(size, uri="/healthz"):
    """CGI parameters whose PARAMS stream is exactly size bytes (a filler header)."""
    p = fc.cgi_params(uri=uri)
    name = "HTTP_X_FILL"
    p[name] = "f" * (size - len(fc.pairs(p)) - 5 - len(name))   # 1 + 4 length bytes
    h.check(len(fc.pairs(p)) == size, "params_of_size(%d) made %d", size, len(fc.pairs(p)))
    return p


def params_of_count(count, uri="/healthz"):
    """CGI parameters that are exactly count pairs."""
    p = fc.cgi_params(uri=uri)
    for i in range(count - len(p)):
        p["HTTP_X_%d" % i] = ""
    return p


def subscribers(cg):
    return cg.metrics().total("changegate_subscribers")


def client_gone(cg):
    return cg.metrics().value("changegate_drops_total", reason="client_gone")


def wait_subscribers(cg, n, what):
    seen = []

    def pred():
        seen[:] = [subscribers(cg)]
        return seen[0] == n
    try:
        h.wait_until(pred, 20 * h.SLOW, "%d subscribers (%s)" % (n, what))
    except h.TestFailure as e:
        raise h.TestFailure("%s; changegate_subscribers is %s" % (e, seen))


def wait_client_gone(cg, n, what):
    """drops_total{client_gone} reaches n (it moves just after the subscriber gauge)."""
    seen = []

    def pred():
        seen[:] = [client_gone(cg)]
        return seen[0] == n
    try:
        h.wait_until(pred, 10 * h.SLOW, "drops_total{client_gone} %d (%s)" % (n, what))
    except h.TestFailure as e:
        raise h.TestFailure("%s; it is %s" % (e, seen))


def check_closed(conn, what):
    conn.wait_closed()
    h.check(not conn.reader.mid_record(), "%s: the connection closed in the middle of a "
            "record from changegate (%d bytes)", what, len(conn.reader.buf))


def event_key(msg):
    ev = h.check_sse_event(msg)
    return ev["ns"]["coll"], h.seq_of(ev)


# --------------------------------------------------------------------------- the story

class Tale:
    """What the steps share: the processes, the connections that stay open, every write
    in order, the streams this story cut off, and the deviations found."""

    def __init__(self, sc):
        self.sc = sc
        self.mongo = sc.devmongo()
        self.writer = sc.writer(self.mongo.uri)
        self.written = []       # (collection, seq) of every insert, in order
        self.cut = 0            # streams cut off by this story: client_gone drops expected
        self.deviations = []    # checks that found bugs: reported together at the end
        self.others = []        # the changegates started besides the main one

    def write(self, coll, *seqs, pad=None):
        for s in seqs:
            doc = {"seq": s} if pad is None else {"seq": s, "pad": pad}
            self.writer.coll("fcgi", coll).insert_one(doc)
            self.written.append((coll, s))

    def expect(self, cond, msg, *args):
        if not cond:
            self.deviations.append(msg % args if args else msg)
            h.say("DEVIATION: %s", self.deviations[-1])
        return cond

    def conn(self, address=None):
        return self.sc.track(fc.Connection(address or self.tcp))

    def cut_off(self, n, what):
        """n streams were cut off: the subscriber gauge falls back to the sentinels."""
        self.cut += n
        wait_subscribers(self.cg, 2, what)

    def refused(self, name, listen_args, want, **kw):
        """A changegate that must exit 1 at start, saying want."""
        g = FcgiOnlyChangegate(self.sc, self.mongo.uri, name, listen_args, None, **kw).spawn()
        self.others.append(g)
        rc = g.wait_exit()
        g.proc.stop(wait=0, sig=None)
        h.check(rc == 1 and want in g.stderr(), "%s: exit status %s, expected 1 and %r in its "
                "log:\n%s", name, rc, want, g.stderr()[-1500:])


def listeners(t):
    """1. fcgi:unix over a stale socket file, its mode and owner; paths that are refused."""
    sc = t.sc
    t.sock_path = os.path.join(sc.mkdir("sock"), "changegate.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(t.sock_path)
    stale.close()
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(t.sock_path)
        raise h.TestFailure("the stale socket file accepts connections")
    except ConnectionRefusedError:
        pass
    finally:
        probe.close()
    if os.geteuid() == 0:
        owner, uid, gid = "nobody:nogroup", pwd.getpwnam("nobody").pw_uid, \
            grp.getgrnam("nogroup").gr_gid
    else:
        uid, gid = os.geteuid(), os.getegid()
        owner = "%s:%s" % (pwd.getpwuid(uid).pw_name, grp.getgrgid(gid).gr_name)
    fport = h.free_port()
    t.tcp = ("127.0.0.1", fport)
    t.cg = sc.changegate(t.mongo.uri, args=[
        "--listen", "fcgi://127.0.0.1:%d" % fport, "--listen", "fcgi:unix:" + t.sock_path,
        "--allow-public-unauthenticated",
        "--fcgi-socket-mode", "0600", "--fcgi-socket-owner", owner, "--cors-origin", ORIGIN,
        "--max-subscribers", str(MAX_SUBSCRIBERS), "--heartbeat", "300"])
    st = os.stat(t.sock_path)
    h.check(stat.S_ISSOCK(st.st_mode), "%s is not a socket", t.sock_path)
    h.check(fcgi_health(t.sock_path) == 200, "the stale socket file at %s was not replaced "
            "by one changegate serves", t.sock_path)
    h.check(stat.S_IMODE(st.st_mode) == 0o600, "socket mode is %04o, expected 0600",
            stat.S_IMODE(st.st_mode))
    h.check((st.st_uid, st.st_gid) == (uid, gid), "socket owner is %d:%d, expected %d:%d (%s)",
            st.st_uid, st.st_gid, uid, gid, owner)
    h.say("the stale socket file was replaced: %s is a socket changegate serves, mode 0600, "
          "owner %s", t.sock_path, owner)

    want = "another process is listening on %s" % t.sock_path
    t.refused("changegate-same-path", ["--listen", "fcgi:unix:" + t.sock_path], want)
    h.check(os.stat(t.sock_path).st_ino == st.st_ino and fcgi_health(t.sock_path) == 200,
            "the refused changegate took %s from the first one", t.sock_path)
    h.say("a second changegate on the same socket path: exit 1, %r; the first still serves",
          want)
    not_socket = os.path.join(sc.tmp, "sock", "not-a-socket")
    with open(not_socket, "w") as f:
        f.write("keep me\n")
    want = "%s exists and is not a socket" % not_socket
    t.refused("changegate-regular-file", ["--listen", "fcgi:unix:" + not_socket], want)
    with open(not_socket) as f:
        h.check(f.read() == "keep me\n", "the regular file at the socket path was changed")
    h.say("fcgi:unix on a regular file: exit 1, %r; the file untouched", want)


def sentinels(t):
    """2. Subscribers that stay to the end, and an idle keep-conn connection."""
    t.sentinel_conn = t.conn(t.sock_path)
    t.sentinel = fc.open_stream(t.sentinel_conn, 7, "/events")
    h.check(t.sentinel.status == 200 and t.sentinel.headers.get("content-type") ==
            "text/event-stream", "the FastCGI sentinel's head: %d %r", t.sentinel.status,
            t.sentinel.headers)
    t.http_sentinel = t.sc.track(t.cg.sse())
    t.http_seen = []
    t.idle = t.conn()
    wait_subscribers(t.cg, 2, "the two sentinels")
    h.say("sentinels: SSE over FastCGI on the Unix socket and SSE over HTTP; an idle "
          "connection")


def management(t):
    """3. GET_VALUES and UNKNOWN_TYPE."""
    c = t.mgmt = t.conn()
    c.send(fc.get_values(["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS",
                          "FCGI_NO_SUCH_VALUE"]))
    c.wait(lambda: c.values is not None, 10, "GET_VALUES_RESULT")
    v = c.values
    h.check(set(v) == {"FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"},
            "GET_VALUES_RESULT names %r", v)
    h.check(v["FCGI_MAX_CONNS"].isdigit() and int(v["FCGI_MAX_CONNS"]) > 0,
            "FCGI_MAX_CONNS is %r", v["FCGI_MAX_CONNS"])
    h.check(v["FCGI_MAX_REQS"] == str(MAX_SUBSCRIBERS), "FCGI_MAX_REQS is %r, expected %d",
            v["FCGI_MAX_REQS"], MAX_SUBSCRIBERS)
    h.check(v["FCGI_MPXS_CONNS"] == "1", "FCGI_MPXS_CONNS is %r", v["FCGI_MPXS_CONNS"])
    c.send(fc.record(42, 0, b"what is this") + fc.record(fc.UNKNOWN_TYPE + 1, 0))
    c.wait(lambda: len(c.unknown_types) == 2, 10, "two UNKNOWN_TYPE records")
    h.check(c.unknown_types == [42, 12], "UNKNOWN_TYPE named %r, expected [42, 12]",
            c.unknown_types)
    h.say("GET_VALUES: %s; types 42 and 12 answered with UNKNOWN_TYPE", v)


def same_answers(t):
    """4. FastCGI answers as HTTP does; routing; malformed parameters; record framing."""
    conn = t.main = t.conn()
    for method, uri, hdrs in [
            ("GET", "/healthz", None),
            ("GET", "/nope", None),
            ("POST", "/events", None),
            ("DELETE", "/poll", None),
            ("GET", "/events?bogus=1", None),
            ("GET", "/poll?lastEventId=zz", None),
            ("GET", "/events", {"Last-Event-ID": "not-a-position"}),
            ("GET", "/poll?timeout=999", None),
            ("GET", "/events", {"Origin": "https://evil.example"}),
            ("GET", "/nope", {"Origin": ORIGIN}),
            ("HEAD", "/healthz", None),
            ("HEAD", "/events", None),
            ("OPTIONS", "/events", {"Origin": ORIGIN}),
            ("OPTIONS", "/poll", {"Origin": "https://evil.example"})]:
        status, body = same_as_http(t.cg, conn, method, uri, hdrs)
        if status >= 400:
            err = h.json_body(body, "%s %s" % (method, uri))
            h.check(set(err) == {"error", "message"}, "error body %r", err)
    f_status, _, f_headers, f_body = conn.get(uri="/metrics").cgi()
    status, hdrs, body = h.request(t.cg.port, "GET", "/metrics")
    h.check(f_status == 200 and f_headers["content-type"] == hdrs["content-type"],
            "/metrics over FastCGI: %d %r", f_status, f_headers)
    families = {k[0] for k in h.parse_metrics(f_body.decode())}
    h.check(families == {k[0] for k in h.parse_metrics(body.decode())},
            "/metrics families differ between FastCGI and HTTP")
    h.check("changegate_subscribers" in families, "/metrics lacks changegate_subscribers")
    h.say("/healthz, /metrics, 404, 405 (Allow), 400 unknown_parameter / invalid_position / "
          "invalid_parameter, 403, HEAD, OPTIONS: FastCGI answers exactly as HTTP does")

    for what, kw in [
            ("a mount prefix", dict(uri="/mount/point/healthz")),
            ("SCRIPT_NAME + PATH_INFO", dict(uri="/cg", SCRIPT_NAME="/cg", PATH_INFO="/healthz",
                                             REQUEST_URI=None))]:
        status, _, body = conn.get(**kw).json()
        h.check(status == 200 and body.get("status") == "ok", "%s: /healthz answered %d %r",
                what, status, body)
    status, _, body = conn.get(uri="/x/poll", query="bogus=1", REQUEST_URI=None,
                               SCRIPT_NAME="/x", PATH_INFO="/poll").json()
    h.check(status == 400 and body["error"] == "unknown_parameter",
            "the query from QUERY_STRING alone: %d %r", status, body)
    for what, kw, code in [
            ("a NUL byte in HTTP_LAST_EVENT_ID",
             dict(uri="/events", headers={"Last-Event-ID": "826B\0AB"}), "invalid_position"),
            ("a NUL byte in HTTP_ACCEPT", dict(uri="/events", headers={"Accept": "a\0b"}),
             "bad_request"),
            ("%00 in the path", dict(uri="/ev%00ents"), "bad_request"),
            ("%00 in a parameter", dict(uri="/events?lastEventId=82%00AB"), "invalid_position"),
            ("no REQUEST_METHOD", dict(uri="/healthz", REQUEST_METHOD=None), "bad_request"),
            ("no REQUEST_URI nor SCRIPT_NAME",
             dict(uri="/healthz", REQUEST_URI=None, SCRIPT_NAME=None), "bad_request")]:
        resp = conn.get(**kw)
        check_length(resp, what)
        status, hdrs, body = resp.json()
        h.check(status == 400 and body.get("error") == code and
                hdrs.get("content-type") == "application/json",
                "%s: %d %r, expected 400 %s", what, status, body, code)
    h.say("routing on the last segment, on SCRIPT_NAME + PATH_INFO, the query in "
          "QUERY_STRING alone; NUL bytes, %00, no method, no path: 400 with the JSON code")

    # A PARAMS stream cut every 3 bytes (pairs and their lengths across records), and a
    # request whose every record carries 255 bytes of padding.
    stream = fc.pairs(fc.cgi_params(uri="/healthz", headers={"X-Long": "v" * 300}))
    conn.expect(1)
    conn.send(fc.begin_request(1, keep_conn=True) + b"".join(
        fc.record(fc.PARAMS, 1, stream[i:i + 3]) for i in range(0, len(stream), 3)) +
        fc.record(fc.PARAMS, 1) + fc.stdin(1))
    status, _, body = conn.wait_end(1).json()
    h.check(status == 200, "a PARAMS stream in 3-byte records: %d %r", status, body)
    conn.expect(1)
    conn.send(fc.record(fc.BEGIN_REQUEST, 1, fc.begin_request(1, keep_conn=True)[8:16],
                        padding=255) +
              fc.record(fc.PARAMS, 1, fc.pairs(fc.cgi_params(uri="/healthz")), padding=255) +
              fc.record(fc.PARAMS, 1, padding=255) + fc.record(fc.STDIN, 1, padding=255))
    status, _, body = conn.wait_end(1).json()
    h.check(status == 200, "a request with 255 bytes of padding per record: %d %r", status,
            body)
    h.say("PARAMS in 3-byte records, and records with 255 bytes of padding: answered")
    # HEAD /events over HTTP subscribed for a moment, and may count as a client_gone drop
    # when http.client closes (the HTTP front end counts it before the gauge moves): the
    # baseline for the drops this story causes is taken once that is over.
    wait_subscribers(t.cg, 2, "the sentinels alone")
    t.gone0 = client_gone(t.cg)


def keep_conn(t):
    """5. Requests one after another with KEEP_CONN; without it, closed after the answer."""
    conn = t.main
    for i, uri in enumerate(["/healthz", "/metrics", "/nope", "/poll?timeout=0", "/healthz"]):
        resp = conn.get(request_id=1 + i % 2, uri=uri)
        want = 404 if uri == "/nope" else 200
        h.check(resp.cgi()[0] == want and not conn.eof, "keep-conn request %d (%s): %r", i,
                uri, resp)
    once = fc.Connection(t.tcp)
    resp = once.get(uri="/healthz", keep_conn=False)
    h.check(resp.cgi()[0] == 200, "a request without KEEP_CONN: %r", resp)
    check_closed(once, "a request without KEEP_CONN")
    once.close()
    h.say("five requests one after another on one KEEP_CONN connection; without KEEP_CONN "
          "changegate closes after END_REQUEST")


def events(t):
    """6. SSE, resume, NDJSON, /poll, big events; closing drops the streams at once."""
    conn, written = t.main, t.written
    sse = fc.open_stream(conn, 3, "/events")
    h.check(sse.status == 200 and sse.headers.get("content-type") == "text/event-stream",
            "FastCGI SSE head %d %r", sse.status, sse.headers)
    first = sse.next_item()
    h.check(sse.raw().startswith(h.SSEClient.PREAMBLE),
            "the FastCGI SSE body does not start with the preamble: %r", sse.raw()[:80])
    h.check(isinstance(first, h.Comment) and first.text == "changegate", "first item %r", first)
    t.write("main", *range(5))
    got = sse.read_messages(5)
    ids = [m.id_field for m in got]
    h.check_sequence([event_key(m) for m in got], written[-5:], "FastCGI SSE")
    http = t.http_sentinel.read_messages(5)
    t.http_seen += [event_key(m) for m in http]
    h.check(ids == [m.id_field for m in http], "FastCGI ids %r differ from HTTP's %r", ids,
            [m.id_field for m in http])

    resumed = fc.open_stream(conn, 4, "/events", headers={"Last-Event-ID": ids[1],
                                                           "Origin": ORIGIN})
    h.check(resumed.headers.get("access-control-allow-origin") == ORIGIN and
            resumed.headers.get("access-control-allow-credentials") == "true",
            "a FastCGI stream with an allowed Origin lacks the CORS headers: %r",
            resumed.headers)
    h.check_sequence([event_key(m) for m in resumed.read_messages(3)], written[-3:],
                     "resumed with HTTP_LAST_EVENT_ID")
    nd = fc.open_stream(conn, 5, "/events?lastEventId=" + ids[2],
                        headers={"Accept": "application/x-ndjson"})
    h.check(nd.headers.get("content-type") == "application/x-ndjson", "NDJSON head %r",
            nd.headers)
    first = nd.next_line()
    h.check(h.is_heartbeat(first) and first.get("lastEventId", ids[2]) == ids[2],
            "an NDJSON stream from %s opened with %r, not a heartbeat line with that position",
            ids[2], first)
    t.write("main", 5)
    got_nd = [h.check_ndjson_event(o) for o in nd.read_events(3)]
    h.check_sequence([(e["ns"]["coll"], h.seq_of(e)) for e in got_nd], written[-3:],
                     "NDJSON by HTTP_ACCEPT from lastEventId")
    h.check_sequence([event_key(m) for m in resumed.read_messages(1)], written[-1:],
                     "the resumed stream, live")
    ids += [m.id_field for m in sse.read_messages(1)]

    status, _, body = conn.get(request_id=6, uri="/poll?timeout=10&lastEventId=" + ids[0]).json()
    h.check(status == 200 and [e["fullDocument"]["seq"] for e in body["events"]] == [1, 2, 3, 4, 5]
            and body["lastEventId"] == ids[5], "/poll from the first id: %d %r", status, body)
    status, _, body = conn.get(request_id=6, uri="/cg/poll", REQUEST_URI=None, SCRIPT_NAME="/cg",
                               PATH_INFO="/poll", query="limit=2&lastEventId=" + ids[0]).json()
    h.check(status == 200 and [e["fullDocument"]["seq"] for e in body["events"]] == [1, 2]
            and body["lastEventId"] == ids[2], "/poll?limit=2 by QUERY_STRING: %d %r", status,
            body)

    # Events larger than a record's 65535 bytes: split into records, whole at the end.
    t.write("big", 0, pad="x" * 150000)
    t.write("big", 1, pad="y" * 70000)
    pads = [len(h.check_sse_event(m)["fullDocument"]["pad"]) for m in sse.read_messages(2)]
    h.check(pads == [150000, 70000], "big events over FastCGI SSE: pads of %r", pads)
    resp = conn.get(request_id=6, uri="/poll?timeout=10&limit=5&lastEventId=" + ids[5])
    status, _, body = check_length(resp, "a /poll answer of 220 kB")
    got = h.json_body(body, "a /poll answer of 220 kB")["events"]
    h.check(status == 200 and [len(e["fullDocument"]["pad"]) for e in got] == [150000, 70000],
            "a /poll answer of 220 kB: %d, %d events", status, len(got))

    wait_subscribers(t.cg, 5, "three FastCGI streams and the sentinels")
    conn.close()
    t.cut_off(3, "the three streams' connection closed")
    wait_client_gone(t.cg, t.gone0 + t.cut, "three streams cut off")
    h.say("SSE (preamble, the HTTP ids), Last-Event-ID resume (CORS), NDJSON by Accept, /poll "
          "by REQUEST_URI and QUERY_STRING, events of 150 kB; closing the connection dropped "
          "its 3 streams at once")


def multiplexing(t):
    """7. Interleaved requests on one connection; ABORT_REQUEST; the per-connection limit."""
    mux = t.conn()
    p1 = fc.pairs(fc.cgi_params(uri="/events?ns=fcgi.a"))
    p2 = fc.pairs(fc.cgi_params(uri="/events?ns=fcgi.b"))
    mux.expect(1), mux.expect(2)
    mux.send(fc.begin_request(1, keep_conn=True) + fc.begin_request(2, keep_conn=True) +
             fc.record(fc.PARAMS, 1, p1[:20]) + fc.record(fc.PARAMS, 2, p2[:33]) +
             fc.record(fc.PARAMS, 1, p1[20:]) + fc.record(fc.PARAMS, 2, p2[33:]) +
             fc.record(fc.PARAMS, 2) + fc.record(fc.PARAMS, 1) + fc.stdin(2) + fc.stdin(1))
    s1, s2 = fc.Stream(mux, 1), fc.Stream(mux, 2)
    wait_subscribers(t.cg, 4, "two multiplexed streams")
    t.write("a", 100)
    t.write("b", 200)
    t.write("a", 101)
    t.write("b", 201)
    h.check_sequence([event_key(m) for m in s1.read_messages(2)], [("a", 100), ("a", 101)],
                     "multiplexed request 1 (ns=fcgi.a)")
    h.check_sequence([event_key(m) for m in s2.read_messages(2)], [("b", 200), ("b", 201)],
                     "multiplexed request 2 (ns=fcgi.b)")

    before = client_gone(t.cg)
    mux.send(fc.abort_request(1))
    mux.wait_end(1)     # any record for request 1 after its END_REQUEST fails the client
    h.check(s1.resp.protocol_status == fc.REQUEST_COMPLETE, "ABORT_REQUEST answered %r",
            s1.resp)
    t.cut += 1
    wait_subscribers(t.cg, 3, "request 1 aborted")
    wait_client_gone(t.cg, before + 1, "request 1 aborted")
    t.write("a", 102)
    t.write("b", 202)
    h.check_sequence([event_key(m) for m in s2.read_messages(1)], [("b", 202)],
                     "request 2 after request 1's abort")
    resp = mux.get(request_id=1, uri="/healthz")
    h.check(resp.cgi()[0] == 200, "id 1 reused after its abort: %r", resp)
    h.check(not s2.ended(), "request 2 ended with request 1")
    r3 = mux.expect(3)
    mux.send(fc.begin_request(3, keep_conn=True) +
             fc.record(fc.PARAMS, 3, fc.pairs({"REQUEST_METHOD": "GET"})) + fc.abort_request(3))
    mux.wait_end(3)
    h.check(r3.protocol_status == fc.REQUEST_COMPLETE and not r3.stdout,
            "ABORT_REQUEST before PARAMS ended: %r", r3)
    mux.close()
    t.cut_off(1, "the multiplexed connection closed")
    h.say("ids 1 and 2 interleaved on one connection got their own events; ABORT_REQUEST "
          "ended 1 with END_REQUEST while 2 went on, and 3 before its PARAMS ended")

    # As many live requests as a connection takes (64), and one more.
    full = t.conn()
    for i in range(1, 66):
        full.begin(i, fc.cgi_params(uri="/events?ns=fcgi.none"), keep_conn=True)
    last = full.wait_end(65)
    h.check(last.protocol_status == fc.OVERLOADED and not last.stdout,
            "request 65 on a connection with 64 live ones: %r", last)
    wait_subscribers(t.cg, 66, "64 streams on one connection")
    h.check(not any(full.responses[i].ended for i in range(1, 65)), "a live request ended")
    full.close()
    t.cut_off(64, "the connection with 64 streams closed")
    h.say("64 live requests on one connection; the 65th: END_REQUEST OVERLOADED")


def broken_peers(t):
    """8. Each on its own connection; none may disturb the others."""
    # A record cut short by the peer's close, with a live stream on the connection.
    c = fc.Connection(t.tcp)
    fc.open_stream(c, 1, "/events")
    wait_subscribers(t.cg, 3, "a stream on the connection about to break")
    c.send(fc.record(fc.STDIN, 1, b"x" * 1000)[:200])
    c.close()
    t.cut_off(1, "the connection closed mid-record")
    h.say("a record cut short by the peer's close: the connection and its stream are gone")

    # Name-value pairs that run past the end of the PARAMS stream, or past any limit.
    c = t.conn()
    c.expect(1)
    c.send(fc.begin_request(1, keep_conn=True) + fc.record(
        fc.PARAMS, 1, fc.name_value("REQUEST_METHOD", "GET") + bytes([100, 5]) + b"HTTP_X")
        + fc.record(fc.PARAMS, 1) + fc.stdin(1))
    status, hdrs, body = c.wait_end(1).json()
    h.check(status == 400 and body.get("error") == "bad_request" and
            hdrs.get("content-type") == "application/json",
            "a pair running past the end of PARAMS: %d %r %r", status, hdrs, body)
    c.expect(1)
    c.send(fc.begin_request(1, keep_conn=True) + fc.record(
        fc.PARAMS, 1, fc.name_value("REQUEST_METHOD", "GET") + fc.nv_length(0x7fffffff) +
        fc.nv_length(1) + b"HTTP_X"))
    status, _, body = c.wait_end(1).json()
    h.check(status == 431 and body.get("error") == "headers_too_large",
            "a pair declaring 2^31-1 bytes: %d %r", status, body)
    c.send(fc.record(fc.PARAMS, 1, b"more of it") + fc.record(fc.PARAMS, 1) + fc.stdin(1))
    h.check(c.get(uri="/healthz").cgi()[0] == 200 and not c.eof,
            "the connection did not go on after the malformed PARAMS")
    c.send(fc.record(fc.GET_VALUES, 0, fc.nv_length(50) + fc.nv_length(0) + b"FCGI_MAX"))
    check_closed(c, "malformed GET_VALUES pairs")
    h.say("a pair running past PARAMS' end: 400 bad_request; one declaring 2^31-1 bytes: 431 "
          "at once; the connection goes on; malformed GET_VALUES pairs: closed")

    # A second BEGIN_REQUEST for a live id; a body on a GET.
    c = t.conn()
    s = fc.open_stream(c, 1, "/events")
    c.send(fc.request(1, fc.cgi_params(uri="/healthz"), keep_conn=True))
    c.sync()
    h.check(not s.ended() and s.resp.stdout.count(b"Status:") == 1,
            "a second BEGIN_REQUEST for live id 1 was not ignored: %r %r", s.resp,
            bytes(s.resp.stdout[:300]))
    t.write("main", 6)
    h.check_sequence([event_key(m) for m in s.read_messages(1)], t.written[-1:],
                     "the live request after a second BEGIN_REQUEST for its id")
    resp = c.get(request_id=2, uri="/healthz", body=b"b" * 100000)
    h.check(resp.cgi()[0] == 200, "a GET /healthz with a 100 kB body: %r", resp)
    c.send(fc.stdin(1, b"a body for a stream"))
    t.write("main", 7)
    h.check_sequence([event_key(m) for m in s.read_messages(1)], t.written[-1:],
                     "the stream after STDIN for it")
    c.close()
    t.cut_off(1, "the stream's connection closed")
    h.say("a second BEGIN_REQUEST for a live id: ignored, the stream went on; a body on a "
          "GET: read and dropped")

    # Roles other than Responder.
    c = t.conn()
    for role in (fc.AUTHORIZER, fc.FILTER, 99):
        c.expect(3)
        c.send(fc.begin_request(3, role=role, keep_conn=True) +
               fc.params(3, fc.cgi_params()) + fc.stdin(3))
        resp = c.wait_end(3)
        h.check(resp.protocol_status == fc.UNKNOWN_ROLE and not resp.stdout,
                "role %d: %r %r", role, resp, bytes(resp.stdout[:200]))
    h.check(c.get(request_id=3, uri="/healthz").cgi()[0] == 200, "after the refused roles")
    c.expect(4)
    c.send(fc.begin_request(4, role=fc.AUTHORIZER) + fc.params(4, fc.cgi_params()))
    h.check(c.wait_end(4).protocol_status == fc.UNKNOWN_ROLE, "role 2 without KEEP_CONN")
    check_closed(c, "an unknown role without KEEP_CONN")
    h.say("roles 2, 3 and 99: END_REQUEST UNKNOWN_ROLE (the connection goes on with "
          "KEEP_CONN, closes without)")

    # Framing that cannot be read: each connection is closed, nothing answered.
    garbage = bytearray(random.Random(20261123).randbytes(64 * 1024))
    if garbage[0] == fc.VERSION_1:
        garbage[0] = 0xff
    for what, data in [
            ("64 KiB of random garbage", bytes(garbage)),
            ("version 2", fc.record(fc.BEGIN_REQUEST, 1, bytes([0, 1, 1, 0, 0, 0, 0, 0]),
                                    version=2)),
            ("an HTTP request", b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("a BEGIN_REQUEST body of 5 bytes", fc.record(fc.BEGIN_REQUEST, 1, b"\0\1\1\0\0"))]:
        c = fc.Connection(t.tcp)
        c.send(data, ignore_close=True)
        check_closed(c, what)
        h.check(not c.responses and c.values is None, "%s was answered", what)
        c.close()
    h.say("64 KiB of garbage, version 2, an HTTP request, a 5-byte BEGIN_REQUEST body: each "
          "connection closed")

    # PARAMS at and beyond the limits (64 KiB, 1024 pairs).
    c = t.conn()
    for what, items, want in (("PARAMS of 65536 bytes", params_of_size(65536), 200),
                              ("PARAMS of 65537 bytes", params_of_size(65537), 431),
                              ("1024 pairs", params_of_count(1024), 200),
                              ("1025 pairs", params_of_count(1025), 431)):
        c.expect(1)
        c.send(fc.begin_request(1, keep_conn=True) + fc.params(1, items) + fc.stdin(1))
        status, hdrs, body = c.wait_end(1).json()
        h.check(status == want and hdrs.get("content-type") == "application/json",
                "%s: %d %r, expected %d", what, status, body, want)
        h.check(want == 200 or body.get("error") == "headers_too_large", "%s: %r", what, body)
        h.check(c.get(uri="/healthz").cgi()[0] == 200, "the connection after %s", what)
    h.say("PARAMS of 64 KiB and of 1024 pairs: answered; one byte or one pair more: 431 "
          "headers_too_large as JSON; the connection goes on")

    # Records the specification says to ignore: for ids never begun; DATA (and STDOUT,
    # which only the application sends) for a live one.
    c = t.conn()
    s = fc.open_stream(c, 1, "/events?ns=fcgi.none")
    c.send(fc.record(fc.PARAMS, 9, fc.pairs(fc.cgi_params())) + fc.record(fc.PARAMS, 9) +
           fc.record(fc.STDIN, 9, b"body") + fc.abort_request(9) + fc.record(fc.DATA, 1, b"d") +
           fc.record(fc.STDOUT, 1, b"from the web server?") + fc.abort_request(0x7fff))
    c.sync()    # an answer to any of them would have come first (and failed the client)
    h.check(not s.ended() and c.get(request_id=2, uri="/healthz").cgi()[0] == 200,
            "the connection after records to ignore: %r", s.resp)
    c.close()
    t.cut_off(1, "the stream's connection closed")
    h.say("records for ids never begun, DATA and STDOUT for a live one: ignored")

    # A web server that shuts down its sending side after its request: the request and
    # the FIN reach changegate together (it is stopped while both are sent). The answer
    # is still owed before the connection closes.
    c = fc.Connection(t.tcp)
    resp = c.expect(1)
    t.cg.proc.send_signal(signal.SIGSTOP)
    try:
        c.send(fc.request(1, fc.cgi_params(uri="/healthz")))
        c.sock.shutdown(socket.SHUT_WR)
        time.sleep(0.1)     # loopback delivery; the check below holds either way
    finally:
        t.cg.proc.send_signal(signal.SIGCONT)
    check_closed(c, "a half-closed connection")
    c.close()
    t.expect(resp.ended and resp.cgi()[0] == 200, "GET /healthz sent with its FIN (the web "
             "server shut down its sending side): the connection was closed without the "
             "answer (%r)", resp)
    h.say("a request followed by the web server's FIN: %s",
          "answered, then closed" if resp.ended else "closed WITHOUT its answer")


def nobody_else_noticed(t):
    """8, end. The sentinels, the idle connection, the gauges."""
    t.write("main", 8, 9)
    got = [event_key(m) for m in t.sentinel.read_messages(len(t.written))]
    h.check_sequence(got, t.written, "the FastCGI sentinel")
    t.http_seen += [event_key(m) for m in
                    t.http_sentinel.read_messages(len(t.written) - len(t.http_seen))]
    h.check_sequence(t.http_seen, t.written, "the HTTP sentinel")
    h.check(t.idle.get(uri="/healthz").cgi()[0] == 200, "the idle keep-conn connection")
    wait_subscribers(t.cg, 2, "the end of the broken peers")
    h.check(t.cg.metrics().value("changegate_subscribers", transport="sse") == 2,
            "changegate_subscribers{sse} is not 2")
    wait_client_gone(t.cg, t.gone0 + t.cut, "%d streams cut off" % t.cut)
    h.say("both sentinels got all %d events exactly, the idle connection answers, "
          "subscribers back to 2, client_gone +%d", len(t.written), t.cut)


def inherited_sockets(t):
    """9. fcgi:stdin (also without --listen) and fcgi:systemd."""
    sc = t.sc
    addr = os.path.join(sc.tmp, "sock", "stdin.sock")
    lsock = listening_socket(addr)
    g = FcgiOnlyChangegate(sc, t.mongo.uri, "changegate-stdin", [], addr, stdin=lsock)
    t.others.append(g)
    g.start()
    lsock.close()
    c = fc.Connection(addr)
    s = fc.open_stream(c, 1, "/events?ns=fcgi.stdin")
    t.write("stdin", 300)
    h.check_sequence([event_key(m) for m in s.read_messages(1)], [("stdin", 300)],
                     "a stream from fcgi:stdin")
    c.close()
    g.stop()
    h.say("no --listen, a listening Unix socket on stdin: changegate serves FastCGI on it")
    want = "descriptor 0 is not a listening stream socket"
    t.refused("changegate-stdin-devnull", ["--listen", "fcgi:stdin"], want)
    h.say("--listen fcgi:stdin when stdin is /dev/null: exit 1, %r", want)

    # The shell gets the socket as its stdin and moves it to fd 3 (dash takes one-digit
    # descriptors only); changegate's fd 0 is then /dev/null, as under systemd.
    lsock = listening_socket()
    addr = lsock.getsockname()
    move = ' 3<&0 0</dev/null'
    env = dict(os.environ, LISTEN_FDS="1")
    g = FcgiOnlyChangegate(sc, t.mongo.uri, "changegate-systemd", ["--listen", "fcgi:systemd"],
                           addr, stdin=lsock, env=env,
                           prefix=["/bin/sh", "-c", 'export LISTEN_PID=$$; exec "$@"' + move,
                                   "sh"])
    t.others.append(g)
    g.start()
    c = fc.Connection(addr)
    c.send(fc.get_values(["FCGI_MPXS_CONNS"]))
    c.wait(lambda: c.values is not None, 10, "GET_VALUES_RESULT from fcgi:systemd")
    resp = c.get(uri="/events", method="HEAD")
    h.check(resp.cgi()[0] == 200, "HEAD /events from fcgi:systemd: %r", resp)
    c.close()
    g.stop()
    t.refused("changegate-systemd-other-pid", ["--listen", "fcgi:systemd"],
              "systemd passed no socket", stdin=lsock, env=dict(env, LISTEN_PID="1"),
              prefix=["/bin/sh", "-c", 'exec "$@"' + move, "sh"])
    lsock.close()
    h.say("fcgi:systemd: the socket at fd 3 with LISTEN_PID=$$ serves; LISTEN_PID=1: exit 1, "
          "'systemd passed no socket'")


def the_end(t):
    """10. SIGTERM: the FastCGI stream ends cleanly, the socket file goes."""
    for c in (t.idle, t.mgmt):
        c.close()
    t.http_sentinel.close()
    t.cg.stop()
    t.sentinel_conn.wait_closed()
    t.expect(t.sentinel.resp.ended and t.sentinel.resp.protocol_status == fc.REQUEST_COMPLETE,
             "a FastCGI stream open at SIGTERM was not ended with END_REQUEST (%r)",
             t.sentinel.resp)
    h.check(not os.path.exists(t.sock_path), "%s still exists after changegate stopped",
            t.sock_path)
    for g in [t.cg] + t.others:
        log = g.stderr()
        for needle in ("runtime error:", "AddressSanitizer", "LeakSanitizer"):
            h.check(needle not in log, "%s's log has a sanitizer report (%r)", g.name, needle)
    h.say("changegate stopped (exit 0): the FastCGI sentinel got its END_REQUEST, %s is "
          "gone; no sanitizer report in any log", t.sock_path)


def story(sc):
    t = Tale(sc)
    listeners(t)
    sentinels(t)
    management(t)
    same_answers(t)
    keep_conn(t)
    events(t)
    multiplexing(t)
    broken_peers(t)
    nobody_else_noticed(t)
    inherited_sockets(t)
    the_end(t)
    h.check(not t.deviations, "%d deviation(s) from the expected behaviour:\n  %s",
            len(t.deviations), "\n  ".join(t.deviations))


if __name__ == "__main__":
    h.run(story)
