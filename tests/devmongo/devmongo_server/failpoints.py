"""Fault injection with mongod's own test command, so tests stay portable to a real server.

    {configureFailPoint: "failCommand", mode: {times: N} | {skip: N} | "alwaysOn" | "off",
     data: {failCommands: [...], errorCode, errorLabels, closeConnection,
            blockConnection, blockTimeMS, writeConcernError, appName}}

As on mongod 6.0 (CommandHelpers::evaluateFailCommandFailPoint in commands.cpp): the fail
point is checked after a command is parsed and before it runs; it only fires for
commands named in failCommands (never for configureFailPoint itself), and only when the
data asks for closeConnection, blockConnection or errorCode; `times` counts
activations. Once it fires it blocks first (blockTimeMS is then required, error 72
otherwise), then closes the connection without a reply, or fails with errorCode and
"Failing command via 'failCommand' failpoint", or lets the command run.

Error labels (error_labels.cpp, getErrorLabels): an `errorLabels` array in the data
replaces whatever the server would add (an empty one removes them all). Without it the
server adds its own: RetryableWriteError for retryable writes, ResumableChangeStreamError
for a retryable/network code on an aggregate that opens a change stream (the command is
known), NonResumableChangeStreamError for 280 and 286 on any command. On getMore the
fail point fires before the cursor is checked out, so the server cannot tell it belongs
to a change stream and adds no ResumableChangeStreamError; that is why the drivers' spec
tests use `failGetMoreAfterCursorCheckout` (SERVER-46091), which we support too.
"""

from .errors import CommandError, NON_RESUMABLE_CHANGE_STREAM_CODES, RETRYABLE_WRITE_CODES

# Error codes mongod labels ResumableChangeStreamError when a change stream aggregate or
# getMore fails with them (ErrorLabelBuilder::isResumableChangeStreamError: RetriableError
# and NetworkError categories, NeedRetargettingError, RetryChangeStream 234,
# FailedToSatisfyReadPreference 133).
RESUMABLE_CHANGE_STREAM_CODES = {6, 7, 63, 89, 91, 133, 150, 189, 234, 262, 9001, 10107,
                                 11600, 11602, 13388, 13435, 13436}


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
        # mongod evaluates writeConcernError separately (after the command); both count.
        if not (data.get("closeConnection") or data.get("blockConnection") or "errorCode" in data
                or "writeConcernError" in data):
            return None
        if not fp.should_fire():
            return None
        action = {}
        if data.get("blockConnection"):
            block_ms = data.get("blockTimeMS")
            if isinstance(block_ms, bool) or not isinstance(block_ms, (int, float)):
                action["error"] = CommandError(72, "must specify 'blockTimeMS' when 'blockConnection' is true")
                return action
            if block_ms < 0:
                action["error"] = CommandError(72, "'blockTimeMS' must be non-negative")
                return action
            action["block_ms"] = float(block_ms)
        if data.get("closeConnection"):
            action["close"] = True
        elif "errorCode" in data:
            code = int(data["errorCode"])
            if isinstance(data.get("errorLabels"), list):
                labels = list(data["errorLabels"])
            else:
                labels = server_labels(name, cmd, code, _opens_change_stream(name, cmd))
            action["error"] = CommandError(code, "Failing command via 'failCommand' failpoint", labels=labels)
        elif "writeConcernError" in data:
            action["write_concern_error"] = data["writeConcernError"]
        return action

    def fail_getmore_after_checkout(self, cursor, conn):
        """failGetMoreAfterCursorCheckout (getmore_cmd.cpp): thrown once the cursor is
        checked out, so the server knows it is a change stream and labels the error itself
        (errorLabels in the data is not looked at); the getMore then deletes the cursor."""
        fp = self.points["failGetMoreAfterCursorCheckout"]
        if fp.mode == "off":
            return
        app = fp.data.get("appName")
        if app is not None and app != conn.app_name:
            return
        if not fp.should_fire():
            return
        code = int(fp.data.get("errorCode", 1))
        labels = server_labels("getMore", {}, code, getattr(cursor, "is_change_stream", False))
        raise CommandError(code, "Hit the 'failGetMoreAfterCursorCheckout' failpoint", labels=labels)


def _opens_change_stream(name, cmd):
    pipeline = cmd.get("pipeline")
    return (name == "aggregate" and isinstance(pipeline, list) and bool(pipeline)
            and isinstance(pipeline[0], dict) and "$changeStream" in pipeline[0])


def server_labels(name, cmd, code, change_stream):
    """The labels mongod's ErrorLabelBuilder::build gives an error with this code."""
    retryable_write = "txnNumber" in cmd and "autocommit" not in cmd
    if retryable_write and code in RETRYABLE_WRITE_CODES:
        return ["RetryableWriteError"]
    if change_stream and name in ("aggregate", "getMore") and code in RESUMABLE_CHANGE_STREAM_CODES:
        return ["ResumableChangeStreamError"]
    if code in NON_RESUMABLE_CHANGE_STREAM_CODES:
        return ["NonResumableChangeStreamError"]
    return []
