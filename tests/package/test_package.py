#!/usr/bin/python3
"""The Debian package's life on one machine, from source to purge.

1. Build: `dpkg-buildpackage -us -uc -b` from this checkout (tests/package/build-deb.sh),
   unit tests included; lintian has no error and no warning, and every info, pedantic or
   experimental tag it still reports is one tests/package/lintian-expected explains.
2. Install with `apt-get install ./changegate_*.deb`: the system user, /var/lib/changegate
   owned by it, the conffile, the man page, the units; `systemd-analyze verify` passes and
   `systemd-analyze security` scores the service at 2.5 or lower.
3. Run /usr/sbin/changegate as the service user with the installed config, edited to point
   at a devmongo, and stream an event with curl.
4. Upgrade over that edited conffile with --force-confold: the edits stay, the new default
   is set aside as .dpkg-dist.
5. Under a real systemd (booted in a container over this machine's root, tests/package/
   booted.py): the unit starts as Type=notify and says so only when ready; its status line;
   streams from a curl on the host; reload re-reads the config; the journal has priorities;
   a broken config fails the unit once, with --check-config's message, and no restart loop;
   the socket unit hands changegate its FastCGI socket; a second instance from the example
   drop-in (examples/systemd) runs beside the first.
6. Purge: nothing is left but the system user (Debian leaves system users in place).

Needs root (it installs and purges the package on this machine, as CI does). The package
must not be installed when it starts: it purges a leftover from an interrupted run first.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
import booted  # noqa: E402
import fcgi_client as fc  # noqa: E402
import harness as h  # noqa: E402

SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
CONF = "/etc/changegate/changegate.conf"
# Where the package may leave a trace; the purge must take every one away.
TRACE_ROOTS = ["/etc", "/usr", "/lib", "/var/lib", "/var/cache/changegate", "/var/log"]


def sh(argv, check=True, timeout=600, env=None, input=None):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                       input=input)
    if check:
        h.check(r.returncode == 0, "%s exited %d:\n%s%s", " ".join(argv), r.returncode,
                r.stdout[-3000:], r.stderr[-3000:])
    return r


def apt_env():
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return env


def traces():
    """Every path on this machine whose name says changegate, outside the source tree."""
    found = set()
    for root in TRACE_ROOTS:
        if not os.path.exists(root):
            continue
        r = sh(["find", root, "-xdev", "-name", "*changegate*"], check=False)
        for line in r.stdout.splitlines():
            if not line.startswith(SRC):
                found.add(line)
    return found


def installed():
    r = sh(["dpkg-query", "-W", "-f=${Status}", "changegate"], check=False)
    return "installed" in r.stdout and "not-installed" not in r.stdout


def build(sc):
    """1. The package, built from this checkout; lintian's verdict."""
    out = sc.mkdir("deb")
    deb = sh(["bash", os.path.join(HERE, "build-deb.sh"), out], timeout=900).stdout.split()[-1]
    h.check(os.path.isfile(deb), "build-deb.sh printed %r, not a .deb", deb)
    build_log = open(os.path.join(out, "build.log")).read()
    tests = re.search(r"# TOTAL: +(\d+)\n# PASS: +(\d+)", build_log)
    h.check(tests and tests.group(1) == tests.group(2) and int(tests.group(1)) > 0,
            "dh_auto_test did not run the unit tests to a pass: %r", tests and tests.group(0))
    h.say("built %s (dh_auto_test: %s unit test programs passed)", os.path.basename(deb),
          tests.group(1))

    lint = sh(["lintian", "--display-info", "--pedantic", "--display-experimental",
               "--tag-display-limit", "0", deb], check=False)
    tags = [ln for ln in lint.stdout.splitlines() if re.match(r"^[EWIPX]: ", ln)]
    expected = {}
    with open(os.path.join(HERE, "lintian-expected")) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                tag, _, why = line.partition(" ")
                expected[tag] = why.strip()
    bad = []
    for t in tags:
        level, tag = t[0], t.split()[2]
        if level in "EW":
            bad.append(t)
        elif tag not in expected:
            bad.append(t + "  (not in tests/package/lintian-expected)")
        else:
            h.say("lintian %s: %s -- %s", level, tag, expected[tag])
    h.check(lint.returncode == 0 and not bad, "lintian (exit %d):\n%s\n%s", lint.returncode,
            "\n".join(bad), lint.stderr[-2000:])
    h.say("lintian: no error, no warning; %d explained tag(s)", len(tags))
    return deb


