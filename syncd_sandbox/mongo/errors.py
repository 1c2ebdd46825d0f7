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
    134: "ReadConcernMajorityNotAvailableYet",
    136: "CappedPositionLost",
    237: "CursorKilled",
    10107: "NotWritablePrimary",
    10334: "BSONObjectTooLarge",
    11000: "DuplicateKey",
    11600: "InterruptedAtShutdown",
    11602: "InterruptedDueToReplStateChange",
    13388: "StaleConfig",
    13435: "NotPrimaryNoSecondaryOk",
    13436: "NotPrimaryOrSecondary",
    40573: "Location40573",
}

# Error categories of the server's own ``src/mongo/base/error_codes.yml`` (codes that a
# 7.0/8.0 mongod can send to a client; ``InternalOnly`` codes are left out). The labels a
# server attaches are derived from them in ``src/mongo/db/error_labels.cpp``; see
# :func:`error_labels` and the table in docs/mongo-sandbox.md.

#: ``RetriableError``.
RETRIABLE_CODES = frozenset(
    {6, 7, 89, 91, 134, 189, 262, 358, 402, 406, 407, 412, 453, 462, 9001, 10107, 11600, 11602}
    | {13435, 13436, 50915, 91331, 10045600}
)
#: ``NetworkError``.
NETWORK_CODES = frozenset({6, 7, 89, 9001})
#: ``NeedRetargettingError`` (StaleEpoch, StaleConfig).
NEED_RETARGETTING_CODES = frozenset({150, 13388})
#: Codes that earn ``ResumableChangeStreamError`` on a change stream's ``aggregate`` or
#: ``getMore``: retriable, network and retargetting errors, RetryChangeStream (234) and
#: FailedToSatisfyReadPreference (133).
RESUMABLE_CHANGE_STREAM_CODES = (
    RETRIABLE_CODES | NETWORK_CODES | NEED_RETARGETTING_CODES | {234, 133}
)
#: ``NonResumableChangeStreamError``: ChangeStreamFatalError, ChangeStreamHistoryLost.
NON_RESUMABLE_CHANGE_STREAM_CODES = frozenset({280, 286})
#: Codes that make a retryable write retryable (label ``RetryableWriteError``).
RETRYABLE_WRITE_CODES = RETRIABLE_CODES


def error_labels(
    *,
    command: str,
    code: int | None,
    wc_code: int | None = None,
    retryable_write: bool = False,
    change_stream: bool = False,
    wrote: bool = False,
) -> list[str]:
    """The labels a 4.4+ server attaches to a failed command (no ``failCommand`` override).

    ``retryable_write``: the command carried a ``txnNumber`` outside a transaction;
    ``change_stream``: the server *knows* the command is a change stream's (an
    ``aggregate`` with ``$changeStream``, or a ``getMore`` whose cursor was checked out:
    a ``failCommand`` on ``getMore`` fires before that, so it earns no change-stream
    label); ``wrote``: the command wrote something before failing.
    """
    labels: list[str] = []
    retryable = False
    if retryable_write and (code in RETRIABLE_CODES or wc_code in RETRIABLE_CODES):
        labels.append("RetryableWriteError")
        retryable = True
        if not wrote:
            labels.append("NoWritesPerformed")
    if (
        not retryable
        and change_stream
        and command in ("aggregate", "getMore")
        and code is not None
        and wc_code is None
        and code in RESUMABLE_CHANGE_STREAM_CODES
    ):
        labels.append("ResumableChangeStreamError")
    elif code in NON_RESUMABLE_CHANGE_STREAM_CODES:
        labels.append("NonResumableChangeStreamError")
    return labels


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
