"""Shared fixtures: the sandbox world (see docs/sandbox.md and syncd_sandbox/testing.py)."""

from syncd_sandbox.testing import (  # noqa: F401  (pytest finds fixtures and hooks by name)
    make_world,
    pytest_configure,
    rate_limited_pds,
    rate_limited_pds_process,
    rate_limited_world,
    sandbox_mongo,
    sandbox_mongo_client,
    sandbox_pds,
    sandbox_pds_process,
    world,
)
