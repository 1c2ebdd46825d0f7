from __future__ import annotations

import os
import tomllib

import pytest

from syncd.images.settings import ImageSettings, parse_origin


def test_defaults() -> None:
    s = ImageSettings()
    assert s.url_template == "https://{bucket}.sfo3.digitaloceanspaces.com/{key}"
    assert s.recording_template == s.url_template
    assert s.user_keys == ("{user}/painting/{name}", "{user}/{name}")
    assert s.guest_keys == ("{name}",)
    assert s.user_bucket == "user-aesthetic-computer"
    assert s.guest_bucket == "art-aesthetic-computer"
    assert s.max_bytes == 25 * 1024 * 1024
    assert (s.timeout_seconds, s.retries, s.workers) == (10.0, 4, 0)
    assert s.thumbnail_max_bytes == 1_048_576  # the published lexicon's maxSize
    assert (s.worker_memory_mb, s.worker_cpu_seconds) == (512, 5.0)
    assert (s.max_pixels, s.max_chunks, s.max_frames) == (40_000_000, 10_000, 5_000)
    assert (s.gif_max_blocks, s.jpeg_max_markers, s.jpeg_max_scans) == (250_000, 1_000, 100)
    assert s.effective_workers == (os.cpu_count() or 1)
    assert s.allowed_origins == {
        ("https", "user-aesthetic-computer.sfo3.digitaloceanspaces.com", 443),
        ("https", "art-aesthetic-computer.sfo3.digitaloceanspaces.com", 443),
    }


def test_from_toml_table() -> None:
    table = tomllib.loads(
        """
        [images]
        url_template = "http://127.0.0.1:9000/{bucket}/{key}"
        recording_template = "http://127.0.0.1:9000/{bucket}/{key}"
        user_keys = ["{user}/painting/{name}", "{user}/{name}", "legacy/{name}-{user}"]
        guest_keys = ["{name}", "guests/{name}"]
        allowed_hosts = ["http://127.0.0.1:9000"]
        user_bucket = "user-aesthetic-computer"
        guest_bucket = "art-aesthetic-computer"
        max_bytes = 1000000
        max_pixels = 1000000
        timeout_seconds = 2.5
        retries = 1
        workers = 3
        worker_memory_mb = 256
        worker_cpu_seconds = 2
        thumbnail_max_bytes = 50000
        max_chunks = 100
        max_frames = 10
        gif_max_blocks = 1000
        jpeg_max_markers = 50
        jpeg_max_scans = 20
        """
    )["images"]
    s = ImageSettings.from_mapping(table)
    assert s.allowed_hosts == ("http://127.0.0.1:9000",)
    assert s.allowed_origins == {("http", "127.0.0.1", 9000)}
    assert s.user_keys[2] == "legacy/{name}-{user}" and s.guest_keys == ("{name}", "guests/{name}")
    assert s.workers == 3 and s.effective_workers == 3


def test_unknown_key_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        ImageSettings.from_mapping({"max_byte": 3})
    with pytest.raises(ValueError, match="unknown keys"):  # gone: thumbnails are always 512
        ImageSettings.from_mapping({"thumbnail_max_side": 512})


