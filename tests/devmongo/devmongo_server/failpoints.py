"""Fault injection with mongod's own test command, so tests stay portable to a real server.

    {configureFailPoint: "failCommand", mode: {times: N} | {skip: N} | "alwaysOn" | "off",
     data: {failCommands: [...], errorCode, errorLabels, closeConnection,
            blockConnection, blockTimeMS, writeConcernError, appName}}

As on mongod: the fail point is checked after a command is parsed and before it runs;
it only fires for commands named in failCommands (never for configureFailPoint itself);
`times` counts activations; an explicit `errorLabels` replaces the labels the server
would add. Labels are not added to failCommand errors on getMore (the server cannot
tell a change stream cursor at that point), which is why the drivers' spec tests use
`failGetMoreAfterCursorCheckout` for that; we support it too.
"""

from .errors import CommandError, RETRYABLE_WRITE_CODES

# Error codes mongod labels ResumableChangeStreamError when a change stream getMore fails.
RESUMABLE_CHANGE_STREAM_CODES = {6, 7, 63, 89, 91, 133, 150, 189, 234, 262, 9001, 10107,
                                 11600, 11602, 13388, 13435, 13436}

RETRYABLE_WRITE_COMMANDS = {"insert", "update", "delete", "findAndModify"}


class FailPoint:
    def __init__(self, name):
        self.name = name
        self.mode = "off"
        self.remaining = 0  # for {times: N}
        self.skip = 0       # for {skip: N}
        self.data = {}
        self.times_entered = 0

    def configure(self, mode, data):
        """Apply a configureFailPoint request; return how often it fired before."""
        before = self.times_entered
        if mode == "off":
            self.mode = "off"
        elif mode == "alwaysOn":
            self.mode = "alwaysOn"
        elif isinstance(mode, dict) and "times" in mode:
            n = int(mode["times"])
            self.mode = "times" if n > 0 else "off"
            self.remaining = n
        elif isinstance(mode, dict) and "skip" in mode:
            self.mode = "skip"
            self.skip = int(mode["skip"])
        else:
            raise CommandError(2, "mode must be one of: 'off', 'alwaysOn', {times: N}, {skip: N}")
        if data is not None:
            if not isinstance(data, dict):
                raise CommandError(14, "the 'data' field must be an object")
            self.data = data
        return before

    def should_fire(self):
        """Consume one activation if the fail point is on (called only for matching commands)."""
        if self.mode == "off":
            return False
        if self.mode == "skip":
            if self.skip > 0:
                self.skip -= 1
                return False
        elif self.mode == "times":
            self.remaining -= 1
            if self.remaining <= 0:
                self.mode = "off"
        self.times_entered += 1
        return True


class FailPoints:
    def __init__(self):
        self.points = {name: FailPoint(name) for name in ("failCommand", "failGetMoreAfterCursorCheckout")}

    def configure(self, cmd):
        name = cmd.get("configureFailPoint")
        fp = self.points.get(name)
        if fp is None:
            raise CommandError(2, "devmongo: unknown fail point '%s' (supported: %s)"
                               % (name, ", ".join(sorted(self.points))))
        if "mode" not in cmd:
            raise CommandError(9, "Missing mode argument")
        return fp.configure(cmd["mode"], cmd.get("data"))

    def fail_command(self, name, cmd, conn):
        """Decide what failCommand does to this command.

        Returns None (run normally) or a dict with any of: close (bool),
        block_ms (float), error (CommandError), write_concern_error (dict).
        """
        fp = self.points["failCommand"]
        if fp.mode == "off" or name == "configureFailPoint":
            return None
        data = fp.data
        if name not in (data.get("failCommands") or []):
            return None
        app = data.get("appName")
        if app is not None and app != conn.app_name:
            return None
        if not fp.should_fire():
            return None
        action = {}
        if data.get("blockConnection"):
            action["block_ms"] = float(data.get("blockTimeMS", 0))
        if data.get("closeConnection"):
            action["close"] = True
        elif "errorCode" in data:
            code = int(data["errorCode"])
            if "errorLabels" in data:
                labels = list(data["errorLabels"])
            else:
                labels = []
                if name in RETRYABLE_WRITE_COMMANDS and "txnNumber" in cmd and code in RETRYABLE_WRITE_CODES:
                    labels.append("RetryableWriteError")
            action["error"] = CommandError(code, "Failing command via 'failCommand' failpoint", labels=labels)
        elif "writeConcernError" in data:
            action["write_concern_error"] = data["writeConcernError"]
        return action

    def fail_getmore_after_checkout(self, cursor):
        """failGetMoreAfterCursorCheckout: error with the labels mongod would compute."""
        fp = self.points["failGetMoreAfterCursorCheckout"]
        if fp.mode == "off" or not fp.should_fire():
            return
        code = int(fp.data.get("errorCode", 1))
        labels = fp.data.get("errorLabels")
        if labels is None:
            labels = ["ResumableChangeStreamError"] if (
                getattr(cursor, "is_change_stream", False) and code in RESUMABLE_CHANGE_STREAM_CODES) else []
        raise CommandError(code, "Failing command via 'failGetMoreAfterCursorCheckout' failpoint",
                           labels=labels)
