from __future__ import annotations

import os
import tomllib

import pytest

from syncd.images.settings import ImageSettings


def test_defaults() -> None:
    s = ImageSettings()
    assert s.url_template == "https://{bucket}.sfo3.digitaloceanspaces.com/{key}"
    assert s.recording_template == s.url_template
    assert s.user_bucket == "user-aesthetic-computer"
    assert s.guest_bucket == "art-aesthetic-computer"
    assert s.max_bytes == 25 * 1024 * 1024
    assert (s.max_pixels, s.timeout_seconds, s.retries, s.workers) == (40_000_000, 10.0, 4, 0)
    assert (s.thumbnail_max_bytes, s.thumbnail_max_side) == (102_400, 512)
    assert s.effective_workers == (os.cpu_count() or 1)


def test_from_toml_table() -> None:
    table = tomllib.loads(
        """
        [images]
        url_template = "http://127.0.0.1:9000/{bucket}/{key}"
        recording_template = "http://127.0.0.1:9000/{bucket}/{key}"
        allowed_hosts = ["127.0.0.1"]
        user_bucket = "user-aesthetic-computer"
        guest_bucket = "art-aesthetic-computer"
        max_bytes = 1000000
        max_pixels = 1000000
        timeout_seconds = 2.5
        retries = 1
        workers = 3
        thumbnail_max_bytes = 50000
        thumbnail_max_side = 256
        """
    )["images"]
    s = ImageSettings.from_mapping(table)
    assert s.allowed_hosts == ("127.0.0.1",)
    assert s.workers == 3 and s.effective_workers == 3


def test_unknown_key_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        ImageSettings.from_mapping({"max_byte": 3})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url_template": "https://x/{bucket}"},
        {"url_template": "https://x/{key}/{evil}"},
        {"url_template": "file:///{key}"},
        {"recording_template": "https://x/{key"},
        {"allowed_hosts": "a.example"},
        {"max_bytes": 0},
        {"max_pixels": -1},
        {"retries": -1},
        {"workers": -2},
        {"timeout_seconds": 0},
        {"thumbnail_max_side": True},
    ],
)
def test_invalid_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ImageSettings(**kwargs)  # type: ignore[arg-type]
