"""Debian's nginx, lighttpd and apache2 in front of changegate's FastCGI socket, for the
integration scenarios.

Each web server runs as a foreground child of the test (a harness.Proc, in its own
process group) on a free loopback port, from a generated top-level config that includes
the example snippets in examples/{nginx,lighttpd,apache}/ verbatim: the only change is
the socket path (the examples say /run/changegate/changegate.sock). Everything it writes
stays in its own directory: config, pid file, access.log, temporary files, and error.log,
which is the process's stderr (so a failing scenario's log dump shows it).

    sock = webservers.socket_dir(sc) + "/changegate.sock"
    cg = sc.changegate(uri, args=["--listen", "fcgi:unix:" + sock,
                                  "--allow-public-unauthenticated", ...])
    with webservers.nginx(sock, sc) as ws:          # also lighttpd(...), apache(...)
        harness.request(ws.port, "GET", "/changegate/healthz")
        ws.url("/changegate/events")                # for curl -N
        ws.error_log()                              # text, for failure messages

nginx can also serve a directory of static files itself at / beside /changegate/, so that
a page and its stream share one origin: webservers.nginx(sock, sc, root=DIR) copies DIR
to htdocs/ in its own directory (readable by www-data wherever DIR is) and adds a
`location / { root ...; }` with Debian's mime.types.

Leaving the `with` (or the scenario's cleanup, when a scenario was given) stops it:
SIGTERM, which is a fast shutdown for all three, then SIGKILL on its process group.

As root, the workers run as www-data, as the Debian services do, so www-data must be able
to reach and open the socket: make it in socket_dir() and give changegate
`--fcgi-socket-owner :www-data` (with the default mode 0660), or `--fcgi-socket-mode 0666`.
As another user everything runs as that user.
"""

import grp
import os
import pwd
import shutil
import socket
import tempfile

import harness
from harness import check, say

EXAMPLES = os.path.join(harness.REPO, "examples")
EXAMPLE_SOCKET = "/run/changegate/changegate.sock"   # the path the snippets are written for
PREFIX = "/changegate/"                               # where the snippets mount changegate
WORKER_USER = "www-data" if os.geteuid() == 0 else None
APACHE_MODULES = "/usr/lib/apache2/modules"


def socket_dir(scenario_or_dir):
    """A directory for changegate's FastCGI socket that the web servers' workers can
    reach: <tmp>/fcgi, mode 0755, with <tmp> itself made traversable (0711)."""
    parent = getattr(scenario_or_dir, "tmp", scenario_or_dir)
    path = os.path.join(parent, "fcgi")
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)
    os.chmod(parent, os.stat(parent).st_mode | 0o111)
    return path


def group_of(user):
    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name


def snippet(relpath, fcgi_socket, names_socket=True):
    """An example file's text with the socket path substituted, and nothing else."""
    with open(os.path.join(EXAMPLES, relpath)) as f:
        text = f.read()
    check(EXAMPLE_SOCKET in text or not names_socket, "examples/%s does not name %s",
          relpath, EXAMPLE_SOCKET)
    return text.replace(EXAMPLE_SOCKET, fcgi_socket)


