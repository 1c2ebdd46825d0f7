"""A test rig: a sandbox world, the fault proxy in front of its PDS, syncd as a child process.

The rig rewrites the world's ``syncd.toml`` so ``pds.url`` points at the proxy
and the timeouts are short enough for chaos tests; the invariant checker reads
MongoDB and the *real* PDS directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pymongo import MongoClient
from pymongo.database import Database

from syncd_sandbox import tally
from syncd_sandbox.faultproxy import FaultProxy
from syncd_sandbox.invariant import InvariantReport, check_invariant, wait_until_quiet
from syncd_sandbox.metrics import metrics_caught_up
from syncd_sandbox.syncd_process import SyncdProcess
from syncd_sandbox.testing import SandboxWorld

CHAOS_OVERRIDES: dict[str, dict[str, Any]] = {
    "pds": {"timeout_seconds": 3.0, "retry_max_seconds": 2.0},
    "pipeline": {"shutdown_grace_seconds": 3.0},
    "images": {"timeout_seconds": 3.0, "retries": 2},
}


class Rig:
    def __init__(
        self,
        world: SandboxWorld,
        *,
        proxy: bool = True,
        seed: int = 0,
        log_level: str = "info",
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.world = world
        self.proxy: FaultProxy | None = (
            FaultProxy(world.pds.url, seed=seed).start() if proxy else None
        )
        sections: dict[str, dict[str, Any]] = {k: dict(v) for k, v in CHAOS_OVERRIDES.items()}
        if self.proxy is not None:
            sections["pds"]["url"] = self.proxy.url
        sections.setdefault("logging", {})["level"] = log_level
        for name, table in (overrides or {}).items():
            sections.setdefault(name, {}).update(table)
        self.config = world.write_config(sections)
        self.syncd = SyncdProcess(world.config_path, world.tmp / "syncd.log")
        self.exempt_dids: set[str] = set()
        self.extra_dids: set[str] = set()
        self._load_client: MongoClient[Any] | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.world.metrics_port}/metrics"

    def load_db(self) -> Database[Any]:
        """A separate client with short timeouts, for a load generator that must not hang."""
        if self._load_client is None:
            self._load_client = MongoClient(
                self.world.mongo_uri,
                tz_aware=True,
                serverSelectionTimeoutMS=1500,
                connectTimeoutMS=1500,
                socketTimeoutMS=5000,
            )
        return self._load_client[self.world.database]

    def check(self, **kwargs: Any) -> InvariantReport:
        return check_invariant(
            self.world.db,
            self.world.pds.url,
            config=self.config,
            exempt_dids=self.exempt_dids | set(kwargs.pop("exempt_dids", ())),
            extra_dids=self.extra_dids | set(kwargs.pop("extra_dids", ())),
            **kwargs,
        )

    def caught_up(self) -> bool:
        return metrics_caught_up(self.metrics_url)

    def wait_quiet(self, timeout: float = 60.0, *, use_metrics: bool = True) -> InvariantReport:
        """Until syncd is caught up and the invariant holds; counted in the tally."""
        try:
            report = wait_until_quiet(
                self.check,
                timeout=timeout,
                caught_up=self.caught_up if use_metrics and self.syncd.running else None,
            )
        except AssertionError as exc:
            last = getattr(exc, "report", None)
            if last is not None:
                tally.record_report(last)
            raise AssertionError(f"{exc}\n--- syncd log tail ---\n{self.syncd.tail(60)}") from None
        tally.record_report(report)
        return report

    def owners(self, names: Iterable[str | None]) -> list[str | None]:
        return [None if n is None else self.world.account(n).sub for n in names]

    def close(self) -> None:
        try:
            if self.syncd.running:
                self.syncd.kill()
        finally:
            if self.proxy is not None:
                self.proxy.stop()
            if self._load_client is not None:
                self._load_client.close()
