"""Configuration of the painting image path (the ``[images]`` TOML table).

Every check here raises ``ValueError("images.<key>: ...")``: one line naming the
key, which ``syncd.config`` turns into a :class:`~syncd.config.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

DEFAULT_URL_TEMPLATE = "https://{bucket}.sfo3.digitaloceanspaces.com/{key}"
DEFAULT_USER_BUCKET = "user-aesthetic-computer"
DEFAULT_GUEST_BUCKET = "art-aesthetic-computer"
DEFAULT_ALLOWED_HOSTS: tuple[str, ...] = (
    f"{DEFAULT_USER_BUCKET}.sfo3.digitaloceanspaces.com",
    f"{DEFAULT_GUEST_BUCKET}.sfo3.digitaloceanspaces.com",
)
#: Where a user's painting may be, in the order tried (platform-facts §1): where
#: uploads go today, then where the oldest objects sit. ``.png`` / ``.zip`` is added.
DEFAULT_USER_KEYS: tuple[str, ...] = ("{user}/painting/{name}", "{user}/{name}")
#: A guest's painting: the slug's image part (``image:recording`` -> ``image``).
DEFAULT_GUEST_KEYS: tuple[str, ...] = ("{name}",)
#: The painting lexicon's ``thumbnail`` maxSize (the published lexicon).
LEXICON_THUMBNAIL_MAX_BYTES = 1_048_576
#: At most this many candidate keys: each missing painting costs one GET per key.
MAX_KEY_CANDIDATES = 4

_URL_FIELDS = frozenset({"bucket", "key"})
_USER_KEY_FIELDS = frozenset({"user", "name"})
_GUEST_KEY_FIELDS = frozenset({"name"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _fields(name: str, template: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"images.{name}: malformed template {template!r}: {exc}") from None
    out: list[str] = []
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if spec or conversion:
            raise ValueError(f"images.{name}: no format specs or conversions in {template!r}")
        out.append(field)
    return out


def _check_url_template(name: str, template: str) -> None:
    fields = set(_fields(name, template))
    if "key" not in fields:
        raise ValueError(f"images.{name}: template must contain {{key}}: {template!r}")
    unknown = fields - _URL_FIELDS
    if unknown:
        raise ValueError(
            f"images.{name}: unknown placeholders {sorted(unknown)}; only {{bucket}} and {{key}}"
        )
    if not template.startswith(("http://", "https://")):
        raise ValueError(f"images.{name}: template must be an http(s) URL: {template!r}")


def _check_key_templates(name: str, templates: object, allowed: frozenset[str]) -> None:
    """Key templates: non-empty list, each with exactly the placeholders ``allowed``
    (once each), relative, and made of characters that need no escaping."""
    if isinstance(templates, str) or not isinstance(templates, tuple | list) or not templates:
        raise ValueError(f"images.{name}: expected a non-empty list of key templates")
    if len(templates) > MAX_KEY_CANDIDATES:
        raise ValueError(f"images.{name}: at most {MAX_KEY_CANDIDATES} candidates")
    if len(set(templates)) != len(templates):
        raise ValueError(f"images.{name}: the same template is listed twice")
    for template in templates:
        if not isinstance(template, str) or not template:
            raise ValueError(f"images.{name}: every entry must be a non-empty string")
        found = _fields(name, template)
        if sorted(found) != sorted(allowed):
            wanted = " and ".join(f"{{{f}}}" for f in sorted(allowed))
            raise ValueError(
                f"images.{name}: {template!r} must contain {wanted} exactly once each "
                "(and no other placeholder)"
            )
        literal = "".join(text for text, *_ in string.Formatter().parse(template))
        bad = [c for c in literal if not (c.isascii() and (c.isalnum() or c in "-_./"))]
        if bad or template.startswith("/") or "//" in template or ".." in template:
            raise ValueError(
                f"images.{name}: {template!r} must be a relative key of letters, digits, "
                "'-', '_', '.' and single '/'"
            )
        if template.endswith((".png", ".zip")):
            raise ValueError(
                f"images.{name}: {template!r}: leave out the extension (.png and .zip are added)"
            )


def parse_origin(entry: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` an ``allowed_hosts`` entry allows; ``ValueError`` if bad.

    ``host`` means https on port 443 only; ``http://host:port`` or
    ``https://host[:port]`` allows exactly that origin. Host names are compared
    lower-case, without a trailing dot.
    """
    text = entry.strip()
    if not text:
        raise ValueError("empty entry")
    bare = "://" not in text
    try:
        parts = urlsplit(f"https://{text}" if bare else text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{entry!r}: {exc}") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"{entry!r}: only http:// and https:// origins")
    if not host:
        raise ValueError(f"{entry!r}: no host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError(f"{entry!r}: no user information")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{entry!r}: an origin has no path, query or fragment")
    if bare and port is not None:
        raise ValueError(
            f"{entry!r}: a bare host means https on port 443; write "
            f"'https://{text}' or 'http://{text}' for another port"
        )
    return scheme, host, port if port is not None else _DEFAULT_PORTS[scheme]


@functools.lru_cache(maxsize=64)
def origins(entries: tuple[str, ...]) -> frozenset[tuple[str, str, int]]:
    """The ``(scheme, host, port)`` triples a tuple of ``allowed_hosts`` entries allows."""
    return frozenset(parse_origin(entry) for entry in entries)


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"images.{name}: must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class ImageSettings:
    """Where painting images live, and the limits applied when fetching and shrinking them.

    ``allowed_hosts`` are origins: a bare ``host`` allows ``https://host`` on port
    443 only; ``http://host:port`` / ``https://host:port`` allow exactly that
    origin. Every URL built or followed must match one of them.
    """

    url_template: str = DEFAULT_URL_TEMPLATE
    recording_template: str = DEFAULT_URL_TEMPLATE
    user_keys: tuple[str, ...] = DEFAULT_USER_KEYS
    guest_keys: tuple[str, ...] = DEFAULT_GUEST_KEYS
    allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    user_bucket: str = DEFAULT_USER_BUCKET
    guest_bucket: str = DEFAULT_GUEST_BUCKET
    max_bytes: int = 25 * 1024 * 1024
    timeout_seconds: float = 10.0
    retries: int = 4
    # The thumbnail (platform-facts §2: always side x side, PNG unless over max bytes).
    thumbnail_max_bytes: int = LEXICON_THUMBNAIL_MAX_BYTES
    # Thumbnail worker processes: how many (0 = one per CPU) and each one's box.
    workers: int = 0
    worker_memory_mb: int = 512
    worker_cpu_seconds: float = 5.0
    # Structural limits, checked on the container before anything is decoded.
    max_pixels: int = 40_000_000
    max_chunks: int = 10_000
    max_frames: int = 5_000
    gif_max_blocks: int = 250_000
    jpeg_max_markers: int = 1_000
    jpeg_max_scans: int = 100

    def __post_init__(self) -> None:
        _check_url_template("url_template", self.url_template)
        _check_url_template("recording_template", self.recording_template)
        for name, allowed in (("user_keys", _USER_KEY_FIELDS), ("guest_keys", _GUEST_KEY_FIELDS)):
            value = getattr(self, name)
            _check_key_templates(name, value, allowed)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.allowed_hosts, str) or not all(
            isinstance(h, str) and h for h in self.allowed_hosts
        ):
            raise ValueError("images.allowed_hosts: must be a list of hosts or origins")
        for entry in self.allowed_hosts:
            try:
                parse_origin(entry)
            except ValueError as exc:
                raise ValueError(f"images.allowed_hosts: {exc}") from None
        if not isinstance(self.allowed_hosts, tuple):
            object.__setattr__(self, "allowed_hosts", tuple(self.allowed_hosts))
        for name in (
            "max_bytes",
            "max_pixels",
            "thumbnail_max_bytes",
            "worker_memory_mb",
            "max_chunks",
            "max_frames",
            "gif_max_blocks",
            "jpeg_max_markers",
            "jpeg_max_scans",
        ):
            _positive_int(name, getattr(self, name))
        if self.worker_memory_mb < 128:
            raise ValueError(
                "images.worker_memory_mb: at least 128 (a worker alone maps ~50 MB), "
                f"got {self.worker_memory_mb}"
            )
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"images.retries: must be >= 0, got {self.retries!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"images.workers: must be >= 0 (0 = CPU count), got {self.workers!r}")
        for name in ("timeout_seconds", "worker_cpu_seconds"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(f"images.{name}: must be > 0, got {value!r}")

    @property
    def effective_workers(self) -> int:
        """``workers``, with 0 meaning one per CPU."""
        return self.workers or (os.cpu_count() or 1)

    @property
    def allowed_origins(self) -> frozenset[tuple[str, str, int]]:
        """``allowed_hosts`` as ``(scheme, host, port)`` triples."""
        return origins(self.allowed_hosts)

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> ImageSettings:
        """Build from a parsed ``[images]`` TOML table; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(table) - known
        if unknown:
            raise ValueError(f"[images]: unknown keys {sorted(unknown)}")
        values = dict(table)
        for name in ("allowed_hosts", "user_keys", "guest_keys"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        return cls(**values)
