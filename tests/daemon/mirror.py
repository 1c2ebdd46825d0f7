"""The daemon tests' mirror check: the world's independent invariant checker.

It decides from the platform's facts (``syncd_sandbox.platform``), never from syncd's
own mappings, what the repositories must hold; a daemon test states only which
collections it looks at.
"""

from __future__ import annotations

from syncd_sandbox.platform import NSIDS
from syncd_sandbox.testing import SandboxWorld

__all__ = ["NSIDS", "assert_mirrored"]


def assert_mirrored(world: SandboxWorld, collections: tuple[str, ...] = tuple(NSIDS)) -> int:
    """Exactly one record per public valid document, in the right repository, with the
    platform's content and thumbnail, named by its back-reference; nothing else."""
    report = world.check_invariant(collections=collections)
    assert report.ok, report.summary()
    return report.records_checked
