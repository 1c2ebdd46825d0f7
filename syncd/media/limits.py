"""How large a blob the PDS takes, and how many bytes syncd uploads at once.

**The PDS's upload limit** (its ``PDS_BLOB_UPLOAD_LIMIT``; 5 MiB by default in the
reference PDS) is not advertised: ``describeServer`` does not say it, and the 413 a
PDS answers over it says "request entity too large" without the number. So it is
known from the config (``pds.blob_upload_limit``) or learned from the PDS's answers:
the smallest size it refused with 413 bounds it from above, the largest it took from
below. A blob over the known limit is refused before it is downloaded, with a dead
letter that names the limit (or the range the answers pin it to).
"""

from __future__ import annotations

import asyncio
from collections import deque

from syncd import metrics


def _n(size: int) -> str:
    return f"{size:,}"


class UploadLimit:
    """The PDS's upload limit: from the config (``configured``), else learned."""

    def __init__(self, configured: int = 0) -> None:
        self.configured = configured if configured > 0 else None
        self.refused_at: int | None = None  # the smallest size answered 413
        self.accepted = 0  # the largest size the PDS took

    def refused(self, size: int) -> None:
        """The PDS answered 413 to ``size`` bytes."""
        if self.refused_at is None or size < self.refused_at:
            self.refused_at = size

    def took(self, size: int) -> None:
        self.accepted = max(self.accepted, size)

    @property
    def bound(self) -> int | None:
        """The largest size that may pass (None: not known)."""
        if self.configured is not None:
            if self.refused_at is not None and self.refused_at <= self.configured:
                return self.refused_at - 1  # the PDS says less than the config does
            return self.configured
        return None if self.refused_at is None else self.refused_at - 1

    def describe(self) -> str:
        """The PDS's limit as precisely as it is known."""
        if self.configured is not None and (
            self.refused_at is None or self.refused_at > self.configured
        ):
            return (
                f"the PDS's upload limit of {_n(self.configured)} bytes "
                "(pds.blob_upload_limit, its PDS_BLOB_UPLOAD_LIMIT)"
            )
        if self.refused_at is None:
            return "the PDS's upload limit (PDS_BLOB_UPLOAD_LIMIT; not known yet)"
        low = f"at least {_n(self.accepted)} and " if self.accepted else ""
        return (
            f"the PDS's upload limit (PDS_BLOB_UPLOAD_LIMIT), {low}below "
            f"{_n(self.refused_at)} bytes: it answered 413 Payload Too Large to "
            f"{_n(self.refused_at)} bytes"
        )

    def effective(self, lexicon_max: int) -> tuple[int, str]:
        """The largest blob worth fetching, and what that limit is (for a dead letter)."""
        lexicon = f"the lexicon's maxSize of {_n(lexicon_max)} bytes"
        bound = self.bound
        if bound is not None and bound < lexicon_max:
            return bound, self.describe()
        return lexicon_max, lexicon

    def refusal(self, size: int, lexicon_max: int) -> str:
        """A dead letter's detail for a ``size``-byte blob the PDS refused with 413."""
        advice = (
            f"raise the PDS's PDS_BLOB_UPLOAD_LIMIT (tapes need up to {_n(lexicon_max)} "
            "bytes), set pds.blob_upload_limit to it, then `syncd dead-letters retry`"
        )
        return f"{_n(size)} bytes is over {self.describe()}; {advice}"


class ByteBudget:
    """At most ``capacity`` bytes held at once, granted in arrival order; a request
    larger than the capacity is granted alone (once nothing else is held), so one big
    blob is never refused, only serialised."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.held = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _fits(self, n: int) -> bool:
        return self.held == 0 or self.held + n <= self.capacity

    async def acquire(self, n: int) -> None:
        if not self._waiters and self._fits(n):
            self._grant(n)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, fut)
        self._waiters.append(entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(n)  # granted as it was cancelled: give it back
            else:
                self._waiters.remove(entry)
                self._wake()
            raise

    def release(self, n: int) -> None:
        self.held -= n
        metrics.BLOB_BYTES_IN_FLIGHT.set(self.held)
        self._wake()

    def _grant(self, n: int) -> None:
        self.held += n
        metrics.BLOB_BYTES_IN_FLIGHT.set(self.held)

    def _wake(self) -> None:
        while self._waiters and self._fits(self._waiters[0][0]):
            n, fut = self._waiters.popleft()
            if fut.done():
                continue
            self._grant(n)
            fut.set_result(None)
