"""The asyncio TCP server: connections, the request loop, startup and shutdown.

One coroutine per connection reads a message, runs the command and writes the reply;
requests on one connection are answered in order, as drivers expect. All state lives
in the Server object and is touched only from the event loop thread, so no locks.
"""

import argparse
import asyncio
import os
import signal
import sys
import time

from . import commands, persist, wire
from .failpoints import FailPoints
from .oplog import INITIATING_SET, NEW_PRIMARY, Entry, Oplog
from .store import Store

SAVE_INTERVAL_S = 2.0
CURSOR_TIMEOUT_S = 600


class Connection:
    def __init__(self, conn_id, peer):
        self.id = conn_id
        self.peer = peer
        self.app_name = None


class Server:
    def __init__(self, host, port, oplog_size, dbpath=None, advertise=None, argv=None):
        self.host = host
        self.port = port
        self.advertise_host = advertise
        self.dbpath = dbpath
        self.argv = argv or []
        self.oplog = Oplog(oplog_size)
        self.store = Store(self.oplog)
        self.failpoints = FailPoints()
        self.cursors = {}
        self.connections = set()
        self.next_conn_id = 1
        self.started = time.time()
        self.trace = False
        self.advertised = None
        self._server = None
        self._stop = None

    def start_state(self):
        loaded = False
        if self.dbpath:
            os.makedirs(self.dbpath, exist_ok=True)
            loaded = persist.load(self)
        # With no saved state this is a new deployment: its oplog starts, as a replica
        # set's does, with the "initiating set" no-op (which also tells change streams
        # that no history was lost yet, see oplog.py). A restart writes what a node that
        # becomes primary writes.
        self.oplog.append(Entry("noop", doc=NEW_PRIMARY if loaded else INITIATING_SET))
        self.store.dirty = True

    async def handle(self, reader, writer):
        conn = Connection(self.next_conn_id, "%s:%s" % writer.get_extra_info("peername")[:2])
        self.next_conn_id += 1
        self.connections.add(writer)
        req_id = 0
        try:
            while True:
                header = await reader.readexactly(16)
                length, request_id, _resp_to, op_code = wire.HEADER.unpack(header)
                if length < 16 or length > commands.MAX_MESSAGE:
                    break
                body = await reader.readexactly(length - 16)
                try:
                    request = wire.parse_message(request_id, op_code, body)
                except Exception as e:  # malformed message (ProtocolError, bad BSON, ...)
                    print("devmongo: closing connection %d: %s" % (conn.id, e), file=sys.stderr, flush=True)
                    break
                reply = await commands.run_command(self, conn, request)
                if reply is commands.CLOSE:
                    break
                if request.more_to_come:
                    continue
                req_id += 1
                writer.write(wire.encode_reply(request, reply, req_id))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.connections.discard(writer)
            try:
                writer.close()
            except Exception:
                pass

    async def run(self):
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        self.start_state()
        self._server = await asyncio.start_server(self.handle, self.host, self.port, reuse_address=True)
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        host = self.advertise_host or self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        self.advertised = "%s:%d" % (host, self.port)
        print("devmongo ready on %s:%d" % (self.host, self.port), flush=True)
        saver = asyncio.ensure_future(self._periodic_save()) if self.dbpath else None
        reaper = asyncio.ensure_future(self._reap_idle_cursors())
        await self._stop.wait()
        # Shutdown: stop listening, drop connections, save state.
        if saver:
            saver.cancel()
        reaper.cancel()
        self._server.close()
        for w in list(self.connections):
            w.close()
        if self.dbpath:
            persist.save(self)

    async def _reap_idle_cursors(self):
        """Drop cursors unused for CURSOR_TIMEOUT_S, like mongod's cursorTimeoutMillis,
        so clients that vanish without killCursors do not pile up open change streams."""
        while True:
            await asyncio.sleep(30)
            limit = time.monotonic() - CURSOR_TIMEOUT_S
            for cid, cur in list(self.cursors.items()):
                if cur.last_used < limit:
                    self.cursors.pop(cid, None)

    async def _periodic_save(self):
        while True:
            await asyncio.sleep(SAVE_INTERVAL_S)
            if self.store.dirty:
                persist.save(self)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="devmongo",
                                description="MongoDB-wire-compatible development server (replica set rs0)")
    p.add_argument("--port", type=int, required=True, help="TCP port (0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--advertise-host", default=None,
                   help="host name reported in hello hosts/primary/me (default: --host)")
    p.add_argument("--oplog-size", type=int, default=100000, help="oplog entries kept (default 100000)")
    p.add_argument("--dbpath", default=None, help="directory to load state from and save it to")
    p.add_argument("--trace", action="store_true", help="log every command to stderr")
    args = p.parse_args(argv)
    if args.oplog_size < 1:
        p.error("--oplog-size must be at least 1")
    server = Server(args.host, args.port, args.oplog_size, args.dbpath, args.advertise_host,
                    ["devmongo"] + list(argv))
    server.trace = args.trace
    try:
        asyncio.run(server.run())
    except KeyboardInterrupt:
        pass
    except OSError as e:
        print("devmongo: %s" % e, file=sys.stderr, flush=True)
        return 1
    return 0
