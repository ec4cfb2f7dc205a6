"""Server errors shaped like mongod's: {ok: 0, errmsg, code, codeName, errorLabels?}.

Commands raise CommandError; the dispatcher turns it into the reply document. Codes and
names come from the server's error_codes.yml so drivers classify them as they would
against a real server.
"""

CODE_NAMES = {
    1: "InternalError",
    2: "BadValue",
    9: "FailedToParse",
    11: "UserNotFound",
    13: "Unauthorized",
    14: "TypeMismatch",
    15: "Overflow",
    20: "IllegalOperation",
    26: "NamespaceNotFound",
    28: "PathNotViable",
    40: "ConflictingUpdateOperators",
    43: "CursorNotFound",
    47: "NoMatchingDocument",
    48: "NamespaceExists",
    50: "MaxTimeMSExpired",
    52: "DollarPrefixedFieldName",
    59: "CommandNotFound",
    63: "StaleShardVersion",
    66: "ImmutableField",
    72: "InvalidOptions",
    73: "InvalidNamespace",
    91: "ShutdownInProgress",
    115: "CommandNotSupported",
    133: "FailedToSatisfyReadPreference",
    136: "CappedPositionLost",
    150: "StaleEpoch",
    168: "InvalidPipelineOperator",
    189: "PrimarySteppedDown",
    207: "InvalidUUID",
    234: "RetryChangeStream",
    237: "CursorKilled",
    251: "NoSuchTransaction",
    260: "InvalidResumeToken",
    262: "ExceededTimeLimit",
    280: "ChangeStreamFatalError",
    286: "ChangeStreamHistoryLost",
    10107: "NotWritablePrimary",
    11000: "DuplicateKey",
    11600: "InterruptedAtShutdown",
    11601: "Interrupted",
    11602: "InterruptedDueToReplStateChange",
    13388: "StaleConfig",
    13435: "NotPrimaryNoSecondaryOk",
    13436: "NotPrimaryOrSecondary",
    40324: "Location40324",
    40674: "Location40674",
    31253: "Location31253",
    31254: "Location31254",
    6: "HostUnreachable",
    7: "HostNotFound",
    89: "NetworkTimeout",
    9001: "SocketException",
}

# Errors in the server's NonResumableChangeStreamError category carry that label.
NON_RESUMABLE_CHANGE_STREAM_CODES = {280, 286}

# Codes the server labels RetryableWriteError when a retryable write fails with them.
RETRYABLE_WRITE_CODES = {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436}


class CommandError(Exception):
    """A command failure; becomes {ok: 0, ...} in the reply."""

    def __init__(self, code, errmsg, labels=None, extra=None):
        super().__init__(errmsg)
        self.code = code
        self.errmsg = errmsg
        if labels is None and code in NON_RESUMABLE_CHANGE_STREAM_CODES:
            labels = ["NonResumableChangeStreamError"]
        self.labels = labels
        self.extra = extra or {}

    def to_doc(self):
        doc = {"ok": 0.0, "errmsg": self.errmsg, "code": self.code,
               "codeName": CODE_NAMES.get(self.code, "Location%d" % self.code)}
        if self.labels:
            doc["errorLabels"] = list(self.labels)
        doc.update(self.extra)
        return doc


def code_name(code):
    return CODE_NAMES.get(code, "Location%d" % code)