def install(sc, deb):
    """2. apt-get install ./deb; what is on disk afterwards."""
    sh(["apt-get", "install", "-y", "-q", os.path.abspath(deb)], env=apt_env())
    h.check(installed(), "changegate is not installed after apt-get install")
    pw = sh(["getent", "passwd", "changegate"]).stdout.strip().split(":")
    h.check(int(pw[2]) < 1000 and pw[5] == "/var/lib/changegate" and "nologin" in pw[6],
            "the changegate user is not a system user with home /var/lib/changegate and no "
            "login shell: %r", pw)
    st = os.stat("/var/lib/changegate")
    h.check(st.st_uid == int(pw[2]) and (st.st_mode & 0o777) == 0o750,
            "/var/lib/changegate: owner %d, mode %o (expected changegate, 750)", st.st_uid,
            st.st_mode & 0o777)
    conffiles = sh(["dpkg-query", "-W", "-f=${Conffiles}", "changegate"]).stdout
    h.check(CONF in conffiles, "%s is not a conffile: %r", CONF, conffiles)
    man = sh(["man", "-w", "8", "changegate"]).stdout.strip()
    h.check(man == "/usr/share/man/man8/changegate.8.gz", "man -w changegate: %r", man)
    page = sh(["man", "-l", man], env=dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8",
                                                   MANPAGER="cat")).stdout
    page = re.sub(r".\x08", "", page)  # the overstrikes of bold and underline
    h.check("--check-config" in page and "/events" in page, "the man page lacks options or "
            "endpoints:\n%s", page[:500])
    for unit in ("changegate.service", "changegate.socket", "changegate@.service"):
        h.check(os.path.isfile("/lib/systemd/system/" + unit), "no /lib/systemd/system/%s", unit)
    version = sh(["/usr/sbin/changegate", "--version"]).stdout
    h.say("installed: user %s (uid %s), /var/lib/changegate 750, conffile %s, %s, %s", pw[0],
          pw[2], CONF, man, version.strip())

    r = sh(["systemd-analyze", "verify", "/lib/systemd/system/changegate.service",
            "/lib/systemd/system/changegate.socket"], check=False)
    h.check(r.returncode == 0 and not r.stderr.strip(), "systemd-analyze verify: %d %s",
            r.returncode, r.stderr)
    score = security_score(sh(["systemd-analyze", "security", "--offline=true", "--no-pager",
                               "/lib/systemd/system/changegate.service"]).stdout)
    h.check(score <= 2.5, "systemd-analyze security: %.1f, above 2.5", score)
    h.say("systemd-analyze verify: clean; security (offline): %.1f", score)


def security_score(text):
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\S+)", text)
    h.check(m, "no overall exposure level in:\n%s", text[-800:])
    return float(m.group(1))


def edit_conffile(mongo, port):
    """The administrator's edits: MongoDB and the port."""
    text = open(CONF).read()
    text, n1 = re.subn(r"(?m)^mongo-uri .*$", "mongo-uri " + mongo.uri, text)
    text, n2 = re.subn(r"(?m)^listen .*$", "listen http://127.0.0.1:%d" % port, text)
    h.check(n1 == 1 and n2 == 1, "the conffile has no active mongo-uri and listen lines")
    with open(CONF, "w") as f:
        f.write(text + "\n# edited by the package test\n")


def stream_one(port, w, seq, what, ns="pkg.orders"):
    """curl -N /events while a document is inserted: the event arrives."""
    curl = subprocess.Popen(["curl", "-sN", "--max-time", str(int(20 * h.SLOW)),
                             "http://127.0.0.1:%d/events?ns=%s" % (port, ns)],
                            stdout=subprocess.PIPE, text=True)
    try:
        first = curl.stdout.readline()  # the stream's opening: it is subscribed
        h.check(first, "%s: curl got nothing from /events", what)
        db, coll = ns.split(".")
        w.coll(db, coll).insert_one({"seq": seq, "item": "package test"})
        seen = [first]
        for line in curl.stdout:
            seen.append(line)
            if line.startswith("data:"):
                event = json.loads(line[5:])
                if event.get("fullDocument", {}).get("seq") == seq:
                    return line.strip()
        raise h.TestFailure("%s: /events ended without the event seq %d; it sent:\n%s" % (
            what, seq, "".join(seen)[-3000:]))
    finally:
        curl.kill()
        curl.wait()


