"""Server error replies in the real MongoDB format (sandbox; dev/test only)."""

from __future__ import annotations

from typing import Any

CODE_NAMES: dict[int, str] = {
    1: "InternalError",
    2: "BadValue",
    6: "HostUnreachable",
    7: "HostNotFound",
    9: "FailedToParse",
    11: "UserNotFound",
    13: "Unauthorized",
    14: "TypeMismatch",
    20: "IllegalOperation",
    22: "InvalidBSON",
    26: "NamespaceNotFound",
    27: "IndexNotFound",
    43: "CursorNotFound",
    47: "NoMatchingDocument",
    48: "NamespaceExists",
    50: "MaxTimeMSExpired",
    59: "CommandNotFound",
    63: "StaleShardVersion",
    66: "ImmutableField",
    72: "InvalidOptions",
    73: "InvalidNamespace",
    85: "IndexOptionsConflict",
    86: "IndexKeySpecsConflict",
    89: "NetworkTimeout",
    91: "ShutdownInProgress",
    96: "OperationFailed",
    112: "WriteConflict",
    115: "CommandNotSupported",
    133: "FailedToSatisfyReadPreference",
    150: "StaleEpoch",
    189: "PrimarySteppedDown",
    234: "RetryChangeStream",
    251: "NoSuchTransaction",
    260: "InvalidResumeToken",
    262: "ExceededTimeLimit",
    263: "OperationNotSupportedInTransaction",
    280: "ChangeStreamFatalError",
    286: "ChangeStreamHistoryLost",
    10107: "NotWritablePrimary",
    11000: "DuplicateKey",
    11600: "InterruptedAtShutdown",
    11602: "InterruptedDueToReplStateChange",
    13388: "StaleConfig",
    13435: "NotPrimaryNoSecondaryOk",
    13436: "NotPrimaryOrSecondary",
    40573: "Location40573",
}

#: Codes for which pymongo's change stream resumes (the server adds this label itself).
RESUMABLE_CHANGE_STREAM_CODES = frozenset(
    {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 63, 150, 13388, 234, 133, 43}
)

#: Codes that make a retryable write retryable (label ``RetryableWriteError``).
RETRYABLE_WRITE_CODES = frozenset({6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436})


def code_name(code: int) -> str:
    return CODE_NAMES.get(code, f"Location{code}")


class CommandError(Exception):
    """A command failed; rendered as ``{ok: 0, errmsg, code, codeName, errorLabels?}``."""

    def __init__(
        self,
        code: int,
        errmsg: str,
        labels: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(errmsg)
        self.code = code
        self.errmsg = errmsg
        self.labels = list(labels or [])
        self.extra = dict(extra or {})

    def to_reply(self) -> dict[str, Any]:
        reply: dict[str, Any] = {
            "ok": 0.0,
            "errmsg": self.errmsg,
            "code": self.code,
            "codeName": code_name(self.code),
        }
        if self.labels:
            reply["errorLabels"] = self.labels
        reply.update(self.extra)
        return reply


class WriteFailure(Exception):
    """One statement of a write command failed (goes into ``writeErrors``)."""

    def __init__(self, code: int, errmsg: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(errmsg)
        self.code = code
        self.errmsg = errmsg
        self.extra = dict(extra or {})

    def to_write_error(self, index: int) -> dict[str, Any]:
        err: dict[str, Any] = {"index": index, "code": self.code, "errmsg": self.errmsg}
        err.update(self.extra)
        return err
