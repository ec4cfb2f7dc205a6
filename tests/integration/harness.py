"""Shared helpers for changegate's integration scenarios.

Every scenario is a plain script (`/usr/bin/python3 tests/integration/test_X.py`)
that calls `harness.run(story)`. The story gets a `Scenario` object that starts
devmongo and changegate on free loopback ports, opens SSE / NDJSON / long-poll
clients and writes through pymongo. Whatever happens (pass, assertion, exception,
Ctrl-C, SIGTERM, the scenario's time limit), every process the scenario started is
stopped before the script exits: first with SIGTERM, then SIGKILL on its process
group. changegate must exit 0 after SIGTERM; that is asserted for every changegate
stop in a passing run.

Environment:
  CHANGEGATE     the daemon (default <repo>/src/changegate)
  DEVMONGO       the development MongoDB (default <repo>/tests/devmongo/devmongo)
  CG_WRAPPER     a command prefix for changegate, e.g. valgrind (split with shlex)
  CG_LOG_LEVEL   changegate's --log-level (default debug)
  CG_TEST_TIMEOUT  the scenario's time limit in seconds (default 60, x5 under CG_WRAPPER)
  CG_KEEP_TMP    keep the scenario's temporary directory even when it passes

Only the standard library and Debian's pymongo 3.11 are used.
"""

import atexit
import codecs
import http.client
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.environ.get("CG_SRCDIR") or os.path.join(HERE, "..", ".."))
CHANGEGATE = os.environ.get("CHANGEGATE") or os.path.join(REPO, "src", "changegate")
DEVMONGO = os.environ.get("DEVMONGO") or os.path.join(REPO, "tests", "devmongo", "devmongo")
PYTHON = "/usr/bin/python3"
WRAPPER = shlex.split(os.environ.get("CG_WRAPPER", ""))
LOG_LEVEL = os.environ.get("CG_LOG_LEVEL", "debug")
# Everything that waits for changegate waits longer under a wrapper (valgrind is ~20x
# slower) and in a sanitizer build (tests/run.sh sets ASAN_OPTIONS for it; ASan makes the
# catch-up scenarios 3-5x slower). These are hang guards, not timings.
SLOW = 5.0 if WRAPPER else 3.0 if os.environ.get("ASAN_OPTIONS") else 1.0
STOP_WAIT = 30.0 if WRAPPER else 10.0


class TestFailure(AssertionError):
    pass


class ScenarioTimeout(BaseException):
    """Raised by SIGALRM when a scenario exceeds its time limit (BaseException so that
    no `except Exception` in a story swallows it)."""


def check(cond, msg, *args):
    """assert that survives `python -O` and formats lazily."""
    if not cond:
        raise TestFailure(msg % args if args else msg)


def say(msg, *args):
    text = msg % args if args else msg
    print("[%7.2fs] %s" % (time.monotonic() - _T0, text), flush=True)


_T0 = time.monotonic()


# --------------------------------------------------------------------------- ports, dirs

def free_port():
    """A loopback TCP port that nothing listens on right now."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def wait_until(pred, timeout, what, interval=0.05):
    """Call pred() until it returns a true value; return that value. Fail naming `what`."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except (OSError, http.client.HTTPException) as e:
            last_exc = e
        if time.monotonic() >= deadline:
            raise TestFailure("timed out after %.1fs waiting for %s%s" % (
                timeout, what, " (last error: %r)" % (last_exc,) if last_exc else ""))
        time.sleep(interval)


# --------------------------------------------------------------------------- processes

_ALL_PROCS = []          # every Proc ever started, for the atexit / signal safety net
_ALL_PROCS_LOCK = threading.Lock()