def run_as_service_user(sc, mongo, w):
    """3. The installed daemon, as its user, with the installed (edited) config."""
    port = h.free_port()
    edit_conffile(mongo, port)
    sh(["runuser", "-u", "changegate", "--", "/usr/sbin/changegate", "--check-config",
        "--config", CONF])
    # setpriv execs the daemon as the user (runuser would stay in between, as its parent).
    proc = h.Proc("changegate-installed", ["setpriv", "--reuid=changegate", "--regid=changegate",
                                           "--init-groups", "/usr/sbin/changegate", "--config",
                                           CONF],
                  os.path.join(sc.tmp, "installed.log"), cwd="/var/lib/changegate")
    try:
        h.wait_until(lambda: h.request(port, "GET", "/healthz", timeout=2)[0] == 200,
                     20 * h.SLOW, "the installed changegate's /healthz to say 200")
        line = stream_one(port, w, 1, "installed changegate")
        h.say("the installed changegate, as user changegate, streamed: %s", line[:100])
    finally:
        rc, _ = proc.stop()
    h.check(rc == 0, "the installed changegate exited %s after SIGTERM:\n%s", rc,
            proc.output()[-2000:])
    owners = {sh(["stat", "-c", "%U", os.path.join("/var/lib/changegate", f)]).stdout.strip()
              for f in os.listdir("/var/lib/changegate")}
    h.check(owners == {"changegate"}, "files in /var/lib/changegate owned by %s", owners)
    h.say("it kept its position in /var/lib/changegate (%s) and exited 0",
          ", ".join(sorted(os.listdir("/var/lib/changegate"))))


def upgrade_keeps_edits(sc, deb):
    """4. A newer package whose default config changed, over the administrator's edits."""
    tree = os.path.join(sc.tmp, "next")
    sh(["dpkg-deb", "--raw-extract", deb, tree])
    control = os.path.join(tree, "DEBIAN", "control")
    text = open(control).read()
    old_version = re.search(r"(?m)^Version: (.*)$", text).group(1)
    new_version = old_version + "+next1"
    with open(control, "w") as f:
        f.write(text.replace("Version: " + old_version, "Version: " + new_version))
    packaged = os.path.join(tree, CONF.lstrip("/"))
    with open(packaged, "a") as f:
        f.write("\n# a default added by the next version\n")
    # (dh_md5sums leaves conffiles out of md5sums: dpkg keeps their sums itself.)
    next_deb = os.path.join(sc.tmp, "changegate_%s.deb" % new_version)
    sh(["dpkg-deb", "--root-owner-group", "--build", tree, next_deb])
    before = open(CONF).read()
    sh(["apt-get", "install", "-y", "-q", "-o", "Dpkg::Options::=--force-confold",
        next_deb], env=apt_env())
    version = sh(["dpkg-query", "-W", "-f=${Version}", "changegate"]).stdout
    h.check(version == new_version, "after the upgrade, version %r", version)
    h.check(open(CONF).read() == before, "the upgrade changed the edited %s", CONF)
    h.check(os.path.exists(CONF + ".dpkg-dist") and "next version" in open(
        CONF + ".dpkg-dist").read(), "the new default was not set aside as .dpkg-dist")
    h.say("upgrade %s -> %s with --force-confold kept the edited conffile; the new default "
          "is %s.dpkg-dist", old_version, new_version, CONF)


