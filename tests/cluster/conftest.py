"""Fixtures for the cluster suite: several syncd processes on one world."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from syncd_sandbox.cluster import ClusterRig
from syncd_sandbox.testing import SandboxWorld

ClusterFactory = Callable[..., ClusterRig]


@pytest.fixture
def make_cluster(world: SandboxWorld) -> Iterator[ClusterFactory]:
    rigs: list[ClusterRig] = []

    def factory(instances: int, **kwargs: object) -> ClusterRig:
        rig = ClusterRig(world, instances, **kwargs)  # type: ignore[arg-type]
        rigs.append(rig)
        return rig

    yield factory
    for rig in rigs:
        rig.close()