class Proc:
    """A child process in its own process group, output going to a log file.
    pipes=True: stdin and stdout are pipes to the test (popen.stdin, popen.stdout), and
    only stderr goes to the log file. Otherwise stdin is /dev/null, or the given file or
    socket (a listening socket, for a FastCGI application); pass_fds are inherited;
    stdout: a file descriptor for the child's stdout (e.g. a pseudo-terminal), and then
    only stderr goes to the log file."""

    def __init__(self, name, argv, log_path, env=None, pipes=False, cwd=None, stdin=None,
                 pass_fds=(), stdout=None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.log.write(("\n===== start %s: %s\n" % (time.strftime("%H:%M:%S"),
                                                   " ".join(shlex.quote(a) for a in argv))).encode())
        self.log.flush()
        if pipes:
            self.popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=self.log, start_new_session=True, env=env,
                                          cwd=cwd)
        else:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL if stdin is None else stdin,
                                          stdout=self.log if stdout is None else stdout,
                                          stderr=subprocess.STDOUT if stdout is None else self.log,
                                          start_new_session=True, env=env, cwd=cwd,
                                          pass_fds=pass_fds)
        self.pid = self.popen.pid
        self.returncode = None
        with _ALL_PROCS_LOCK:
            _ALL_PROCS.append(self)

    def alive(self):
        return self.popen.poll() is None

    def send_signal(self, sig):
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, wait=10.0, sig=signal.SIGTERM):
        """SIGTERM, wait, then SIGKILL the process group. Returns (returncode, killed)."""
        killed = False
        if self.alive():
            if sig is not None:
                self.send_signal(sig)
            try:
                self.popen.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                killed = True
        self.kill_group()
        if self.popen.poll() is None:
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.returncode = self.popen.returncode
        for f in (self.log, self.popen.stdin, self.popen.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        return self.returncode, killed

    def kill_group(self):
        """Last resort: SIGKILL everything in the child's process group."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def output(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


def _kill_everything():
    with _ALL_PROCS_LOCK:
        procs = list(_ALL_PROCS)
    for p in procs:
        if p.popen.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 3
    for p in procs:
        while p.popen.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        p.kill_group()
        try:
            p.popen.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass


atexit.register(_kill_everything)


class Devmongo:
    """tests/devmongo/devmongo on a loopback port."""

    def __init__(self, scenario, port=None, dbpath=None, oplog_size=None, name="devmongo"):
        self.sc = scenario
        self.port = port or free_port()
        self.dbpath = dbpath
        self.oplog_size = oplog_size
        self.name = name
        self.proc = None
        self.log_path = os.path.join(scenario.tmp, name + ".log")

    @property
    def uri(self):
        return "mongodb://127.0.0.1:%d/?replicaSet=rs0" % self.port

    def start(self, timeout=20):
        argv = [DEVMONGO, "--port", str(self.port), "--host", "127.0.0.1"]
        if self.oplog_size:
            argv += ["--oplog-size", str(self.oplog_size)]
        if self.dbpath:
            argv += ["--dbpath", self.dbpath]
        check(os.access(DEVMONGO, os.X_OK), "devmongo not found or not executable at %s "
              "(set DEVMONGO)", DEVMONGO)
        offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        self.proc = Proc(self.name, argv, self.log_path)
        self.sc.procs.append(self.proc)
        needle = "devmongo ready on"

        def ready():
            if not self.proc.alive():
                raise TestFailure("%s exited with %s before it was ready:\n%s" % (
                    self.name, self.proc.popen.returncode, self.proc.output()[-3000:]))
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return needle.encode() in f.read()
        wait_until(ready, timeout, "%s's ready line" % self.name)
        say("%s ready on 127.0.0.1:%d%s", self.name, self.port,
            " (dbpath %s)" % self.dbpath if self.dbpath else "")
        return self

    def stop(self):
        """SIGTERM; devmongo's contract is to exit 0 (and save --dbpath state)."""
        if self.proc is None:
            return None
        rc, killed = self.proc.stop(wait=10)
        check(not killed, "%s did not exit within 10 s of SIGTERM", self.name)
        check(rc == 0, "%s exited with status %s after SIGTERM (expected 0)", self.name, rc)
        return rc

    def restart(self, down=0.0):
        """SIGTERM, stay down `down` seconds, start again on the same port (and --dbpath,
        if any: then it behaves like a mongod restart, with its oplog intact)."""
        self.stop()
        if down:
            time.sleep(down)
        return self.start()


class Changegate:
    """The daemon under test, on a loopback port, optionally under CG_WRAPPER."""

    def __init__(self, scenario, mongo_uri, port=None, state_dir=None, watch="*", args=(),
                 name="changegate"):
        self.sc = scenario
        self.mongo_uri = mongo_uri
        self.port = port or free_port()
        self.state_dir = state_dir or scenario.mkdir(name + "-state")
        self.watch = watch
        self.args = list(args)
        self.name = name
        self.proc = None
        self.starts = 0
        self.log_path = os.path.join(scenario.tmp, name + ".log")

    def argv(self):
        return (WRAPPER + [CHANGEGATE, "--mongo-uri", self.mongo_uri, "--watch", self.watch,
                           "--listen", "http://127.0.0.1:%d" % self.port,
                           "--state-dir", self.state_dir, "--log-level", LOG_LEVEL] + self.args)

    def start(self, wait_healthy=True, timeout=None):
        check(os.access(CHANGEGATE, os.X_OK), "changegate not found or not executable at %s "
              "(build it: autoreconf -fi && ./configure && make; or set CHANGEGATE)", CHANGEGATE)
        self.proc = Proc(self.name, self.argv(), self.log_path)
        self.sc.procs.append(self.proc)
        if self not in self.sc.changegates:
            self.sc.changegates.append(self)
        self.starts += 1
        timeout = timeout or 20 * SLOW
        if wait_healthy:
            self.wait_health(200, timeout)
        else:
            self.wait_listening(timeout)
        say("%s (pid %d) up on 127.0.0.1:%d", self.name, self.proc.pid, self.port)
        return self

    def _check_alive(self):
        if not self.proc.alive():
            raise TestFailure("%s exited with status %s while the test expected it to run" % (
                self.name, self.proc.popen.returncode))

    def health(self, timeout=5):
        status, headers, body = request(self.port, "GET", "/healthz", timeout=timeout)
        return status, headers, body

    def wait_health(self, want_status, timeout=None):
        """Poll /healthz until it answers want_status; return the parsed JSON body."""
        timeout = timeout or 20 * SLOW
        seen = []

        def pred():
            self._check_alive()
            status, _, body = self.health()
            if not seen or seen[-1] != status:
                seen.append(status)
            if status == want_status:
                return json_body(body, "/healthz") or {"_empty": True}
            return None
        try:
            return wait_until(pred, timeout, "%s /healthz to answer %d" % (self.name, want_status),
                              interval=0.1)
        except TestFailure as e:
            raise TestFailure("%s (statuses seen: %s)" % (e, seen))

    def wait_listening(self, timeout=None):
        timeout = timeout or 20 * SLOW

        def pred():
            self._check_alive()
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        wait_until(pred, timeout, "%s to listen on %d" % (self.name, self.port))

    def stop(self, expect_clean=True, signalled=False):
        """SIGTERM and wait; assert exit status 0 (the contract) unless expect_clean=False.
        signalled=True: the test already sent SIGTERM itself; only wait."""
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else None
        t0 = time.monotonic()
        rc, killed = self.proc.stop(wait=STOP_WAIT, sig=None if signalled else signal.SIGTERM)
        took = time.monotonic() - t0
        say("%s stopped: exit status %s after %.2fs%s", self.name, rc, took,
            " (KILLED)" if killed else "")
        if expect_clean:
            check(not killed, "%s did not exit within %.0fs of SIGTERM (contract: 2 s)",
                  self.name, STOP_WAIT)
            check(rc == 0, "%s exited with status %s after SIGTERM (expected 0)%s", self.name, rc,
                  " -- the wrapper (%s) reported errors" % WRAPPER[0]
                  if WRAPPER and rc == 99 else "")
        return rc

    def kill(self):
        """SIGKILL (no chance to persist anything more) and reap; start() may follow, on the
        same port with the same --state-dir. Returns the exit status (-9)."""
        check(self.proc is not None and self.proc.alive(), "%s is not running", self.name)
        self.proc.send_signal(signal.SIGKILL)
        try:
            self.proc.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise TestFailure("%s survived SIGKILL for 10 s" % self.name)
        rc, _ = self.proc.stop(wait=0, sig=None)
        say("%s (pid %d) SIGKILLed: status %s", self.name, self.proc.pid, rc)
        return rc

    def health_json(self):
        """(status, parsed JSON body) of GET /healthz."""
        status, _, body = self.health()
        return status, json_body(body, "/healthz")

    def metrics(self):
        """GET /metrics parsed (see parse_metrics); fails unless it answers 200."""
        return metrics(self.port)

    def rss_kb(self):
        """changegate's resident set size in kB (VmRSS of its pid; under CG_WRAPPER, the
        wrapper's)."""
        self._check_alive()
        return rss_kb(self.proc.pid)

    def stderr(self):
        return self.proc.output() if self.proc else ""

    # shortcuts for clients of this daemon
    def sse(self, path="/events", **kw):
        return SSEClient(self.port, path, **kw)

    def ndjson(self, path="/events", **kw):
        return NDJSONClient(self.port, path, **kw)

    def poll(self, **kw):
        return poll(self.port, **kw)


# --------------------------------------------------------------------------- the scenario

class Scenario:
    def __init__(self, name):
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix="cg-it-%s-" % name)
        self.procs = []
        self.changegates = []
        self.devmongos = []
        self.threads = []
        self.closers = []

    def mkdir(self, name):
        path = os.path.join(self.tmp, name)
        os.makedirs(path, exist_ok=True)
        return path

    def devmongo(self, **kw):
        d = Devmongo(self, **kw)
        self.devmongos.append(d)
        return d.start()

    def changegate(self, mongo_uri, wait_healthy=True, **kw):
        cg = Changegate(self, mongo_uri, **kw)
        return cg.start(wait_healthy=wait_healthy)

    def writer(self, uri):
        w = Writer(uri)
        self.closers.append(w.close)
        return w

    def track(self, client):
        self.closers.append(client.close)
        return client

    def thread(self, fn, *args, name=None):
        t = Worker(fn, args, name=name or getattr(fn, "__name__", "worker"))
        self.threads.append(t)
        t.start()
        return t

    def finish(self):
        """Orderly end of a passing story: stop changegates (asserting exit 0), then devmongos."""
        for c in self.closers:
            try:
                c()
            except Exception:
                pass
        for t in self.threads:
            t.join(timeout=10, reraise=True)
        for cg in self.changegates:
            cg.stop()
        for d in self.devmongos:
            if d.proc and d.proc.returncode is None:
                d.stop()

    def cleanup(self):
        for c in self.closers:
            try:
                c()
            except Exception:
                pass
        for p in self.procs:
            if p.returncode is None:
                p.stop(wait=STOP_WAIT if p.name.startswith("changegate") else 5)

    def dump_logs(self):
        shown = set()
        for p in self.procs:
            if p.log_path in shown:
                continue
            shown.add(p.log_path)
            out = p.output()
            lines = out.splitlines()
            limit = 400 if p.name.startswith("changegate") else 80
            print("\n----- %s (%s), last %d of %d lines -----" % (
                p.name, p.log_path, min(limit, len(lines)), len(lines)), file=sys.stderr)
            print("\n".join(lines[-limit:]), file=sys.stderr)
            print("----- end of %s -----" % p.name, file=sys.stderr)


