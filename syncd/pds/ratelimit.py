"""What a PDS's rate-limit headers say about an account's repository-write budget.

The reference PDS limits repository writes per account by points (``5000;w=3600``
and ``35000;w=86400``: create 3, update 2, delete 1) and every request per IP
(``3000;w=300``). Each response carries the headers of whichever applicable limit
has the fewest points left, so once an account's write budget is the tightest
limit, every successful write says how many points remain. A batch costing more
than that is refused whole, and its points are spent anyway: knowing the budget,
the writer sends the part that fits instead (see ``AccountWriter._apply``).

Which limit a header describes is told by its window: the write budgets are
hourly and daily, the per-IP and per-endpoint limits are minutes long.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: Points per write (``ratelimitPoints`` of the PDS's applyWrites).
WRITE_POINTS = {"create": 3, "update": 2, "delete": 1}
#: Points per call of the single-record methods.
CALL_POINTS = {
    "com.atproto.repo.putRecord": 2,
    "com.atproto.repo.deleteRecord": 1,
    "com.atproto.repo.createRecord": 3,
}
#: A limit with a window at least this long is a repository-write budget.
MIN_BUDGET_WINDOW_SECONDS = 3600


@dataclass(frozen=True)
class WriteBudget:
    """Points an account may still spend on repository writes until ``reset_at``."""

    remaining: int
    reset_at: float  # Unix seconds

    def current(self, now: float | None = None) -> bool:
        """True until the window resets (after that the budget is full again)."""
        return (time.time() if now is None else now) < self.reset_at


def _policy_window(policy: str) -> int | None:
    """``"5000;w=3600"`` -> 3600."""
    for part in policy.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name == "w":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def write_budget(headers: Mapping[str, str]) -> WriteBudget | None:
    """The write budget these response headers describe, or None when they describe
    another limit (or none: rate limits off)."""
    policy = headers.get("ratelimit-policy")
    window = _policy_window(policy) if policy else None
    if window is None or window < MIN_BUDGET_WINDOW_SECONDS:
        return None
    try:
        remaining = int(headers.get("ratelimit-remaining", ""))
        reset_at = float(headers.get("ratelimit-reset", ""))
    except ValueError:
        return None
    return WriteBudget(remaining=max(0, remaining), reset_at=reset_at)


def call_points(method: str, body: Mapping[str, object]) -> int:
    """Points a repository write call costs (``applyWrites``: per write, by ``$type``)."""
    if method in CALL_POINTS:
        return CALL_POINTS[method]
    writes = body.get("writes")
    if not isinstance(writes, list):
        return 0
    total = 0
    for w in writes:
        kind = str(w.get("$type", "")).rpartition("#")[2] if isinstance(w, dict) else ""
        total += WRITE_POINTS.get(kind, WRITE_POINTS["create"])
    return total


def after_call(
    known: WriteBudget | None, headers: Mapping[str, str], points: int
) -> WriteBudget | None:
    """The budget after a successful call that cost ``points``: what its headers say,
    or, when they describe another limit (the per-IP one is the tightest when many
    accounts share an IP), the last known budget less this call's points. The
    estimate is exact while this process is the account's only writer; when others
    write too it is optimistic, and the 429 they cause is handled as before."""
    budget = write_budget(headers)
    if budget is not None:
        return budget
    if known is None or not known.current():
        return None
    return WriteBudget(remaining=max(0, known.remaining - points), reset_at=known.reset_at)


def writes_that_fit(points: int, kinds: Iterable[str]) -> int:
    """How many of the writes (``"create"``, ``"update"``, ``"delete"``, in order) the
    ``points`` pay for."""
    n = 0
    for kind in kinds:
        points -= WRITE_POINTS.get(kind, WRITE_POINTS["create"])
        if points < 0:
            break
        n += 1
    return n