@pytest.mark.parametrize(
    ("entry", "origin"),
    [
        ("a.example", ("https", "a.example", 443)),
        ("A.Example.", ("https", "a.example", 443)),
        ("https://a.example", ("https", "a.example", 443)),
        ("https://a.example:8443", ("https", "a.example", 8443)),
        ("http://127.0.0.1:9000", ("http", "127.0.0.1", 9000)),
        ("http://a.example", ("http", "a.example", 80)),
        ("http://[::1]:8080/", ("http", "::1", 8080)),
    ],
)
def test_allowed_host_entries(entry: str, origin: tuple[str, str, int]) -> None:
    assert parse_origin(entry) == origin


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"url_template": "https://x/{bucket}"}, "images.url_template"),
        ({"url_template": "https://x/{key}/{evil}"}, "images.url_template"),
        ({"url_template": "file:///{key}"}, "images.url_template"),
        ({"recording_template": "https://x/{key"}, "images.recording_template"),
        ({"user_keys": ()}, "images.user_keys"),
        ({"user_keys": ("{user}/painting",)}, "images.user_keys"),  # no {name}
        ({"user_keys": ("{name}",)}, "images.user_keys"),  # no {user}: another user's key
        ({"user_keys": ("{user}/{name}/{name}",)}, "images.user_keys"),
        ({"user_keys": ("{user}/{name}/{slug}",)}, "images.user_keys"),
        ({"user_keys": ("/{user}/{name}",)}, "images.user_keys"),
        ({"user_keys": ("{user}/../{name}",)}, "images.user_keys"),
        ({"user_keys": ("{user}//{name}",)}, "images.user_keys"),
        ({"user_keys": ("{user}/{name}?x",)}, "images.user_keys"),
        ({"user_keys": ("{user}/{name}.png",)}, "images.user_keys"),
        ({"user_keys": ("{user}/{name!r}",)}, "images.user_keys"),
        ({"user_keys": ("{user}/{name}", "{user}/{name}")}, "images.user_keys"),
        ({"user_keys": tuple(f"{{user}}/{i}/{{name}}" for i in range(5))}, "images.user_keys"),
        ({"user_keys": "{user}/{name}"}, "images.user_keys"),
        ({"guest_keys": ("{user}/{name}",)}, "images.guest_keys"),
        ({"guest_keys": ()}, "images.guest_keys"),
        ({"allowed_hosts": "a.example"}, "images.allowed_hosts"),
        ({"allowed_hosts": ("127.0.0.1:9000",)}, "images.allowed_hosts"),  # port needs a scheme
        ({"allowed_hosts": ("ftp://a.example",)}, "images.allowed_hosts"),
        ({"allowed_hosts": ("https://u@a.example",)}, "images.allowed_hosts"),
        ({"allowed_hosts": ("https://a.example/path",)}, "images.allowed_hosts"),
        ({"allowed_hosts": ("https://a.example:99999",)}, "images.allowed_hosts"),
        ({"allowed_hosts": ("",)}, "images.allowed_hosts"),
        ({"max_bytes": 0}, "images.max_bytes"),
        ({"max_pixels": -1}, "images.max_pixels"),
        ({"retries": -1}, "images.retries"),
        ({"workers": -2}, "images.workers"),
        ({"timeout_seconds": 0}, "images.timeout_seconds"),
        ({"worker_cpu_seconds": 0}, "images.worker_cpu_seconds"),
        ({"worker_memory_mb": 64}, "images.worker_memory_mb"),
        ({"jpeg_max_scans": 0}, "images.jpeg_max_scans"),
        ({"gif_max_blocks": True}, "images.gif_max_blocks"),
    ],
)
def test_invalid_settings_name_the_key_in_one_line(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ValueError) as info:
        ImageSettings(**kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(f"{key}: ") and "\n" not in message


def test_the_example_config_documents_every_images_key_with_its_default() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    table = tomllib.loads((root / "config.example.toml").read_text())["images"]
    assert ImageSettings.from_mapping(table) == ImageSettings()
    assert set(table) == set(ImageSettings.__dataclass_fields__)


def test_a_bad_key_template_is_a_config_error_naming_the_key() -> None:
    from syncd.config import ConfigError, from_mapping

    with pytest.raises(ConfigError) as info:
        from_mapping({"images": {"user_keys": ["{user}/{slug}"]}})
    assert str(info.value).startswith("images.user_keys: ")
    with pytest.raises(ConfigError) as info:
        from_mapping({"images": {"allowed_hosts": ["127.0.0.1:8000"]}})
    assert str(info.value).startswith("images.allowed_hosts: ")