class Worker(threading.Thread):
    """A daemon thread whose exception is re-raised in the main thread at join()."""

    def __init__(self, fn, args, name):
        super().__init__(name=name, daemon=True)
        self.fn, self.args, self.exc, self.result = fn, args, None, None

    def run(self):
        try:
            self.result = self.fn(*self.args)
        except BaseException as e:  # noqa: B902 - carried to the main thread
            self.exc = e
            self.tb = traceback.format_exc()

    def join(self, timeout=None, reraise=True):
        super().join(timeout)
        if self.is_alive():
            raise TestFailure("thread %s still running after %ss" % (self.name, timeout))
        if self.exc is not None and reraise:
            print(self.tb, file=sys.stderr)
            raise TestFailure("thread %s failed: %r" % (self.name, self.exc))
        return self.result


def run(story, name=None, timeout=None):
    """Run a scenario: story(Scenario). Exit 0 on pass, 1 on failure, 130 on Ctrl-C."""
    name = name or os.path.splitext(os.path.basename(sys.argv[0]))[0]
    timeout = timeout or float(os.environ.get("CG_TEST_TIMEOUT") or 60 * SLOW)
    sc = Scenario(name)

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    def on_alarm(signum, frame):
        raise ScenarioTimeout("scenario %s exceeded its time limit of %.0fs" % (name, timeout))
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    # Ctrl-C raises KeyboardInterrupt even when started from a shell that ignores SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    say("%s: start (tmp %s, changegate %s%s)", name, sc.tmp, CHANGEGATE,
        ", wrapper %s" % " ".join(WRAPPER) if WRAPPER else "")
    rc = 1
    try:
        try:
            story(sc)
            sc.finish()
            signal.setitimer(signal.ITIMER_REAL, 0)
            rc = 0
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except KeyboardInterrupt:
        print("\n%s: interrupted" % name, file=sys.stderr)
        rc = 130
    except BaseException as e:  # noqa: B902 - report everything, including timeouts
        traceback.print_exc()
        print("\nFAIL %s: %s" % (name, e), file=sys.stderr)
        for p in sc.procs:
            st = p.popen.poll()
            if p.name.startswith("curl"):
                continue
            print("  %s pid %d: %s" % (p.name, p.pid, "running" if st is None else
                  "exited with status %d" % st if st >= 0 else "killed by signal %d" % -st),
                  file=sys.stderr)
        sc.dump_logs()
        rc = 1
    finally:
        try:
            sc.cleanup()
        except BaseException:
            traceback.print_exc()
        _kill_everything()
        if rc == 0 and not os.environ.get("CG_KEEP_TMP"):
            shutil.rmtree(sc.tmp, ignore_errors=True)
        elif rc != 0:
            print("%s: logs kept in %s" % (name, sc.tmp), file=sys.stderr)
    if rc == 0:
        say("PASS %s", name)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


# --------------------------------------------------------------------------- plain HTTP

