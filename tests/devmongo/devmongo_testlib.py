"""Helpers shared by devmongo's own tests (run each test_*.py with /usr/bin/python3).

DevMongo starts the server on a free loopback port and always stops it (use it as a
context manager). Check collects failures so one run reports all of them; a test
script ends with `sys.exit(check.finish())`.
"""

import os
import signal
import subprocess
import sys
import time
import traceback

import pymongo

HERE = os.path.dirname(os.path.abspath(__file__))
DEVMONGO = os.path.join(HERE, "devmongo")


class DevMongo:
    def __init__(self, *args, port=0):
        self.args = list(args)
        self.port = port
        self.proc = None
        self.clients = []

    def start(self):
        self.proc = subprocess.Popen([DEVMONGO, "--port", str(self.port)] + self.args,
                                     stdout=subprocess.PIPE, text=True)
        deadline = time.time() + 15
        line = ""
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("devmongo ready on ") or not line:
                break
        if not line.startswith("devmongo ready on "):
            self.kill()
            raise RuntimeError("devmongo did not start (got %r)" % line)
        self.ready_line = line.rstrip("\n")
        self.port = int(line.strip().rsplit(":", 1)[1])
        return self

    def client(self, **kw):
        kw.setdefault("replicaSet", "rs0")
        kw.setdefault("serverSelectionTimeoutMS", 5000)
        c = pymongo.MongoClient("127.0.0.1", self.port, **kw)
        self.clients.append(c)
        return c

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Stop with a signal; return the exit code (None if it had to be killed)."""
        for c in self.clients:
            try:
                c.close()
            except Exception:
                pass
        self.clients = []
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        rc = self.proc.returncode
        self.proc.stdout.close()
        self.proc = None
        return rc

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        self.kill()
        return False


class Check:
    """Collects named checks; prints PASS/FAIL lines and a final count."""

    def __init__(self, name):
        self.name = name
        self.failed = []
        self.passed = 0

    def ok(self, cond, what):
        if cond:
            self.passed += 1
        else:
            self.failed.append(what)
            print("FAIL: %s" % what, flush=True)
        return cond

    def eq(self, got, want, what):
        return self.ok(got == want, "%s: got %r, want %r" % (what, got, want))

    def raises(self, fn, code, what, label=None):
        """fn() must raise a server error with this code (and label, if given)."""
        try:
            fn()
        except pymongo.errors.OperationFailure as e:
            ok = self.eq(e.code, code, what + " (error code)")
            if label is not None:
                labels = (e.details or {}).get("errorLabels", [])
                ok = self.ok(label in labels, "%s: label %s missing in %r" % (what, label, labels)) and ok
            return e
        except Exception as e:  # noqa: BLE001
            self.ok(False, "%s: expected server error %d, got %r" % (what, code, e))
            return None
        self.ok(False, "%s: expected server error %d, got success" % (what, code))
        return None

    def run(self, fn, *args):
        """Run one test function, recording an unexpected exception as a failure."""
        try:
            fn(*args)
        except Exception:  # noqa: BLE001
            self.failed.append("%s raised" % fn.__name__)
            print("FAIL: %s raised:\n%s" % (fn.__name__, traceback.format_exc()), flush=True)

    def finish(self):
        print("%s: %d passed, %d failed" % (self.name, self.passed, len(self.failed)), flush=True)
        return 1 if self.failed else 0


def next_change(stream, timeout=5.0):
    """Next event from a pymongo change stream, or None after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        ev = stream.try_next()
        if ev is not None:
            return ev
        if not stream.alive:
            return None
    return None


def main_guard(fn):
    """Run a test's main with a hard failure exit on any stray exception."""
    try:
        sys.exit(fn())
    except SystemExit:
        raise
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        sys.exit(1)
