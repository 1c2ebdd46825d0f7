"""Logging: structlog, one JSON object per line when not on a terminal.

Secrets never reach a log line: a processor replaces JWTs, the userinfo of any
URL (``scheme://user:password@host``: MongoDB URIs, a PDS or image URL with
credentials), values of secret-named keys, and every string registered with
:func:`register_secret` -- account passwords as :mod:`syncd.accounts` loads
them, the passwords of the configured URIs (:func:`register_secret_from_uri`) --
wherever they appear in the event, also URL-encoded. The same :func:`redact` is
used for dead-letter reasons and ``status --json``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog

_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
# Any URL's userinfo (everything between "//" and the last "@" before the path).
_URI_CRED_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s@]*(?:@[^/?#\s@]*)*@")
_SECRET_KEYS = frozenset(
    {
        "password",
        "accessjwt",
        "refreshjwt",
        "access_jwt",
        "refresh_jwt",
        "token",
        "authorization",
        "secret",
    }
)
_secrets: set[str] = set()

REDACTED = "[redacted]"


def register_secret(value: str | None) -> None:
    """Never print ``value`` (an account password, ...). Short strings are ignored."""
    if value and len(value) >= 6:
        _secrets.add(value)


def register_secret_from_uri(uri: str) -> None:
    """Never print the password of ``uri`` (decoded or as written)."""
    try:
        parts = urlsplit(uri.replace("mongodb+srv://", "http://").replace("mongodb://", "http://"))
        password = parts.password
    except ValueError:
        return
    if password:
        register_secret(unquote(password))
        register_secret(password)


def redact(text: str) -> str:
    text = _JWT_RE.sub(REDACTED, text)
    text = _URI_CRED_RE.sub(rf"\1{REDACTED}@", text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _scrub(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact(value)
    if depth > 5:
        return value
    if isinstance(value, dict):
        return {
            k: (REDACTED if str(k).lower() in _SECRET_KEYS else _scrub(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v, depth + 1) for v in value)
    return value


def redact_processor(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = REDACTED
        else:
            value = event_dict[key]
            if not isinstance(value, str | dict | list | tuple):
                value = str(value) if key in ("exception", "exc_info") else value
            event_dict[key] = _scrub(value)
    return event_dict


def configure(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    """Set up structlog (and route stdlib logging through the same redaction)."""
    out = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    numeric = getattr(logging, level.upper(), logging.INFO)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # Libraries (pymongo, httpx) log through stdlib: keep them quiet and redacted.
    handler = logging.StreamHandler(out)
    handler.setFormatter(_RedactingFormatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