def request(port, method, path, headers=None, body=None, timeout=10, host="127.0.0.1"):
    """One HTTP request; returns (status, headers as a lowercase dict, body bytes)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    resp = None
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    except http.client.IncompleteRead as e:
        # A broken answer is a daemon failure, not a connection hiccup: say so plainly.
        raise TestFailure("%s %s: the answer (status %s) was cut off after %d bytes, %s more "
                          "expected: the connection closed mid-body (did changegate crash?)" % (
                              method, path, resp.status if resp else "?", len(e.partial),
                              e.expected))
    finally:
        conn.close()


def run_changegate(args, timeout=30):
    """Runs changegate to completion (under CG_WRAPPER too), for --check-config and
    start-up failures; returns (exit status, output)."""
    argv = WRAPPER + [CHANGEGATE] + args
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout * SLOW,
                           start_new_session=True)
    except subprocess.TimeoutExpired as e:
        raise TestFailure("changegate %s did not exit within %ss; output: %r" % (
            args, timeout * SLOW, e.output))
    return p.returncode, p.stdout.decode("utf-8", "replace")


class Deviations:
    """Checks of single requests whose failures are gathered and reported together at the
    end of the story, so that one wrong answer does not hide the next."""

    def __init__(self):
        self.items = []

    def expect(self, cond, msg, *args):
        if not cond:
            text = msg % args if args else msg
            self.items.append(text)
            say("DEVIATION: %s", text)
        return bool(cond)


def json_body(body, what="response"):
    try:
        return json.loads(body.decode("utf-8")) if body.strip() else None
    except (ValueError, UnicodeDecodeError) as e:
        raise TestFailure("%s is not JSON (%s): %r" % (what, e, body[:500]))


def query(params):
    """Build a query string; params is a list of pairs or a dict; None values are dropped."""
    if isinstance(params, dict):
        params = list(params.items())
    return urllib.parse.urlencode([(k, v) for k, v in params if v is not None])


def poll(port, lastEventId=None, timeout=None, limit=None, params=(), headers=None,
         http_timeout=None):
    """GET /poll; returns (status, parsed JSON body, headers)."""
    ps = [("lastEventId", lastEventId), ("timeout", timeout), ("limit", limit)] + list(params)
    qs = query(ps)
    wait = float(timeout) if timeout is not None else 25.0
    status, hdrs, body = request(port, "GET", "/poll" + ("?" + qs if qs else ""),
                                 headers=headers, timeout=http_timeout or (wait + 15) * SLOW)
    return status, json_body(body, "/poll answer"), hdrs


# --------------------------------------------------------------------------- SSE parsing

class Message:
    """One dispatched SSE message (WHATWG): type, data, lastEventId; id_field is the id
    field carried by this very message (None when it had none)."""
    kind = "message"

    def __init__(self, type_, data, last_event_id, id_field):
        self.type, self.data, self.last_event_id, self.id_field = type_, data, last_event_id, id_field

    @property
    def id(self):
        return self.last_event_id

    def json(self):
        try:
            return json.loads(self.data)
        except ValueError as e:
            raise TestFailure("SSE data is not JSON (%s): %r" % (e, self.data[:500]))

    def __repr__(self):
        return "<SSE %s id=%r data=%r>" % (self.type, self.id_field, self.data[:120])


class Comment:
    kind = "comment"

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return "<SSE comment %r>" % self.text


class IdOnly:
    """A block with an id field and no data: per WHATWG it dispatches nothing but moves the
    last event id. Reported so tests can see it."""
    kind = "idonly"

    def __init__(self, last_event_id):
        self.last_event_id = last_event_id

    def __repr__(self):
        return "<SSE id-only %r>" % self.last_event_id


_EOL = re.compile(r"[\r\n]")


class SSEParser:
    """The WHATWG 'event stream interpretation' over a byte stream fed in pieces."""

    def __init__(self):
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.text = ""             # the unfinished line
        self.scan = 0              # how much of self.text is known to hold no line end
        self.skip_lf = False       # a CR ended the previous piece: a leading LF belongs to it
        self.started = False
        self.data = []
        self.event_type = ""
        self.last_event_id = ""
        self.id_in_block = None
        self.retry = None
        self.raw = bytearray()     # everything fed, for assertions on exact bytes

    RAW_KEEP = 65536    # the stream's first bytes are kept for assertions on exact bytes

    def feed(self, chunk, final=False):
        if len(self.raw) < self.RAW_KEEP:
            self.raw += chunk[:self.RAW_KEEP - len(self.raw)]
        text = self.text + self.decoder.decode(chunk, final)
        if not self.started and text:
            if text[0] == "\ufeff":
                text = text[1:]
            self.started = bool(text)
        out = []
        pos, scan, n = 0, self.scan, len(text)
        while True:
            if self.skip_lf and pos < n:
                self.skip_lf = False
                if text[pos] == "\n":
                    pos += 1
                    scan = max(scan, pos)
            m = _EOL.search(text, scan)
            if m is None:
                break
            j = m.start()
            line = text[pos:j]
            if text[j] == "\r":
                if j + 1 < n:
                    pos = j + 2 if text[j + 1] == "\n" else j + 1
                else:
                    self.skip_lf = True
                    pos = j + 1
            else:
                pos = j + 1
            scan = pos
            item = self._line(line)
            if item is not None:
                out.append(item)
        self.text = text[pos:]
        self.scan = n - pos     # the pending text holds no line end: do not rescan it
        return out

    def _line(self, line):
        if line == "":
            return self._dispatch()
        if line[0] == ":":
            v = line[1:]
            return Comment(v[1:] if v.startswith(" ") else v)
        if ":" in line:
            field, value = line.split(":", 1)
            if value.startswith(" "):
                value = value[1:]
        else:
            field, value = line, ""
        if field == "event":
            self.event_type = value
        elif field == "data":
            self.data.append(value)
        elif field == "id":
            if "\0" not in value:
                self.last_event_id = value
                self.id_in_block = value
        elif field == "retry":
            if value and all(c in "0123456789" for c in value):
                self.retry = int(value)
        return None

    def _dispatch(self):
        id_field, self.id_in_block = self.id_in_block, None
        if not self.data:
            self.event_type = ""
            return IdOnly(self.last_event_id) if id_field is not None else None
        data = "\n".join(self.data)
        m = Message(self.event_type or "message", data, self.last_event_id, id_field)
        self.data, self.event_type = [], ""
        return m


# --------------------------------------------------------------------------- raw HTTP stream

class StreamEnded(Exception):
    pass


class HTTPStream:
    """A GET over a raw socket whose body is read incrementally (chunked, length or close).

    end_state after the body ends: 'chunked-end' (terminal chunk seen: a clean end),
    'length-end', 'eof' (connection closed without framing end), 'reset' (ECONNRESET)."""

    def __init__(self, port, path, headers=None, host="127.0.0.1", connect_timeout=5):
        self.port, self.path = port, path
        self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        self.sock.setblocking(False)
        hdrs = {"Host": "%s:%d" % (host, port), "User-Agent": "changegate-integration"}
        hdrs.update(headers or {})
        req = "GET %s HTTP/1.1\r\n%s\r\n" % (path, "".join(
            "%s: %s\r\n" % (k, v) for k, v in hdrs.items() if v is not None))
        self._sendall(req.encode("latin-1"))
        self.rbuf = bytearray()
        self.status = None
        self.headers = {}
        self.chunked = False
        self.remaining = None      # content-length left, or chunk bytes left
        self.cstate = "size"       # chunked decoder: size | data | data-crlf | trailer | done
        self.end_state = None
        self.closed = False

    def _sendall(self, data):
        deadline = time.monotonic() + 10
        while data:
            try:
                n = self.sock.send(data)
                data = data[n:]
            except BlockingIOError:
                select.select([], [self.sock], [], max(0.0, deadline - time.monotonic()))
                if time.monotonic() > deadline:
                    raise TestFailure("could not send the request to port %d" % self.port)

    def _recv(self, deadline):
        """Raw bytes from the socket; b'' at EOF; raises TimeoutError at the deadline."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no data from :%d%s" % (self.port, self.path))
            r, _, _ = select.select([self.sock], [], [], min(left, 0.5))
            if not r:
                continue
            try:
                return self.sock.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                self.end_state = "reset"
                return b""

    def read_headers(self, timeout=10):
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.rbuf:
            data = self._recv(deadline)
            if not data:
                raise TestFailure("connection to :%d%s closed before the response headers "
                                  "(got %r)" % (self.port, self.path, bytes(self.rbuf[:300])))
            self.rbuf += data
        head, _, rest = bytes(self.rbuf).partition(b"\r\n\r\n")
        self.rbuf = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        check(len(parts) >= 2 and parts[0].startswith("HTTP/"), "bad status line %r", lines[0])
        self.status = int(parts[1])
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        te = self.headers.get("transfer-encoding", "").lower()
        if "chunked" in te:
            self.chunked = True
        elif "content-length" in self.headers:
            self.remaining = int(self.headers["content-length"])
        return self.status

    def read_body(self, deadline):
        """Some decoded body bytes; b'' once the body has ended (see end_state)."""
        while True:
            if self.end_state is not None:
                return b""
            out = self._decode()
            if out:
                return out
            if self.end_state is not None:
                return b""
            data = self._recv(deadline)
            if not data:
                if self.end_state is None:
                    self.end_state = "eof"
                return b""
            self.rbuf += data

    def _decode(self):
        if not self.chunked:
            if self.remaining is None:
                out, self.rbuf = bytes(self.rbuf), bytearray()
                return out
            out = bytes(self.rbuf[:self.remaining])
            del self.rbuf[:len(out)]
            self.remaining -= len(out)
            if self.remaining == 0:
                self.end_state = "length-end"
            return out
        out = bytearray()
        while True:
            if self.cstate == "size":
                k = self.rbuf.find(b"\r\n")
                if k < 0:
                    break
                line = bytes(self.rbuf[:k]).split(b";")[0].strip()
                del self.rbuf[:k + 2]
                try:
                    self.remaining = int(line, 16)
                except ValueError:
                    raise TestFailure("bad chunk size line %r from :%d" % (line, self.port))
                self.cstate = "data" if self.remaining else "trailer"
            elif self.cstate == "data":
                if not self.rbuf:
                    break
                take = bytes(self.rbuf[:self.remaining])
                del self.rbuf[:len(take)]
                out += take
                self.remaining -= len(take)
                if self.remaining == 0:
                    self.cstate = "data-crlf"
            elif self.cstate == "data-crlf":
                if len(self.rbuf) < 2:
                    break
                check(self.rbuf[:2] == b"\r\n", "chunk not followed by CRLF: %r",
                      bytes(self.rbuf[:20]))
                del self.rbuf[:2]
                self.cstate = "size"
            elif self.cstate == "trailer":
                k = self.rbuf.find(b"\r\n")
                if k < 0:
                    break
                line = bytes(self.rbuf[:k])
                del self.rbuf[:k + 2]
                if line == b"":
                    self.cstate = "done"
                    self.end_state = "chunked-end"
                    break
            else:
                break
        return bytes(out)

    def read_all(self, timeout=10):
        deadline = time.monotonic() + timeout
        out = bytearray()
        while True:
            b = self.read_body(deadline)
            if not b:
                return bytes(out)
            out += b

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass


def _position_headers(last_event_id, headers):
    h = dict(headers or {})
    if last_event_id is not None:
        h["Last-Event-ID"] = last_event_id
    return h


class SSEClient:
    """An EventSource-like reader of GET /events (no automatic reconnection: tests decide).

    items: everything parsed so far (messages, comments, id-only blocks), in order."""

    def __init__(self, port, path="/events", last_event_id=None, params=(), headers=None,
                 expect_status=200, wait_preamble=True, timeout=10):
        qs = query(params)
        self.path = path + ("?" + qs if qs else "")
        h = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        h.update(_position_headers(last_event_id, headers))
        self.http = HTTPStream(port, self.path, h)
        self.parser = SSEParser()
        self.items = []
        self.pending = []
        self.ended = False
        self.consumed_id = ""
        status = self.http.read_headers(timeout * SLOW)
        self.status = status
        if expect_status is not None:
            if status != expect_status:
                body = self.http.read_all(2) if status != 200 else b""
                raise TestFailure("GET %s answered %d (expected %d): %r" % (
                    self.path, status, expect_status, body[:500]))
        if status == 200:
            ctype = self.http.headers.get("content-type", "")
            check(ctype.split(";")[0].strip() == "text/event-stream",
                  "GET %s: Content-Type %r, expected text/event-stream", self.path, ctype)
            if wait_preamble:
                self.wait_preamble(timeout * SLOW)

    @property
    def end_state(self):
        return self.http.end_state

    @property
    def last_event_id(self):
        """The last event id of what the test has consumed (what a browser would resend)."""
        return self.consumed_id

    PREAMBLE = b": changegate\nretry: 3000\n\n"

    def _fill(self, deadline):
        """Read one piece of body into the parser; False once the stream has ended."""
        if self.ended:
            return False
        chunk = self.http.read_body(deadline)
        got = self.parser.feed(chunk, final=not chunk)
        if not chunk:
            self.ended = True
        self.items.extend(got)
        self.pending.extend(got)
        return not self.ended

    def wait_preamble(self, timeout=10):
        """The contract: the stream starts with exactly ': changegate\nretry: 3000\n\n'."""
        deadline = time.monotonic() + timeout
        try:
            while len(self.parser.raw) < len(self.PREAMBLE) and self._fill(deadline):
                pass
        except TimeoutError:
            pass
        check(self.parser.raw.startswith(self.PREAMBLE),
              "SSE stream %s did not start with %r: %r", self.path, self.PREAMBLE,
              bytes(self.parser.raw[:80]))
        first = self.pending.pop(0)
        check(isinstance(first, Comment) and first.text == "changegate",
              "first SSE item on %s is %r", self.path, first)
        check(self.parser.retry == 3000, "retry is %r, expected 3000", self.parser.retry)

    def next_item(self, timeout=10):
        """The next parsed item; None when the stream has ended; TimeoutError on timeout."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            if not self._fill(deadline) and not self.pending:
                return None
        item = self.pending.pop(0)
        if isinstance(item, (Message, IdOnly)):
            self.consumed_id = item.last_event_id
        return item

    def next_message(self, timeout=10, skip_comments=True):
        """The next dispatched message (data or named); comments and id-only blocks are
        skipped. None when the stream ended."""
        deadline = time.monotonic() + timeout
        while True:
            item = self.next_item(max(0.0, deadline - time.monotonic()))
            if item is None or isinstance(item, Message):
                return item

    def read_messages(self, n, timeout=20, allow_end=False):
        """Exactly n messages, or fail saying how many came."""
        got = []
        deadline = time.monotonic() + timeout * SLOW
        while len(got) < n:
            try:
                m = self.next_message(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise TestFailure("SSE %s: got %d of %d messages before the timeout (%ss); "
                                  "last: %r" % (self.path, len(got), n, timeout * SLOW,
                                                got[-1:] or None))
            if m is None:
                if allow_end:
                    return got
                raise TestFailure("SSE %s ended (%s) after %d of %d messages" % (
                    self.path, self.end_state, len(got), n))
            got.append(m)
        return got

    def drain(self, quiet, timeout=30):
        """Messages until nothing arrives for `quiet` seconds (or the stream ends)."""
        got = []
        deadline = time.monotonic() + timeout * SLOW
        while time.monotonic() < deadline:
            try:
                m = self.next_message(quiet)
            except TimeoutError:
                return got
            if m is None:
                return got
            got.append(m)
        return got

    def close(self):
        self.http.close()


class NDJSONClient:
    """GET /events as NDJSON (Accept: application/x-ndjson, or ?format=ndjson)."""

    def __init__(self, port, path="/events", last_event_id=None, params=(), headers=None,
                 use_query=False, expect_status=200, timeout=10):
        params = list(params)
        h = {}
        if use_query:
            params.append(("format", "ndjson"))
        else:
            h["Accept"] = "application/x-ndjson"
        h.update(_position_headers(last_event_id, headers))
        qs = query(params)
        self.path = path + ("?" + qs if qs else "")
        self.http = HTTPStream(port, self.path, h)
        self.buf = bytearray()
        self.scan = 0
        self.pending = []
        self.ended = False
        self.lines = []
        self.status = self.http.read_headers(timeout * SLOW)
        if expect_status is not None and self.status != expect_status:
            body = self.http.read_all(2)
            raise TestFailure("GET %s (ndjson) answered %d (expected %d): %r" % (
                self.path, self.status, expect_status, body[:500]))
        if self.status == 200:
            ctype = self.http.headers.get("content-type", "")
            check(ctype.split(";")[0].strip() == "application/x-ndjson",
                  "GET %s: Content-Type %r, expected application/x-ndjson", self.path, ctype)

    @property
    def end_state(self):
        return self.http.end_state

    def next_obj(self, timeout=10):
        """The next JSON object; None when the stream ended; TimeoutError on timeout."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            if self.ended:
                return None
            k = self.buf.find(b"\n", self.scan)
            if k < 0:
                self.scan = len(self.buf)
            if k >= 0:
                line = bytes(self.buf[:k])
                del self.buf[:k + 1]
                self.scan = 0
                if line.strip():
                    self.lines.append(line)
                    try:
                        self.pending.append(json.loads(line.decode("utf-8")))
                    except ValueError as e:
                        raise TestFailure("NDJSON line is not JSON (%s): %r" % (e, line[:500]))
                continue
            chunk = self.http.read_body(deadline)
            if not chunk:
                self.ended = True
                check(not self.buf.strip(), "NDJSON stream ended inside a line: %r",
                      bytes(self.buf[:200]))
                continue
            self.buf += chunk
        return self.pending.pop(0)

    def read_events(self, n, timeout=20, skip_heartbeats=True):
        """Exactly n objects that are events or resets (heartbeats skipped)."""
        got = []
        deadline = time.monotonic() + timeout * SLOW
        while len(got) < n:
            try:
                o = self.next_obj(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise TestFailure("NDJSON %s: got %d of %d events before the timeout" % (
                    self.path, len(got), n))
            if o is None:
                raise TestFailure("NDJSON %s ended (%s) after %d of %d events" % (
                    self.path, self.end_state, len(got), n))
            if skip_heartbeats and is_heartbeat(o):
                continue
            got.append(o)
        return got

    def close(self):
        self.http.close()


class CurlSSE:
    """SSE through a real `curl -N`, parsed with the same WHATWG parser."""

    def __init__(self, scenario, port, path="/events", last_event_id=None, params=()):
        qs = query(params)
        self.url = "http://127.0.0.1:%d%s%s" % (port, path, "?" + qs if qs else "")
        argv = ["curl", "-sS", "-N", "--no-buffer", "-H", "Accept: text/event-stream"]
        if last_event_id is not None:
            argv += ["-H", "Last-Event-ID: %s" % last_event_id]
        argv.append(self.url)
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        self.fd = self.popen.stdout.fileno()
        self.parser = SSEParser()
        self.pending = []
        self.ended = False
        proc = Proc.__new__(Proc)      # register for the safety net without a log file
        proc.name, proc.popen, proc.pid, proc.returncode = "curl", self.popen, self.popen.pid, None
        proc.log_path, proc.log = os.devnull, open(os.devnull, "ab")
        with _ALL_PROCS_LOCK:
            _ALL_PROCS.append(proc)
        scenario.procs.append(proc)
        scenario.closers.append(self.close)
        self.proc = proc

    def next_item(self, timeout=10):
        deadline = time.monotonic() + timeout
        while not self.pending:
            if self.ended:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("curl: no data")
            r, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if not r:
                continue
            data = os.read(self.fd, 65536)
            if not data:
                self.ended = True
                self.pending.extend(self.parser.feed(b"", final=True))
                continue
            self.pending.extend(self.parser.feed(data))
        return self.pending.pop(0)

    def read_messages(self, n, timeout=20):
        got = []
        deadline = time.monotonic() + timeout * SLOW
        while len(got) < n:
            try:
                item = self.next_item(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise TestFailure("curl SSE: got %d of %d messages before the timeout" % (
                    len(got), n))
            if item is None:
                err = self.popen.stderr.read().decode("utf-8", "replace")
                raise TestFailure("curl SSE ended after %d of %d messages (curl: %s)" % (
                    len(got), n, err.strip()))
            if isinstance(item, Message):
                got.append(item)
        return got

    def close(self):
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        for f in (self.popen.stdout, self.popen.stderr):
            try:
                f.close()
            except OSError:
                pass
        self.proc.returncode = self.popen.returncode


# --------------------------------------------------------------------------- helper processes

NODE_CLIENTS = os.path.join(REPO, "tests", "node-clients")


def node_clients(*packages):
    """tests/node-clients, the pinned Node.js clients (package-lock.json); fails naming the
    fix when node or one of `packages` is not installed."""
    check(shutil.which("node") is not None, "node not found: run tests/install-deps.sh")
    for pkg in packages:
        check(os.path.isdir(os.path.join(NODE_CLIENTS, "node_modules", pkg)),
              "%s is not installed in %s: run tests/install-deps.sh (npm ci there)", pkg,
              NODE_CLIENTS)
    return NODE_CLIENTS


class JSONLinesProc:
    """A helper process (its own process group, stopped with the scenario's other processes)
    that speaks JSON lines: the test writes objects to its stdin with send() and reads the
    objects it prints with next(), every wait bounded. stderr goes to NAME.log in the
    scenario's directory."""

    def __init__(self, scenario, name, argv, cwd=None):
        self.name = name
        self.proc = Proc(name, argv, os.path.join(scenario.tmp, name + ".log"), pipes=True,
                         cwd=cwd)
        scenario.procs.append(self.proc)
        self.fd = self.proc.popen.stdout.fileno()
        self.buf = bytearray()
        self.pending = []
        self.ended = False

    def send(self, obj):
        try:
            self.proc.popen.stdin.write((json.dumps(obj) + "\n").encode())
            self.proc.popen.stdin.flush()
        except (BrokenPipeError, ValueError) as e:
            raise TestFailure("%s (pid %d) no longer reads its input (%r); its stderr:\n%s" % (
                self.name, self.proc.pid, e, self.proc.output()[-3000:]))

    def next(self, timeout=10):
        """The next object printed; None once its stdout closed; TimeoutError on timeout."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            if self.ended:
                return None
            k = self.buf.find(b"\n")
            if k >= 0:
                line = bytes(self.buf[:k])
                del self.buf[:k + 1]
                if line.strip():
                    try:
                        self.pending.append(json.loads(line.decode("utf-8")))
                    except ValueError as e:
                        raise TestFailure("%s printed a line that is not JSON (%s): %r" % (
                            self.name, e, line[:500]))
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("%s printed nothing more within %.1fs" % (self.name, timeout))
            r, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if r:
                data = os.read(self.fd, 65536)
                if not data:
                    self.ended = True
                self.buf += data
        return self.pending.pop(0)

    def close_stdin(self):
        try:
            self.proc.popen.stdin.close()
        except OSError:
            pass

    def stderr(self):
        return self.proc.output()


# --------------------------------------------------------------------------- events

def position_of(event):
    """The position the contract derives from a {_data: hex} resume token."""
    tok = event.get("_id")
    check(isinstance(tok, dict) and isinstance(tok.get("_data"), str),
          "event has no {_data} resume token: %r", event)
    return tok["_data"]


def check_sse_event(msg):
    """A data message: no event name, an id equal to the token's _data; returns the event."""
    check(msg.type == "message", "SSE data message has event name %r: %r", msg.type, msg)
    check(msg.id_field is not None and msg.id_field != "", "SSE message without id: %r", msg)
    check("\n" not in msg.data, "SSE data spans several data: lines (the contract says one "
          "line): %r", msg.data[:300])
    ev = msg.json()
    check(msg.id_field == position_of(ev),
          "SSE id %r differs from the event's resume token %r", msg.id_field, ev.get("_id"))
    check(all(c in "0123456789ABCDEF" for c in msg.id_field),
          "position %r is not uppercase hex (devmongo tokens are)", msg.id_field)
    return ev


def check_ndjson_event(obj):
    check(isinstance(obj, dict) and set(obj) == {"id", "event"},
          "NDJSON event line should be {\"id\", \"event\"}: %r", obj)
    check(obj["id"] == position_of(obj["event"]),
          "NDJSON id %r differs from the event's resume token %r", obj["id"], obj["event"]["_id"])
    return obj["event"]


def seq_of(event):
    fd = event.get("fullDocument")
    check(isinstance(fd, dict) and "seq" in fd, "event without fullDocument.seq: %r", event)
    return fd["seq"]


def key_of(event):
    """(db, coll, operationType, documentKey._id) of a CRUD event."""
    ns = event.get("ns") or {}
    dk = event.get("documentKey") or {}
    return (ns.get("db"), ns.get("coll"), event.get("operationType"), dk.get("_id"))


def check_sequence(got, want, what):
    """got == want exactly; on failure say where it first differs, the gaps and repeats."""
    if got == want:
        return
    seen, repeats = set(), []
    for g in got:
        if g in seen:
            repeats.append(g)
        seen.add(g)
    missing = [w for w in want if w not in seen]
    want_set = set(want)
    extra = [g for g in seen if g not in want_set]
    first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    raise TestFailure(
        "%s: got %d items, expected %d; first difference at index %d (got %r, expected %r); "
        "missing %d %r; repeated %d %r; unexpected %d %r" % (
            what, len(got), len(want), first, got[first:first + 3], want[first:first + 3],
            len(missing), missing[:10], len(repeats), repeats[:10], len(extra), extra[:10]))


# --------------------------------------------------------------------------- writing

class Writer:
    """pymongo writes to devmongo."""

    def __init__(self, uri):
        import pymongo  # Debian's pymongo 3.11
        self.pymongo = pymongo
        self.client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=15000,
                                          connectTimeoutMS=5000, socketTimeoutMS=15000)

    def coll(self, db, coll):
        return self.client[db][coll]

    def insert_seq(self, start, count, db="test", coll="events", pad="", **extra):
        c = self.coll(db, coll)
        for seq in range(start, start + count):
            doc = {"seq": seq, "ts_us": int(time.time() * 1e6)}
            if pad:
                doc["pad"] = pad
            doc.update(extra)
            c.insert_one(doc)

    def close(self):
        try:
            self.client.close()
        except Exception:
            pass


def insert_paced(coll, first, count, interval):
    """Insert {seq: first..first+count-1} into a pymongo collection, one every `interval`
    seconds on an absolute schedule (a burst a test can interrupt part-way)."""
    t0 = time.monotonic()
    for seq in range(first, first + count):
        delay = t0 + (seq - first) * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        coll.insert_one({"seq": seq})


def foreign_position(sc, later=False):
    """A position another devmongo run issued (one this scenario's devmongo never did),
    from a devmongo started and stopped for it. later: wait until this run's cluster
    times are strictly later than that position's."""
    other = sc.devmongo(name="devmongo-other")
    foreign = wait_devmongo_token(other.uri)
    other.stop()
    if later:
        say("foreign position from another devmongo run: %s", foreign)
        time.sleep(1.1)
    return foreign


def wait_devmongo_token(uri, db="probe", coll="probe"):
    """A resume token from a fresh devmongo, read with pymongo's own change stream."""
    import pymongo
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=15000)
    try:
        c = client[db][coll]
        with c.watch(max_await_time_ms=500) as stream:
            c.insert_one({"probe": 1})
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                ch = stream.try_next()
                if ch is not None:
                    return ch["_id"]["_data"]
        raise TestFailure("pymongo change stream on devmongo gave no event within 15 s")
    finally:
        client.close()


