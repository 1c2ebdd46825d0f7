"""Fault injection for the MongoDB sandbox (dev/test only).

Two ways in, both over the wire so any pymongo client can use them:

* ``configureFailPoint: "failCommand"`` or ``"failGetMoreAfterCursorCheckout"`` on
  ``admin`` -- the same test commands a real ``mongod --setParameter
  enableTestCommands=1`` accepts, so one conformance test can drive both;
* ``{sandboxFault: <kind>, ...}`` on ``admin`` with kinds ``dropConnections``,
  ``failGetMore`` (``n``, ``code``), ``notWritablePrimary`` (``n``), ``truncateOplog``
  (``keep``), ``pause`` (``seconds``) and ``status``.

:func:`send_fault` sends the latter from plain Python (used by ``syncd-sandbox fault``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import CommandError

FAULT_KINDS = (
    "dropConnections",
    "failGetMore",
    "notWritablePrimary",
    "truncateOplog",
    "pause",
    "status",
)

#: Commands a ``failCommand`` fail point never applies to (as in mongod).
_NEVER_FAIL = frozenset({"configurefailpoint", "sandboxfault"})


@dataclass
class FailCommand:
    """State of the ``failCommand`` fail point."""

    mode: str = "off"  # off | alwaysOn | times | skip
    remaining: int = 0
    skip: int = 0
    commands: frozenset[str] = frozenset()
    data: dict[str, Any] = field(default_factory=dict)
    app_name: str | None = None
    times_entered: int = 0

    def configure(self, mode: Any, data: dict[str, Any], commands: list[str] | None = None) -> None:
        if mode == "off":
            self.mode, self.remaining, self.skip = "off", 0, 0
        elif mode == "alwaysOn":
            self.mode = "alwaysOn"
        elif isinstance(mode, dict) and "times" in mode:
            self.mode, self.remaining = "times", int(mode["times"])
            if self.remaining <= 0:
                self.mode = "off"
        elif isinstance(mode, dict) and "skip" in mode:
            self.mode, self.skip = "skip", int(mode["skip"])
        else:
            raise CommandError(2, f"unsupported failpoint mode {mode!r}")
        cmds = data.get("failCommands", []) if commands is None else commands
        if not isinstance(cmds, list):
            raise CommandError(2, "failCommands must be an array")
        self.commands = frozenset(str(c).lower() for c in cmds)
        self.data = dict(data)
        self.app_name = data.get("appName")

    def take(self, command_name: str, app_name: str | None) -> dict[str, Any] | None:
        """If the fail point fires for this command, consume it and return its data."""
        if self.mode == "off":
            return None
        name = command_name.lower()
        if name in _NEVER_FAIL or name not in self.commands:
            return None
        if self.app_name is not None and self.app_name != app_name:
            return None
        if self.mode == "skip":
            if self.skip > 0:
                self.skip -= 1
                return None
        elif self.mode == "times":
            self.remaining -= 1
            if self.remaining <= 0:
                self.mode = "off"
        self.times_entered += 1
        return self.data


@dataclass
class FaultState:
    """Everything a test has armed on one sandbox."""

    fail_command: FailCommand = field(default_factory=FailCommand)
    #: ``failGetMoreAfterCursorCheckout``: fails a ``getMore`` once its cursor is checked
    #: out (so the server knows a change stream's cursor and labels the error as such).
    fail_get_more: FailCommand = field(default_factory=FailCommand)
    fail_getmore: int = 0
    fail_getmore_code: int = 6
    not_writable_primary: int = 0
    paused_until: float = 0.0


def send_fault(uri: str, kind: str, **params: Any) -> dict[str, Any]:
    """Trigger a sandbox fault over the wire and return the server's reply.

    ``kind`` is one of :data:`FAULT_KINDS`; ``params`` are the kind's fields
    (``n``, ``code``, ``keep``, ``seconds``). Example::

        send_fault(uri, "failGetMore", n=2)
        send_fault(uri, "truncateOplog", keep=0)

    Raises ``pymongo.errors.OperationFailure`` if the server refuses the request.
    """
    from pymongo import MongoClient

    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
    client: MongoClient[dict[str, Any]] = MongoClient(
        uri, directConnection=True, serverSelectionTimeoutMS=10_000, retryWrites=False
    )
    try:
        cmd: dict[str, Any] = {"sandboxFault": kind}
        cmd.update(params)
        reply = client.admin.command(cmd)
        return dict(reply)
    finally:
        client.close()
