"""A real systemd, booted in a container over this machine's own root, for the package test.

The test machine has no systemd running (and CI machines may not either), yet the unit's
promises (Type=notify readiness, the sandbox, reload, the journal, no restart loop on a
bad config, the socket unit) are only shown by systemd itself. So:

  * a private mount namespace (`unshare -m`) holds every mount below, so they all vanish
    with the container, whatever happens to the test;
  * the root is an overlay: this machine's / read-only underneath, a scratch directory on
    top. Whatever the container writes (its /tmp cleaned at boot, journals, the package's
    state) lands in the scratch directory; this machine's files are never touched;
  * `systemd-nspawn --boot` starts systemd as the container's PID 1 with `--unit=` naming
    a target of the test's own, and /etc/systemd/system is made empty (an opaque overlay
    directory) but for what the test puts there, so only the units the test wants start;
  * the network is shared (no --private-network): changegate in the container reaches the
    test's devmongo on loopback, and the test reaches changegate's port.

The test reads and controls the container with `nsenter` into its PID 1's namespaces:
`systemctl`, `journalctl`, `systemd-analyze`. Files the test writes into `upper` before
`boot()` appear at the same path inside the container.
"""

import os
import subprocess
import time

import harness


def _children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _is_namespace_init(pid):
    """True for a process that is PID 1 of a child PID namespace (NSpid: <ours> 1)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("NSpid:"):
                    ids = line.split()[1:]
                    return len(ids) == 2 and ids[1] == "1"
    except OSError:
        pass
    return False


class BootedSystem:
    def __init__(self, scenario, name, target_wants):
        """target_wants: the units the container's boot target pulls in."""
        self.scenario = scenario
        self.name = name
        self.dir = scenario.mkdir("booted-" + name)
        self.upper = os.path.join(self.dir, "upper")
        self.work = os.path.join(self.dir, "work")
        self.root = os.path.join(self.dir, "root")
        for d in (self.upper, self.work, self.root):
            os.makedirs(d, exist_ok=True)
        self.proc = None
        self.init_pid = None
        # An opaque /etc/systemd/system: none of this machine's enabled units boot with it.
        units = self.path("/etc/systemd/system")
        os.makedirs(units, exist_ok=True)
        os.setxattr(units, "trusted.overlay.opaque", b"y")
        self.write("/etc/systemd/system/changegate-test.target",
                   "[Unit]\nDescription=the package test's boot target\n"
                   "Requires=basic.target\nAfter=basic.target\nAllowIsolate=yes\n"
                   "Wants=%s\n" % " ".join(target_wants))

    def path(self, inside):
        """Where a file at `inside` (an absolute path in the container) is written before boot."""
        return os.path.join(self.upper, inside.lstrip("/"))

    def write(self, inside, text, mode=0o644):
        p = self.path(inside)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, mode)

    def boot(self, timeout=60):
        script = os.path.join(self.dir, "boot.sh")
        with open(script, "w") as f:
            f.write("set -e\n"
                    # nspawn keeps its bookkeeping under /run/systemd/nspawn and removes it
                    # only from a tmpfs: give it one, private to this namespace.
                    "mkdir -p /run/systemd/nspawn\n"
                    "mount -t tmpfs tmpfs /run/systemd/nspawn\n"
                    "mount -t overlay overlay -o lowerdir=/,upperdir=%s,workdir=%s %s\n"
                    "exec systemd-nspawn --quiet --directory=%s --machine=%s --register=no "
                    "--keep-unit --link-journal=no --boot -- --unit=changegate-test.target\n"
                    % (self.upper, self.work, self.root, self.root, self.name))
        self.proc = harness.Proc("booted-" + self.name,
                                 ["unshare", "--mount", "--propagation", "private", "bash", script],
                                 os.path.join(self.dir, "console.log"))
        self.scenario.closers.append(self.stop)

        def init_found():
            self.scenario_check_alive()
            todo = [self.proc.pid]
            while todo:
                pid = todo.pop()
                if _is_namespace_init(pid):
                    self.init_pid = pid
                    return True
                todo.extend(_children(pid))
            return False
        harness.wait_until(init_found, timeout, "the container's systemd to start")
        # is-system-running --wait returns once the boot is over: "running", or
        # "degraded" when some unit failed (which the test looks at itself).
        def booted():
            r = self.run(["systemctl", "is-system-running", "--wait"], check=False, timeout=timeout)
            return r.stdout.strip() in ("running", "degraded")
        harness.wait_until(booted, timeout, "the container to finish booting", interval=0.5)
        return self

    def scenario_check_alive(self):
        harness.check(self.proc.alive(), "systemd-nspawn exited early:\n%s",
                      self.proc.output()[-3000:])

    def run(self, argv, check=True, timeout=60, input=None):
        """Runs argv inside the container; returns the CompletedProcess (text)."""
        r = subprocess.run(["nsenter", "--target", str(self.init_pid), "--all"] + argv,
                           capture_output=True, text=True, timeout=timeout, input=input)
        if check:
            harness.check(r.returncode == 0, "in the container, %s exited %d:\n%s%s",
                          " ".join(argv), r.returncode, r.stdout, r.stderr)
        return r

    def systemctl(self, *args, check=True):
        return self.run(["systemctl", "--no-pager"] + list(args), check=check)

    def show(self, unit, prop):
        return self.systemctl("show", "--value", "--property", prop, unit).stdout.strip()

    def journal(self, unit, *args):
        return self.run(["journalctl", "--no-pager", "-u", unit] + list(args)).stdout

    def stop(self):
        """Powers the container off (nspawn turns SIGTERM into a clean shutdown), then
        makes sure: SIGKILL to its PID 1 ends every process in it."""
        if not self.proc or not self.proc.alive():
            return
        self.proc.send_signal(15)
        deadline = time.time() + 20
        while self.proc.alive() and time.time() < deadline:
            time.sleep(0.2)
        if self.proc.alive() and self.init_pid:
            try:
                os.kill(self.init_pid, 9)
            except ProcessLookupError:
                pass
        self.proc.stop(wait=5)