# --------------------------------------------------------------------------- NDJSON control lines

def is_heartbeat(obj):
    """An NDJSON heartbeat line: {"heartbeat": true}, with "lastEventId" once the
    subscriber's position is known."""
    return (isinstance(obj, dict) and obj.get("heartbeat") is True
            and set(obj) <= {"heartbeat", "lastEventId"})


# --------------------------------------------------------------------------- /metrics, RSS

_METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$')
_METRIC_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_metrics(text):
    """Prometheus text format -> {(name, frozenset of (label, value)): float}. Fails on a
    line that is not a comment, blank, or a well-formed sample."""
    out = {}
    for ln in text.splitlines():
        if not ln.strip() or ln.startswith("#"):
            continue
        m = _METRIC_LINE.match(ln.strip())
        check(m is not None, "/metrics: malformed line %r", ln)
        labels = {}
        if m.group(3):
            pos, body = 0, m.group(3)
            while pos < len(body):
                lm = _METRIC_LABEL.match(body, pos)
                check(lm is not None and lm.end() > pos, "/metrics: malformed labels in %r", ln)
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        try:
            value = float(m.group(4))
        except ValueError:
            raise TestFailure("/metrics: value of %r is not a number" % ln)
        out[(m.group(1), frozenset(labels.items()))] = value
    return out


