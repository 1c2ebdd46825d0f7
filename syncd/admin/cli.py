"""Registers the admin subcommands on the ``syncd`` parser."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def add_admin_commands(sub: Any, add_config: Callable[[argparse.ArgumentParser], None]) -> None:
    """Admin commands are added here as they land (reconcile, wipe, restore, dead-letters)."""
    return None
