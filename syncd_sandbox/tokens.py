"""Random tokens (hex, URL-safe) from ``os.urandom``.

The sandbox avoids ``import secrets``: under pytest's default import mode the
``tests/`` directory lands on ``sys.path``, where a test package named
``secrets`` would shadow the standard-library module for anything imported
after it.
"""

from __future__ import annotations

import base64
import os
import random

_system_random = random.SystemRandom()


def token_hex(nbytes: int) -> str:
    return os.urandom(nbytes).hex()


def token_urlsafe(nbytes: int) -> str:
    return base64.urlsafe_b64encode(os.urandom(nbytes)).rstrip(b"=").decode("ascii")


def randbelow(n: int) -> int:
    return _system_random.randrange(n)