class Metrics(dict):
    """Parsed /metrics: value(name, **labels) for one sample, total(name, **labels) for the
    sum over every sample whose labels include the given ones."""

    def has(self, name):
        return any(k[0] == name for k in self)

    def value(self, name, **labels):
        want = frozenset(labels.items())
        check(self.has(name), "/metrics has no %s (it has: %s)", name,
              ", ".join(sorted({k[0] for k in self}))[:1500])
        check((name, want) in self, "/metrics has no %s%r (samples: %r)", name, labels,
              [dict(k[1]) for k in self if k[0] == name])
        return self[(name, want)]

    def total(self, name, **labels):
        check(self.has(name), "/metrics has no %s (it has: %s)", name,
              ", ".join(sorted({k[0] for k in self}))[:1500])
        want = set(labels.items())
        return sum(v for (n, ls), v in self.items() if n == name and want <= set(ls))


def metrics(port, timeout=10):
    status, hdrs, body = request(port, "GET", "/metrics", timeout=timeout)
    check(status == 200, "GET /metrics answered %d: %r", status, body[:300])
    ctype = hdrs.get("content-type", "")
    check(ctype.startswith("text/plain"), "GET /metrics: Content-Type %r, expected text/plain "
          "(Prometheus text format)", ctype)
    return Metrics(parse_metrics(body.decode("utf-8", "replace")))


def rss_kb(pid):
    """VmRSS of a process, in kB."""
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    raise TestFailure("no VmRSS in /proc/%d/status" % pid)