def systemd_story(sc, mongo, w):
    """5. The units under a real systemd."""
    port = h.free_port()
    sysd = booted.BootedSystem(sc, "pkg", ["changegate.service"])
    conf = "mongo-uri %s\nlisten http://127.0.0.1:%d\nstate-dir /var/lib/changegate\n" \
        "log-level info\nheartbeat 15\n" % (mongo.uri, port)
    sysd.write(CONF, conf)
    # The second instance, exactly as examples/systemd says, but for MongoDB's address.
    example = os.path.join(SRC, "examples", "systemd")
    reports = open(os.path.join(example, "reports.conf")).read()
    reports = re.sub(r"(?m)^mongo-uri .*$", "mongo-uri " + mongo.uri, reports)
    sysd.write("/etc/changegate/reports.conf", reports)
    dropin = "changegate@reports.service.d/override.conf"
    sysd.write("/etc/systemd/system/" + dropin, open(os.path.join(example, dropin)).read())
    sysd.boot()

    # Ready means ready: Type=notify, and the port answers once systemd says "active".
    for prop, want in (("Type", "notify"), ("ActiveState", "active"), ("SubState", "running"),
                       ("User", "changegate"), ("NRestarts", "0")):
        got = sysd.show("changegate", prop)
        h.check(got == want, "changegate.service %s=%r, expected %r:\n%s", prop, got, want,
                sysd.journal("changegate"))
    st, _, _ = h.request(port, "GET", "/healthz", timeout=5)
    h.check(st in (200, 503), "right after systemd reported the unit active, /healthz: %s", st)
    h.wait_until(lambda: sysd.show("changegate", "StatusText").startswith("live"), 20,
                 "the unit's status line to say live")
    h.say("changegate.service: Type=notify, active as user changegate; status %r",
          sysd.show("changegate", "StatusText"))
    try:
        line = stream_one(port, w, 2, "changegate.service")
    except h.TestFailure as e:
        raise h.TestFailure("%s\njournal:\n%s" % (e, sysd.journal("changegate")[-4000:]))
    h.say("curl on the host streamed from the service: %s", line[:80])
    pid = sysd.show("changegate", "MainPID")
    user = sysd.run(["ps", "-o", "user=", "-p", pid]).stdout.strip()
    h.check(user == "changegate", "the main process runs as %r", user)

    score = security_score(sysd.run(["systemd-analyze", "security", "--no-pager",
                                     "changegate.service"]).stdout)
    h.check(score <= 2.5, "systemd-analyze security in the booted system: %.1f", score)
    h.say("systemd-analyze security changegate.service (running): %.1f", score)

    # Reload: the log level applies, the heartbeat waits for a restart, and the journal files
    # the warning at its priority.
    sysd.write(CONF, conf.replace("log-level info", "log-level debug")
               .replace("heartbeat 15", "heartbeat 5"))
    sysd.systemctl("reload", "changegate")
    h.wait_until(lambda: "log level debug" in sysd.journal("changegate"), 10,
                 "the reload's line in the journal")
    warnings = sysd.journal("changegate", "-p", "warning")
    h.check("heartbeat changed; restart" in warnings and "log level debug" not in warnings,
            "journalctl -p warning after the reload:\n%s", warnings)
    h.check(sysd.show("changegate", "ActiveState") == "active", "not active after reload")
    h.say("systemctl reload: log level now debug; 'heartbeat changed' filed as a warning")

    # A broken config: the unit fails once, says why, and is not restarted.
    sysd.write(CONF, conf + "no-such-option 1\n")
    r = sysd.systemctl("restart", "changegate", check=False)
    h.check(r.returncode != 0, "restart with a broken config succeeded")
    time.sleep(5)  # RestartSec=2s: a restart loop would have started twice by now
    state = {p: sysd.show("changegate", p) for p in ("ActiveState", "Result", "NRestarts",
                                                    "ExecMainStatus")}
    journal = sysd.journal("changegate")
    h.check(state["ActiveState"] == "failed" and state["NRestarts"] == "0" and
            state["ExecMainStatus"] == "78", "after a broken config: %s\n%s", state, journal)
    h.check(journal.count("unknown option 'no-such-option'") >= 1 and
            "configuration problems" in sysd.journal("changegate", "-p", "err"),
            "the journal does not say what is wrong at error priority:\n%s", journal)
    h.say("a broken config: unit failed once (%s), no restart, the journal names the option",
          state)

    # The socket unit: systemd owns the FastCGI socket; the web server's group may use it.
    # Started while the config has no fcgi:systemd listener, changegate says so.
    untaken = "no listener takes them"
    sysd.write(CONF, conf)
    sysd.systemctl("reset-failed", "changegate")
    sysd.systemctl("start", "changegate.socket")
    sysd.systemctl("restart", "changegate")
    warnings = sysd.journal("changegate", "-p", "warning")
    h.check(warnings.count(untaken) == 1, "a socket passed to no listener was not warned "
            "about:\n%s", warnings)
    sysd.write(CONF, conf + "listen fcgi:systemd\nallow-public-unauthenticated\n")
    sysd.systemctl("restart", "changegate")
    sock = "/proc/%d/root/run/changegate.sock" % sysd.init_pid
    st = sysd.run(["stat", "-c", "%U:%G %a", "/run/changegate.sock"]).stdout.strip()
    h.check(st == "changegate:www-data 660", "/run/changegate.sock is %s", st)
    fcgi_health(sock, "changegate.socket")
    warnings = sysd.journal("changegate", "-p", "warning")
    h.check(warnings.count(untaken) == 1, "the socket was not taken:\n%s", warnings)
    h.say("changegate.socket: without fcgi:systemd a warning; with it /run/changegate.sock %s "
          "is handed to the service, /healthz over FastCGI 200", st)

    # The second instance from examples/systemd, beside the first.
    sysd.systemctl("start", "changegate@reports", check=False)
    h.check(sysd.show("changegate@reports", "ActiveState") == "active",
            "changegate@reports is not active:\n%s", sysd.journal("changegate@reports"))
    h.check(sysd.show("changegate@reports", "LimitNOFILE") == "131072",
            "the drop-in's LimitNOFILE is not applied")
    st = sysd.run(["stat", "-c", "%U:%G %a", "/run/changegate-reports/fcgi.sock"]).stdout.strip()
    h.check(st == "changegate:www-data 660", "the reports socket is %s", st)
    fcgi_health("/proc/%d/root/run/changegate-reports/fcgi.sock" % sysd.init_pid,
                "changegate@reports")
    state_dirs = sysd.run(["ls", "/var/lib/changegate"]).stdout.split()
    h.check("reports" in state_dirs, "no /var/lib/changegate/reports: %s", state_dirs)
    h.check(sysd.show("changegate", "ActiveState") == "active", "the first instance stopped")
    h.say("changegate@reports with the example drop-in: active beside changegate, socket %s, "
          "own state directory", st)

    sysd.systemctl("stop", "changegate", "changegate@reports", "changegate.socket")
    journal = sysd.journal("changegate", "--since", "-15s")
    h.check("stopped" in journal, "no clean stop in the journal:\n%s", journal[-1500:])
    sysd.stop()


