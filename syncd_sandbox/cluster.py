"""A cluster rig: several ``syncd run`` processes sharing one world and MongoDB state.

Each instance gets its own config file (``state.backend = "mongodb"``, the same
``cluster_name``, its own ``instance_id`` and metrics port) and its own fault
proxy in front of the PDS, so a test can count exactly which PDS writes came
from which instance (e.g. none from a former leader after it was resumed).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from syncd.config import Config, load
from syncd_sandbox.faultproxy import FaultProxy
from syncd_sandbox.invariant import InvariantReport, check_invariant, wait_until_quiet
from syncd_sandbox.metrics import caught_up, scrape
from syncd_sandbox.procs import free_port
from syncd_sandbox.rig import CHAOS_OVERRIDES
from syncd_sandbox.syncd_config import merge_sections, sandbox_sections, write_config
from syncd_sandbox.syncd_process import SyncdProcess
from syncd_sandbox.testing import SandboxWorld

PDS_WRITES = (
    "com.atproto.repo.applyWrites",
    "com.atproto.repo.putRecord",
    "com.atproto.repo.deleteRecord",
    "com.atproto.repo.createRecord",
    "com.atproto.repo.uploadBlob",
)


class Instance:
    """One cluster member: its config, its proxy, its process."""

    def __init__(self, index: int, config_path: Path, log_path: Path, proxy: FaultProxy) -> None:
        self.index = index
        self.config_path = config_path
        self.proxy = proxy
        self.metrics_port = 0
        self.syncd = SyncdProcess(config_path, log_path)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def metrics(self) -> dict[str, float] | None:
        return scrape(self.metrics_url) if self.syncd.running else None

    def is_leader(self) -> bool:
        m = self.metrics()
        return m is not None and m.get("syncd_leader") == 1.0

    def pds_writes(self) -> int:
        return sum(self.proxy.requests[m] for m in PDS_WRITES)


class ClusterRig:
    def __init__(
        self,
        world: SandboxWorld,
        instances: int,
        *,
        partitions: int = 1,
        lease_seconds: float = 2.0,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.world = world
        self.partitions = partitions
        self.lease_seconds = lease_seconds
        self.members: list[Instance] = []
        base = sandbox_sections(
            mongo_uri=world.mongo_uri,
            database=world.database,
            pds_url=world.pds.url,
            state_dir=world.state_dir,
            image_base_url=world.image_base_url,
            metrics_port=0,
        )
        cluster: dict[str, dict[str, Any]] = {
            "state": {"backend": "mongodb", "mongodb_database": f"{world.database}_state"},
            "cluster": {
                "cluster_name": "test",
                "partitions": partitions,
                "lease_seconds": lease_seconds,
            },
        }
        sections = merge_sections(merge_sections(base, CHAOS_OVERRIDES), cluster)
        sections = merge_sections(sections, overrides)
        for i in range(instances):
            proxy = FaultProxy(world.pds.url, seed=i).start()
            port = free_port()
            own = merge_sections(
                sections,
                {
                    "pds": {"url": proxy.url},
                    "metrics": {"listen": f"127.0.0.1:{port}"},
                    "cluster": {"instance_id": f"i{i}"},
                },
            )
            path = world.tmp / f"syncd-{i}.toml"
            write_config(path, own)
            member = Instance(i, path, world.tmp / f"syncd-{i}.log", proxy)
            member.metrics_port = port
            self.members.append(member)
        self.config: Config = load(self.members[0].config_path, environ={})

    # -- processes --------------------------------------------------------------
    def start(self, *which: int) -> None:
        for i in which or range(len(self.members)):
            self.members[i].syncd.start()

    def leaders(self, exclude: Instance | None = None) -> list[Instance]:
        return [m for m in self.members if m is not exclude and m.is_leader()]

    def wait_leaders(
        self, count: int | None = None, *, timeout: float = 30.0, exclude: Instance | None = None
    ) -> list[Instance]:
        """Until ``count`` (default: partitions) running instances report ``syncd_leader`` 1."""
        want = self.partitions if count is None else count
        deadline = time.monotonic() + timeout
        while True:
            leaders = self.leaders(exclude)
            if len(leaders) >= want:
                return leaders
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- i{m.index} ---\n{m.syncd.tail(15)}" for m in self.members)
                raise AssertionError(
                    f"{len(leaders)} leader(s) after {timeout}s, want {want}\n{logs}"
                )
            time.sleep(0.1)

    # -- checking ---------------------------------------------------------------
    def check(self) -> InvariantReport:
        return check_invariant(self.world.db, self.world.pds.url, config=self.config)

    def caught_up(self) -> bool:
        leaders = 0
        for m in self.members:
            metrics = m.metrics()
            if metrics is None or metrics.get("syncd_leader") != 1.0:
                continue
            leaders += 1
            if not caught_up(metrics):
                return False
        return leaders == self.partitions

    def wait_quiet(self, timeout: float = 90.0) -> InvariantReport:
        try:
            return wait_until_quiet(self.check, timeout=timeout, caught_up=self.caught_up)
        except AssertionError as exc:
            logs = "\n".join(f"--- i{m.index} ---\n{m.syncd.tail(25)}" for m in self.members)
            raise AssertionError(f"{exc}\n{logs}") from None

    def close(self) -> None:
        for m in self.members:
            try:
                m.syncd.kill()
            finally:
                m.proxy.stop()
