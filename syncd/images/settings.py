"""Configuration of the painting image path (the ``[images]`` TOML table)."""

from __future__ import annotations

import dataclasses
import os
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_URL_TEMPLATE = "https://{bucket}.sfo3.digitaloceanspaces.com/{key}"
DEFAULT_USER_BUCKET = "user-aesthetic-computer"
DEFAULT_GUEST_BUCKET = "art-aesthetic-computer"
DEFAULT_ALLOWED_HOSTS: tuple[str, ...] = (
    f"{DEFAULT_USER_BUCKET}.sfo3.digitaloceanspaces.com",
    f"{DEFAULT_GUEST_BUCKET}.sfo3.digitaloceanspaces.com",
)

_TEMPLATE_FIELDS = frozenset({"bucket", "key"})


def _check_template(name: str, template: str) -> None:
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"images.{name}: malformed template {template!r}: {exc}") from None
    if "key" not in fields:
        raise ValueError(f"images.{name}: template must contain {{key}}: {template!r}")
    unknown = fields - _TEMPLATE_FIELDS
    if unknown:
        raise ValueError(
            f"images.{name}: unknown placeholders {sorted(unknown)}; only {{bucket}} and {{key}}"
        )
    if not template.startswith(("http://", "https://")):
        raise ValueError(f"images.{name}: template must be an http(s) URL: {template!r}")


@dataclass(frozen=True)
class ImageSettings:
    """Where painting images live and the limits applied when fetching and shrinking them.

    ``allowed_hosts`` are bare hostnames (a ``:port`` suffix is accepted and
    ignored); every URL built or followed must resolve to one of them.
    """

    url_template: str = DEFAULT_URL_TEMPLATE
    recording_template: str = DEFAULT_URL_TEMPLATE
    allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    user_bucket: str = DEFAULT_USER_BUCKET
    guest_bucket: str = DEFAULT_GUEST_BUCKET
    max_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 40_000_000
    timeout_seconds: float = 10.0
    retries: int = 4
    workers: int = 0
    thumbnail_max_bytes: int = 102_400
    thumbnail_max_side: int = 512

    def __post_init__(self) -> None:
        _check_template("url_template", self.url_template)
        _check_template("recording_template", self.recording_template)
        if isinstance(self.allowed_hosts, str) or not all(
            isinstance(h, str) and h for h in self.allowed_hosts
        ):
            raise ValueError("images.allowed_hosts must be a list of hostnames")
        if not isinstance(self.allowed_hosts, tuple):
            object.__setattr__(self, "allowed_hosts", tuple(self.allowed_hosts))
        for name in ("max_bytes", "max_pixels", "thumbnail_max_bytes", "thumbnail_max_side"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"images.{name} must be a positive integer, got {value!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"images.retries must be >= 0, got {self.retries!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"images.workers must be >= 0 (0 = CPU count), got {self.workers!r}")
        if not isinstance(self.timeout_seconds, int | float) or self.timeout_seconds <= 0:
            raise ValueError(f"images.timeout_seconds must be > 0, got {self.timeout_seconds!r}")

    @property
    def effective_workers(self) -> int:
        """``workers``, with 0 meaning one per CPU."""
        return self.workers or (os.cpu_count() or 1)

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> ImageSettings:
        """Build from a parsed ``[images]`` TOML table; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(table) - known
        if unknown:
            raise ValueError(f"[images]: unknown keys {sorted(unknown)}")
        values = dict(table)
        if "allowed_hosts" in values and isinstance(values["allowed_hosts"], list):
            values["allowed_hosts"] = tuple(values["allowed_hosts"])
        return cls(**values)
