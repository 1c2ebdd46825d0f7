"""The real PDS with its rate limits on: the batch that would overdraw an account's
hourly write budget is cut to the part the remaining points pay for, so the whole
budget becomes records (a refused batch would spend its points and write nothing), and
once the points left pay for nothing the account is parked until the reset without
another call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from syncd_sandbox.seed import make_mood
from syncd_sandbox.syncd_process import SyncdProcess, metric_sum
from syncd_sandbox.testing import SandboxWorld

from .mirror import NSIDS

BUDGET_POINTS = 5000  # repo-write-hour of the reference PDS
CREATE_POINTS = 3


def test_last_batch_is_sized_to_the_write_budget(rate_limited_world: SandboxWorld) -> None:
    w = rate_limited_world
    start = datetime(2024, 5, 1, tzinfo=UTC)
    n = 1700  # more than the hour's budget pays for: 5000 // 3 = 1666 creates
    w.insert(
        "moods",
        *(make_mood(w.sub("alice"), f"mood {i}", start + timedelta(seconds=i)) for i in range(n)),
    )
    w.write_config({"mongo": {"max_await_ms": 100}})
    with SyncdProcess(w.config_path, log_path=w.tmp / "syncd.log") as proc:
        # Past the budget the rest waits for the reset, an hour away: the account is
        # parked without another call (a refused one would spend its points too).
        proc.wait_until(lambda: proc.events("account_parked"), 90)
        records = w.list_records("alice", NSIDS["moods"])
        sized = proc.events("batch_sized_to_write_budget")
        parked = proc.events("account_parked")[0]
        dead = metric_sum(proc.metrics(), "syncd_dead_letters")
        refused = metric_sum(proc.metrics(), "syncd_rate_limited_total")
        # Everything not written waits by key.
        proc.wait_until(
            lambda: metric_sum(proc.metrics(), "syncd_parked_documents") == n - len(records), 30
        )
    assert len(records) == BUDGET_POINTS // CREATE_POINTS, len(records)
    assert len({r["value"]["ref"] for r in records}) == len(records)  # no duplicates
    assert sized, "no batch was sized to the budget"
    assert sized[0]["points_left"] < sized[0]["writes"] * CREATE_POINTS
    assert sized[0]["sending"] == sized[0]["points_left"] // CREATE_POINTS
    assert dead == 0  # waiting for the reset, not failing
    assert refused == 0  # no call was sent only to be refused
    assert parked["reason"] == "rate_limited" and parked["seconds"] > 3000
