"""Configuration: one frozen object, loaded from TOML, overridden from the environment.

Every key has a default here and is documented in ``config.example.toml``. A bad
config is a :class:`ConfigError` naming the key; the CLI turns it into a one-line
message and exit code 2.

Secrets may come from the environment (``SYNCD_MONGO_URI``, ``SYNCD_PDS_URL``) or
from systemd credentials (``$CREDENTIALS_DIRECTORY/mongo_uri``), so the TOML file
itself can be world-readable.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from syncd.images.settings import ImageSettings, parse_origin
from syncd.mappings import MAPPINGS

#: The collections syncd knows how to mirror: one mapping each (syncd/mappings/). All are
#: mirrored by default; ``mongo.collections`` may leave some out (``tapes``: their MP4
#: uploads are the heavy part).
DEFAULT_COLLECTIONS: tuple[str, ...] = tuple(MAPPINGS)
#: Keys older versions read that do nothing now: accepted, so an upgrade keeps a working
#: config, and ignored.
RETIRED_KEYS = frozenset({("pipeline", "batch_linger_ms")})


class ConfigError(ValueError):
    """A configuration problem; the message names the key."""


@dataclass(frozen=True)
class MongoConfig:
    uri: str = "mongodb://127.0.0.1:27017/?replicaSet=rs0"
    database: str = "aesthetic"
    collections: tuple[str, ...] = DEFAULT_COLLECTIONS
    users_collection: str = "users"
    guest_user_id: str = "art-guest"
    scan_batch_size: int = 500
    max_await_ms: int = 250


@dataclass(frozen=True)
class PdsConfig:
    url: str = "http://127.0.0.1:2583"
    timeout_seconds: float = 15.0
    max_writes_per_call: int = 200
    account_concurrency: int = 8
    retry_max_seconds: float = 60.0
    # The PDS's PDS_BLOB_UPLOAD_LIMIT in bytes, when known (0: unknown; learned from the
    # PDS's 413 answers). Blobs over it are dead-lettered before they are downloaded.
    blob_upload_limit: int = 0


@dataclass(frozen=True)
class StateConfig:
    backend: str = "sqlite"  # sqlite | mongodb
    directory: str = "/var/lib/syncd"
    mongodb_uri: str = ""  # empty: mongo.uri
    mongodb_database: str = "syncd"


@dataclass(frozen=True)
class ClusterConfig:
    """Leader lease and partitions (needs ``state.backend = "mongodb"``)."""

    cluster_name: str = "syncd"
    partitions: int = 1
    lease_seconds: float = 15.0
    instance_id: str = ""  # empty: hostname:pid


@dataclass(frozen=True)
class TapesConfig:
    """Tape MP4s: where they may come from, and the bounds on their uploads (which
    never take the PDS slots of text writes)."""

    allowed_hosts: tuple[str, ...] = ()  # empty: images.allowed_hosts
    timeout_seconds: float = 30.0
    retries: int = 4
    upload_concurrency: int = 2
    upload_bytes_in_flight: int = 104_857_600
    upload_bytes_per_second: int = 0  # per upload; 0: unpaced
    prepared_max: int = 4
    spool_directory: str = ""  # empty: $TMPDIR


@dataclass(frozen=True)
class RecordsConfig:
    public_base_url: str = "https://aesthetic.computer"


@dataclass(frozen=True)
class PipelineConfig:
    # The in-flight window is shared by every account being written: it must leave each
    # of many accounts a full applyWrites batch (200) to send.
    queue_size: int = 10000
    shutdown_grace_seconds: float = 8.0
    # Retryable dead letters (image fetch failed, account could not log in) are
    # retried this often; 0 disables.
    dead_letter_retry_seconds: float = 300.0


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = "127.0.0.1:9464"
    enabled: bool = True
    ready_max_lag_seconds: float = 60.0
    # /healthz fails (and the systemd watchdog is withheld) when a loop has not
    # turned for this long.
    liveness_stale_seconds: float = 30.0


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"
    format: str = "auto"  # auto | json | console


@dataclass(frozen=True)
class Config:
    mongo: MongoConfig = field(default_factory=MongoConfig)
    pds: PdsConfig = field(default_factory=PdsConfig)
    state: StateConfig = field(default_factory=StateConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    images: ImageSettings = field(default_factory=ImageSettings)
    tapes: TapesConfig = field(default_factory=TapesConfig)
    records: RecordsConfig = field(default_factory=RecordsConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source_path: str | None = None


_SECTIONS: dict[str, type[Any]] = {
    "mongo": MongoConfig,
    "pds": PdsConfig,
    "state": StateConfig,
    "cluster": ClusterConfig,
    "images": ImageSettings,
    "tapes": TapesConfig,
    "records": RecordsConfig,
    "pipeline": PipelineConfig,
    "metrics": MetricsConfig,
    "logging": LoggingConfig,
}

_ENV_OVERRIDES = {
    "SYNCD_MONGO_URI": ("mongo", "uri"),
    "SYNCD_PDS_URL": ("pds", "url"),
    "SYNCD_STATE_DIR": ("state", "directory"),
    "SYNCD_STATE_MONGODB_URI": ("state", "mongodb_uri"),
    "SYNCD_INSTANCE_ID": ("cluster", "instance_id"),
}

# systemd LoadCredential= names, read from $CREDENTIALS_DIRECTORY.
_CREDENTIAL_FILES = {
    "mongo_uri": ("mongo", "uri"),
    "pds_url": ("pds", "url"),
    "state_mongodb_uri": ("state", "mongodb_uri"),
}


def _coerce(section: str, key: str, expected: Any, value: Any) -> Any:
    name = f"{section}.{key}"
    if isinstance(expected, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if isinstance(expected, int) and not isinstance(expected, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        if value < 0:
            raise ConfigError(f"{name}: must not be negative, got {value}")
        return value
    if isinstance(expected, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        if value < 0:
            raise ConfigError(f"{name}: must not be negative, got {value}")
        return float(value)
    if isinstance(expected, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: expected a list of strings, got {value!r}")
        return tuple(value)
    if isinstance(expected, str) or expected is None:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{name}: unsupported value {value!r}")


def _build_section(section: str, cls: type[Any], raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{section}: expected a table, got {raw!r}")
    defaults = cls()
    known = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if (section, key) in RETIRED_KEYS:
            continue
        if key not in known:
            raise ConfigError(f"{section}.{key}: unknown key")
        values[key] = _coerce(section, key, getattr(defaults, key), value)
    try:
        return replace(defaults, **values)
    except ValueError as exc:  # a section's own checks (e.g. ImageSettings)
        raise ConfigError(str(exc)) from None


def _validate(cfg: Config) -> None:
    unknown = set(cfg.mongo.collections) - set(DEFAULT_COLLECTIONS)
    if unknown:
        raise ConfigError(
            f"mongo.collections: unknown collection(s) {sorted(unknown)}; "
            f"known: {list(DEFAULT_COLLECTIONS)}"
        )
    if not cfg.mongo.collections:
        raise ConfigError("mongo.collections: must name at least one collection")
    if not cfg.mongo.uri.startswith(("mongodb://", "mongodb+srv://")):
        raise ConfigError("mongo.uri: must start with mongodb:// or mongodb+srv://")
    if not cfg.pds.url.startswith(("http://", "https://")):
        raise ConfigError("pds.url: must start with http:// or https://")
    if "@" in urlsplit(cfg.pds.url).netloc:
        # httpx would send it as Basic auth in place of each account's session token:
        # every write would fail as InvalidToken. (The value is not repeated here.)
        raise ConfigError(
            "pds.url: must not carry a user or password (each account logs in with its "
            "own password from MongoDB); remove the part before '@'"
        )
    if not 1 <= cfg.pds.max_writes_per_call <= 200:
        raise ConfigError("pds.max_writes_per_call: must be between 1 and 200 (the PDS maximum)")
    if cfg.pds.account_concurrency < 1:
        raise ConfigError("pds.account_concurrency: must be at least 1")
    _validate_tapes(cfg.tapes)
    if cfg.state.backend not in ("sqlite", "mongodb"):
        raise ConfigError(
            f"state.backend: unsupported backend {cfg.state.backend!r} (sqlite or mongodb)"
        )
    if cfg.state.mongodb_uri and not cfg.state.mongodb_uri.startswith(
        ("mongodb://", "mongodb+srv://")
    ):
        raise ConfigError("state.mongodb_uri: must start with mongodb:// or mongodb+srv://")
    if cfg.cluster.partitions < 1:
        raise ConfigError("cluster.partitions: must be at least 1")
    if cfg.cluster.partitions > 1 and cfg.state.backend != "mongodb":
        raise ConfigError('cluster.partitions: more than 1 needs state.backend = "mongodb"')
    if cfg.cluster.lease_seconds < 1:
        raise ConfigError("cluster.lease_seconds: must be at least 1")
    if not cfg.cluster.cluster_name or "/" in cfg.cluster.cluster_name:
        raise ConfigError("cluster.cluster_name: must be non-empty and contain no '/'")
    if cfg.logging.format not in ("auto", "json", "console"):
        raise ConfigError("logging.format: one of auto, json, console")
    if cfg.logging.level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("logging.level: one of debug, info, warning, error")
    if cfg.pipeline.queue_size < 1:
        raise ConfigError("pipeline.queue_size: must be at least 1")
    host, sep, port = cfg.metrics.listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError("metrics.listen: expected HOST:PORT, e.g. 127.0.0.1:9464")


def _validate_tapes(tapes: TapesConfig) -> None:
    for entry in tapes.allowed_hosts:
        try:
            parse_origin(entry)
        except ValueError as exc:
            raise ConfigError(f"tapes.allowed_hosts: {exc}") from None
    for name in ("upload_concurrency", "upload_bytes_in_flight", "prepared_max"):
        if getattr(tapes, name) < 1:
            raise ConfigError(f"tapes.{name}: must be at least 1")
    if tapes.timeout_seconds <= 0:
        raise ConfigError("tapes.timeout_seconds: must be greater than 0")
    if tapes.spool_directory and not Path(tapes.spool_directory).is_absolute():
        raise ConfigError("tapes.spool_directory: must be an absolute path (or empty: $TMPDIR)")


def from_mapping(raw: dict[str, Any], *, source_path: str | None = None) -> Config:
    """Build a :class:`Config` from a parsed TOML mapping (no environment applied)."""
    sections: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _SECTIONS:
            raise ConfigError(f"{key}: unknown section (known: {', '.join(_SECTIONS)})")
        sections[key] = _build_section(key, _SECTIONS[key], value)
    cfg = Config(**sections, source_path=source_path)
    _validate(cfg)
    return cfg


def _set(cfg: Config, section: str, key: str, value: str) -> Config:
    part = replace(getattr(cfg, section), **{key: value})
    return replace(cfg, **{section: part})


def apply_overrides(cfg: Config, environ: dict[str, str] | None = None) -> Config:
    """Apply systemd credentials, then environment variables (environment wins)."""
    env = dict(os.environ if environ is None else environ)
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        for name, (section, key) in _CREDENTIAL_FILES.items():
            path = Path(cred_dir) / name
            if path.is_file():
                cfg = _set(cfg, section, key, path.read_text().strip())
    for var, (section, key) in _ENV_OVERRIDES.items():
        if env.get(var):
            cfg = _set(cfg, section, key, env[var])
    _validate(cfg)
    return cfg


def load(
    path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None
) -> Config:
    """Load the config file (``--config`` or ``$SYNCD_CONFIG``), then apply overrides."""
    env = dict(os.environ if environ is None else environ)
    chosen = str(path) if path is not None else env.get("SYNCD_CONFIG")
    if chosen is None:
        raise ConfigError("--config: no config file given (use --config PATH or SYNCD_CONFIG)")
    p = Path(chosen)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--config: file not found: {p}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config: {p} is not valid TOML: {exc}") from None
    cfg = from_mapping(raw, source_path=str(p))
    return apply_overrides(cfg, env)
