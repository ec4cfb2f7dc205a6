#!/usr/bin/python3
"""Story: SIGHUP re-reads the config file; what can change at once does, the rest is named.

1. changegate starts with a config file (log-level info, heartbeat 15) and an SSE
   subscriber is streaming.
2. The file changes log-level to debug and heartbeat to 5; SIGHUP. The log says the
   heartbeat changed and needs a restart, and that the log level is now debug; a debug
   line follows (a stream closing). The subscriber still streams.
3. The file gets an unknown option; SIGHUP. The log names it at error level and says
   nothing changed; changegate goes on serving at debug level.
4. An option given on the command line keeps overriding the file across a reload.
"""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class FileLevelChangegate(h.Changegate):
    """The harness's changegate without --log-level: the level comes from the file."""

    def argv(self):
        a = super().argv()
        i = a.index("--log-level")
        return a[:i] + a[i + 2:]


def wait_log(cg, text, what):
    h.wait_until(lambda: text in cg.stderr(), 10, what)


def story(sc):
    mongo = sc.devmongo()
    w = sc.writer(mongo.uri)
    conf = os.path.join(sc.tmp, "changegate.conf")
    base = "log-level info\nheartbeat 15\nwatch *\n"
    with open(conf, "w") as f:
        f.write(base)
    cg = FileLevelChangegate(sc, mongo.uri, args=["--config", conf]).start()
    sse = sc.track(cg.sse())
    w.insert_seq(1, 1)
    h.check(sse.read_messages(1)[0].json()["fullDocument"]["seq"] == 1, "first event")
    h.check("debug:" not in cg.stderr(), "debug lines at log-level info")

    with open(conf, "w") as f:
        f.write(base.replace("log-level info", "log-level debug")
                .replace("heartbeat 15", "heartbeat 5"))
    cg.proc.send_signal(signal.SIGHUP)
    wait_log(cg, "SIGHUP: configuration re-read from %s; log level debug" % conf,
             "the reload's summary line")
    h.check("warn: SIGHUP: heartbeat changed; restart changegate to apply it" in cg.stderr(),
            "no warning naming the changed heartbeat:\n%s", cg.stderr()[-1500:])
    h.say("SIGHUP with log-level debug and heartbeat 5: level applied, heartbeat named")
    w.insert_seq(2, 1)
    h.check(sse.read_messages(1)[0].json()["fullDocument"]["seq"] == 2,
            "the subscriber stopped streaming across the reload")
    probe = cg.sse()
    probe.close()
    wait_log(cg, "debug:", "a debug line after the reload")

    with open(conf, "a") as f:
        f.write("no-such-option 1\n")
    cg.proc.send_signal(signal.SIGHUP)
    wait_log(cg, "error: SIGHUP: the configuration has problems, nothing changed",
             "the broken file's error line")
    h.check("unknown option 'no-such-option'" in cg.stderr(), "the problem is not named")
    w.insert_seq(3, 1)
    h.check(sse.read_messages(1)[0].json()["fullDocument"]["seq"] == 3,
            "the subscriber stopped streaming after a broken reload")
    h.say("SIGHUP with a broken file: error logged, nothing changed, still serving")

    # The harness passes --watch '*' on the command line: a file saying otherwise does
    # not win, and is not reported as a change either (what runs is the command line's).
    with open(conf, "w") as f:
        f.write("log-level debug\nheartbeat 5\nwatch other\n")
    before = cg.stderr().count("SIGHUP: configuration re-read")
    cg.proc.send_signal(signal.SIGHUP)
    h.wait_until(lambda: cg.stderr().count("SIGHUP: configuration re-read") > before, 10,
                 "the third reload")
    time.sleep(0.2)
    h.check("watch changed" not in cg.stderr(), "a file's watch overrode the command line")
    h.say("the command line's --watch still wins over the file after a reload")
    sc.finish()


if __name__ == "__main__":
    h.run(story)
