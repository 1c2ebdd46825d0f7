"""Accounts syncd no longer writes for: removed from ``users``, or refused by the PDS.

An account is *gone* when its ``users`` entry loses ``atproto`` (or the user is
deleted), when the user is given a new DID (the old one is gone), or when the
PDS answers that the account does not exist, is deactivated or taken down. A
gone account is not an error: its documents are skips (``account_gone``), no
writer works for it, nothing is retried, and its ledger rows are kept --
flagged by the marker -- so neither the daemon (a record moving to a new
repository) nor ``syncd reconcile`` tries to write into a repository that is
not there. ``syncd status`` shows one line per gone account, and
``syncd_accounts_gone{reason}`` counts them.

It comes back when ``users`` names the DID again (or, for a refusal, when the
PDS says the repository is active again): the marker is cleared and the
user's documents are published by an account backfill.

This registry is the marker, in memory (read on every routed change) and in the
state store (durable, loaded when the engine is built).
"""

from __future__ import annotations

import time

from syncd import metrics
from syncd.state import GoneAccount
from syncd.state.aio import StateCalls

#: Why an account is gone (the kinds; refusals also name the PDS error).
REMOVED = "removed_from_users"
REPLACED = "replaced_by_new_did"
REFUSED = "refused"


def reason_kind(reason: str) -> str:
    """A bounded label: ``removed_from_users``, ``replaced_by_new_did`` or ``refused``."""
    return reason.split(":", 1)[0]


class GoneAccounts:
    def __init__(self, calls: StateCalls) -> None:
        self._calls = calls
        self._gone: dict[str, GoneAccount] = {g.did: g for g in calls.store.gone_accounts()}
        self._count()

    def reason(self, did: str) -> str | None:
        g = self._gone.get(did)
        return None if g is None else g.reason

    def __contains__(self, did: object) -> bool:
        return did in self._gone

    def get(self, did: str) -> GoneAccount | None:
        return self._gone.get(did)

    def all(self) -> list[GoneAccount]:
        return [self._gone[d] for d in sorted(self._gone)]

    async def mark(self, did: str, sub: str | None, handle: str, reason: str) -> bool:
        """Mark ``did`` gone (durably); True when it was not gone before."""
        store = self._calls.store
        await self._calls(store.mark_gone, did, sub, handle, reason)
        before = self._gone.get(did)
        self._gone[did] = GoneAccount(
            did,
            sub if sub is not None else (before.sub if before else None),
            handle or (before.handle if before else ""),
            reason,
            before.since if before else time.time(),
        )
        self._count()
        return before is None

    async def clear(self, did: str) -> bool:
        """``did`` is back; True when it was gone."""
        if did not in self._gone:
            return False
        await self._calls(self._calls.store.clear_gone, did)
        self._gone.pop(did, None)
        self._count()
        return True

    def _count(self) -> None:
        counts: dict[str, int] = dict.fromkeys((REMOVED, REPLACED, REFUSED), 0)
        for g in self._gone.values():
            kind = reason_kind(g.reason)
            counts[kind] = counts.get(kind, 0) + 1
        for kind, n in counts.items():
            metrics.ACCOUNTS_GONE.labels(reason=kind).set(n)