class WebServer:
    """One web server process. Subclasses write the config and name the command."""
    name = None

    def __init__(self, fcgi_socket, scenario=None, port=None, user=WORKER_USER):
        check(os.path.isabs(fcgi_socket), "the FastCGI socket must be an absolute path: %r",
              fcgi_socket)
        self.fcgi_socket = fcgi_socket
        self.sc = scenario
        self.port = port or harness.free_port()
        self.user = user
        self.dir = tempfile.mkdtemp(prefix="%s-" % self.name,
                                    dir=scenario.tmp if scenario else None)
        os.chmod(self.dir, 0o755)          # workers that dropped root read below it
        self.error_log_path = os.path.join(self.dir, "error.log")
        self.access_log_path = os.path.join(self.dir, "access.log")
        self.proc = None

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def write(self, name, text):
        with open(self.path(name), "w") as f:
            f.write(text)
        return self.path(name)

    def url(self, path=PREFIX):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def argv(self):
        raise NotImplementedError

    def start(self, timeout=15):
        argv = self.argv()
        self.proc = harness.Proc(self.name, argv, self.error_log_path)
        if self.sc is not None:
            self.sc.procs.append(self.proc)

        def listening():
            if not self.proc.alive():
                raise harness.TestFailure("%s exited with status %s at start:\n%s" % (
                    self.name, self.proc.popen.returncode, self.error_log()[-3000:]))
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        harness.wait_until(listening, timeout, "%s to listen on %d" % (self.name, self.port))
        say("%s (pid %d) up on 127.0.0.1:%d, FastCGI to %s", self.name, self.proc.pid,
            self.port, self.fcgi_socket)
        return self

    def stop(self, wait=10):
        """SIGTERM (a fast shutdown for nginx, lighttpd and apache2), wait, then SIGKILL
        the process group. Returns (exit status, killed); the status is not checked
        (lighttpd exits 1 when it is stopped with connections open)."""
        if self.proc is None or self.proc.returncode is not None:
            return (self.proc.returncode if self.proc else None), False
        rc, killed = self.proc.stop(wait=wait)
        say("%s stopped: exit status %s%s", self.name, rc, " (KILLED)" if killed else "")
        return rc, killed

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def error_log(self):
        return self.proc.output() if self.proc else ""

    def access_log(self):
        try:
            with open(self.access_log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        if self.sc is None and exc[0] is None and not os.environ.get("CG_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        return False


class Nginx(WebServer):
    """nginx with examples/nginx/changegate-upstream.conf in http { } and
    examples/nginx/changegate-location.conf in the server { }. Its conf directory holds
    a copy of Debian's fastcgi_params, which the location includes. root=DIR: a copy of
    DIR is also served as static files at / (location /, with Debian's mime.types)."""
    name = "nginx"

    def __init__(self, fcgi_socket, scenario=None, root=None, **kw):
        super().__init__(fcgi_socket, scenario, **kw)
        self.root = root

    def static(self):
        """The server's `location /` for root=DIR ("" without one)."""
        if self.root is None:
            return ""
        shutil.copytree(self.root, self.path("htdocs"))
        shutil.copy("/etc/nginx/mime.types", self.path("conf"))
        return """\
        location / {
            root %s;
            include mime.types;
        }
""" % self.path("htdocs")

    def argv(self):
        conf = self.path("conf")
        os.makedirs(conf)
        os.makedirs(self.path("temp"))
        shutil.copy("/etc/nginx/fastcgi_params", conf)
        self.write("conf/changegate-upstream.conf",
                   snippet("nginx/changegate-upstream.conf", self.fcgi_socket))
        self.write("conf/changegate-location.conf",
                   snippet("nginx/changegate-location.conf", self.fcgi_socket, False))
        temp = "\n".join("    %s_temp_path %s;" % (k, self.path("temp", k))
                         for k in ("client_body", "fastcgi", "proxy", "uwsgi", "scgi"))
        self.write("conf/nginx.conf", """\
# generated by tests/integration/webservers.py
daemon off;
master_process on;
worker_processes 1;
pid %(dir)s/nginx.pid;
error_log stderr info;
%(user)s
events { worker_connections 4096; }
http {
    access_log %(dir)s/access.log;
%(temp)s
    include changegate-upstream.conf;
    server {
        listen 127.0.0.1:%(port)d;
        server_name localhost;
        include changegate-location.conf;
%(static)s    }
}
""" % {"dir": self.dir, "port": self.port, "temp": temp, "static": self.static(),
       "user": "user %s;" % self.user if self.user else ""})
        return ["/usr/sbin/nginx", "-p", self.dir, "-c", self.path("conf", "nginx.conf")]


class Lighttpd(WebServer):
    """lighttpd with examples/lighttpd/changegate.conf included."""
    name = "lighttpd"

    def argv(self):
        os.makedirs(self.path("htdocs"))
        self.write("changegate.conf", snippet("lighttpd/changegate.conf", self.fcgi_socket))
        if self.user:   # lighttpd opens its access log after it has become self.user
            open(self.access_log_path, "a").close()
            os.chown(self.access_log_path, pwd.getpwnam(self.user).pw_uid, -1)
        user = ""
        if self.user:
            user = 'server.username = "%s"\nserver.groupname = "%s"' % (self.user,
                                                                        group_of(self.user))
        self.write("lighttpd.conf", """\
# generated by tests/integration/webservers.py; errors go to stderr
server.document-root = "%(dir)s/htdocs"
server.bind = "127.0.0.1"
server.port = %(port)d
server.pid-file = "%(dir)s/lighttpd.pid"
server.upload-dirs = ( "%(dir)s" )
server.modules = ( "mod_accesslog" )
accesslog.filename = "%(dir)s/access.log"
%(user)s
include "%(dir)s/changegate.conf"
""" % {"dir": self.dir, "port": self.port, "user": user})
        return ["/usr/sbin/lighttpd", "-D", "-f", self.path("lighttpd.conf")]


class Apache(WebServer):
    """apache2 (event MPM, mod_proxy, mod_proxy_fcgi) with examples/apache/changegate.conf
    included."""
    name = "apache2"

    def argv(self):
        os.makedirs(self.path("htdocs"))
        self.write("changegate.conf", snippet("apache/changegate.conf", self.fcgi_socket))
        modules = "\n".join("LoadModule %s_module %s/mod_%s.so" % (m, APACHE_MODULES, m)
                            for m in ("mpm_event", "authz_core", "proxy", "proxy_fcgi"))
        self.write("apache2.conf", """\
# generated by tests/integration/webservers.py; errors go to stderr
ServerRoot "%(dir)s"
DefaultRuntimeDir "%(dir)s"
PidFile "%(dir)s/apache2.pid"
ErrorLog "/dev/stderr"
LogLevel info
%(modules)s
Listen 127.0.0.1:%(port)d
ServerName 127.0.0.1
%(user)s
DocumentRoot "%(dir)s/htdocs"
LogFormat "%%h %%t \\"%%r\\" %%>s %%b %%Dus" changegate
CustomLog "%(dir)s/access.log" changegate
Include "%(dir)s/changegate.conf"
""" % {"dir": self.dir, "port": self.port, "modules": modules,
       "user": "User %s\nGroup %s" % (self.user, group_of(self.user)) if self.user else ""})
        return ["/usr/sbin/apache2", "-DFOREGROUND", "-f", self.path("apache2.conf")]


def nginx(fcgi_socket, scenario=None, **kw):
    return Nginx(fcgi_socket, scenario, **kw).start()


def lighttpd(fcgi_socket, scenario=None, **kw):
    return Lighttpd(fcgi_socket, scenario, **kw).start()


def apache(fcgi_socket, scenario=None, **kw):
    return Apache(fcgi_socket, scenario, **kw).start()


ALL = {"nginx": nginx, "lighttpd": lighttpd, "apache2": apache}