def fcgi_health(sock, what):
    """/healthz through a FastCGI socket, once the gateway has caught up: 200."""
    def status():
        conn = fc.Connection(sock)
        try:
            resp = conn.begin(1, fc.cgi_params(uri="/healthz"), keep_conn=False)
            conn.wait_end(1)
            return resp.json()[0] == 200
        finally:
            conn.close()
    h.wait_until(status, 20, "%s: /healthz over FastCGI to say 200" % what, interval=0.3)


def purge(sc, before):
    """6. apt-get purge: nothing left but the system user."""
    sh(["apt-get", "purge", "-y", "-q", "changegate"], env=apt_env())
    h.check(not installed(), "changegate still installed after purge")
    left = traces() - before
    h.check(not left, "the purge left behind:\n%s", "\n".join(sorted(left)))
    user = sh(["getent", "passwd", "changegate"], check=False).stdout.strip()
    h.say("purged: no file left; %s", "the system user stays, as Debian policy allows (%s)"
          % user if user else "no user either")


def story(sc):
    if installed():
        h.say("changegate was left installed by an earlier run: purging it first")
        sh(["apt-get", "purge", "-y", "-q", "changegate"], env=apt_env())
    before = traces()
    deb = build(sc)
    mongo = sc.devmongo()
    w = sc.writer(mongo.uri)
    try:
        install(sc, deb)
        run_as_service_user(sc, mongo, w)
        upgrade_keeps_edits(sc, deb)
        systemd_story(sc, mongo, w)
        purge(sc, before)
    finally:
        if installed():
            sh(["apt-get", "purge", "-y", "-q", "changegate"], check=False, env=apt_env())
    sc.finish()


if __name__ == "__main__":
    h.run(story, timeout=900)