def raise_nofile(want):
    """Raise this process's RLIMIT_NOFILE soft limit to at least `want` (processes started
    afterwards inherit it); fail clearly when the hard limit is lower."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    check(hard == resource.RLIM_INFINITY or hard >= want,
          "this scenario needs %d open files; the hard limit is %d (ulimit -Hn)", want, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# --------------------------------------------------------------------------- fault injection

def fail_command(client_or_uri, mode, **data):
    """configureFailPoint failCommand on devmongo (as on mongod): mode {"times": N},
    "alwaysOn" or "off"; data: failCommands, errorCode, errorLabels, closeConnection,
    blockConnection, blockTimeMS, appName. Takes a pymongo client or a URI."""
    import pymongo
    own = isinstance(client_or_uri, str)
    client = (pymongo.MongoClient(client_or_uri, serverSelectionTimeoutMS=15000)
              if own else client_or_uri)
    try:
        if mode == "off":
            return client.admin.command("configureFailPoint", "failCommand", mode="off")
        return client.admin.command("configureFailPoint", "failCommand", mode=mode, data=data)
    finally:
        if own:
            client.close()


# --------------------------------------------------------------------------- many raw SSE clients

class RawSSE:
    """One GET /events on a non-blocking socket, for scenarios with thousands of
    subscribers driven by pump() in one thread. It decodes HTTP (status, headers, chunked
    or plain body) and hands over complete SSE blocks (text up to the last blank line;
    changegate ends lines with a bare LF) through take(); the scenario parses them (a
    regular expression over the bytes is enough, and fast)."""

    def __init__(self, port, path="/events", last_event_id=None, headers=None, rcvbuf=None,
                 host="127.0.0.1", tag=None):
        self.port, self.path, self.tag = port, path, tag
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setblocking(False)
        err = self.sock.connect_ex((host, port))
        check(err in (0, 115, 11), "connect to :%d failed at once: %s", port, os.strerror(err))
        hdrs = {"Host": "%s:%d" % (host, port), "User-Agent": "changegate-integration-mass",
                "Accept": "text/event-stream", "Cache-Control": "no-cache"}
        hdrs.update(_position_headers(last_event_id, headers))
        self.request = ("GET %s HTTP/1.1\r\n%s\r\n" % (path, "".join(
            "%s: %s\r\n" % (k, v) for k, v in hdrs.items() if v is not None))).encode("latin-1")
        self.sent = 0
        self.rbuf = bytearray()
        self.status = None
        self.head = None
        self.headers = {}
        self.chunked = False
        self.chunk_left = 0          # bytes of the current chunk still to come (chunked)
        self.crlf_left = 0           # CRLF after a chunk's data still to skip
        self.body = bytearray()      # decoded body not yet taken
        self.body_bytes = 0
        self.ended = False
        self.end_state = None        # chunked-end | eof | reset | error
        self.error = None
        self.done = False            # the scenario's own flag

    def fileno(self):
        return self.sock.fileno()

    def want_write(self):
        return self.sent < len(self.request) and not self.ended

    def on_writable(self):
        try:
            self.sent += self.sock.send(self.request[self.sent:])
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            self._end("error", e)

    def on_readable(self):
        """Reads what the socket holds (up to 1 MB per call, to stay fair)."""
        for _ in range(4):
            try:
                data = self.sock.recv(262144)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionResetError as e:
                self._end("reset", e)
                return
            except OSError as e:
                self._end("error", e)
                return
            if not data:
                self._end(self.end_state or "eof")
                return
            self._feed(data)
            if self.ended:
                return

    def _end(self, state, err=None):
        if not self.ended:
            self.ended = True
            self.end_state = self.end_state or state
            self.error = err

    def _feed(self, data):
        self.rbuf += data
        if self.head is None:
            k = self.rbuf.find(b"\r\n\r\n")
            if k < 0:
                return
            self.head = bytes(self.rbuf[:k]).decode("latin-1")
            del self.rbuf[:k + 4]
            lines = self.head.split("\r\n")
            parts = lines[0].split(" ", 2)
            try:
                self.status = int(parts[1])
            except (IndexError, ValueError):
                self._end("error", "bad status line %r" % lines[0])
                return
            for ln in lines[1:]:
                key, _, v = ln.partition(":")
                self.headers[key.strip().lower()] = v.strip()
            self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        if not self.chunked:
            self.body += self.rbuf
            self.body_bytes += len(self.rbuf)
            del self.rbuf[:]
            return
        buf, pos, n = self.rbuf, 0, len(self.rbuf)
        while pos < n:
            if self.crlf_left:
                take = min(self.crlf_left, n - pos)
                pos += take
                self.crlf_left -= take
                continue
            if self.chunk_left:
                take = min(self.chunk_left, n - pos)
                self.body += buf[pos:pos + take]
                self.body_bytes += take
                pos += take
                self.chunk_left -= take
                if not self.chunk_left:
                    self.crlf_left = 2
                continue
            k = buf.find(b"\r\n", pos)
            if k < 0:
                break
            try:
                size = int(bytes(buf[pos:k]).split(b";")[0].strip(), 16)
            except ValueError:
                self._end("error", "bad chunk size line %r" % bytes(buf[pos:k + 2]))
                return
            pos = k + 2
            if size == 0:
                self.end_state = "chunked-end"    # trailers ignored; the server closes
                self.chunked = False
                pos = n
                break
            self.chunk_left = size
        del self.rbuf[:pos]

    def take(self):
        """The complete SSE blocks received since the last call (bytes ending with a blank
        line), or b''."""
        k = self.body.rfind(b"\n\n")
        if k < 0:
            return b""
        out = bytes(self.body[:k + 2])
        del self.body[:k + 2]
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def pump(conns, on_data, finished, timeout, tick=None, tick_every=1.0):
    """Drive RawSSE connections with epoll: send each request as soon as its socket is
    writable, read whatever arrives, call on_data(conn, blocks) with complete SSE blocks,
    and stop watching a connection once finished(conn) is true or its stream ended.
    tick() is called about every tick_every seconds. Returns the connections that are
    neither finished nor ended when `timeout` seconds have passed (empty: all done)."""
    import select as _select
    ep = _select.epoll()
    by_fd = {}
    try:
        for c in conns:
            if c.ended or finished(c):
                continue
            by_fd[c.fileno()] = c
            ep.register(c.fileno(), _select.EPOLLIN | (_select.EPOLLOUT if c.want_write() else 0))
        deadline = time.monotonic() + timeout
        next_tick = time.monotonic() + tick_every
        while by_fd and time.monotonic() < deadline:
            for fd, ev in ep.poll(0.1, 1024):
                c = by_fd.get(fd)
                if c is None:
                    continue
                if ev & _select.EPOLLOUT and c.want_write():
                    c.on_writable()
                    if not c.want_write() and not c.ended:
                        ep.modify(fd, _select.EPOLLIN)
                if ev & (_select.EPOLLIN | _select.EPOLLHUP | _select.EPOLLERR) and not c.want_write():
                    c.on_readable()
                    data = c.take()
                    if data:
                        on_data(c, data)
                elif ev & (_select.EPOLLHUP | _select.EPOLLERR):
                    c._end("error", "connection failed before the request was sent")
                if c.ended or finished(c):
                    ep.unregister(fd)
                    del by_fd[fd]
            if tick and time.monotonic() >= next_tick:
                tick()
                next_tick = time.monotonic() + tick_every
        return list(by_fd.values())
    finally:
        ep.close()
