from pathlib import Path

import pytest

from syncd import cli, config
from syncd.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_loads_and_matches_defaults(tmp_path: Path) -> None:
    cfg = config.load(ROOT / "config.example.toml", environ={})
    assert cfg.mongo.collections == ("paintings", "moods", "pieces", "kidlisp", "tapes")
    assert cfg.metrics.listen == "127.0.0.1:9464"
    assert cfg.pds.max_writes_per_call == 200
    assert cfg == config.apply_overrides(config.Config(source_path=cfg.source_path), {})


def test_an_operator_can_leave_tapes_out(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[mongo]\ncollections = ["paintings", "moods", "pieces", "kidlisp"]\n')
    assert "tapes" not in config.load(path, environ={}).mongo.collections


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[mongo]\nurl = 'x'", "mongo.url"),
        ("[pds]\nmax_writes_per_call = 500", "pds.max_writes_per_call"),
        ("[pds]\ntimeout_seconds = 'soon'", "pds.timeout_seconds"),
        ("[mongo]\ncollections = ['paintings', 'users']", "mongo.collections"),
        ("[nope]\n", "nope"),
        ("[images]\nallowed_hosts = 'a'", "images.allowed_hosts"),
        ("[metrics]\nlisten = 'localhost'", "metrics.listen"),
        ("[tapes]\nallowed_hosts = ['ftp://x']", "tapes.allowed_hosts"),
        ("[tapes]\nupload_concurrency = 0", "tapes.upload_concurrency"),
        ("[tapes]\nspool_directory = 'tmp'", "tapes.spool_directory"),
        ("[pds]\nblob_upload_limit = -1", "pds.blob_upload_limit"),
        ("[mongo\n", "--config"),
        ("[pds]\nurl = 'https://syncd:hunter2@pds.example'", "pds.url"),
        ("[pds]\nurl = 'https://token@pds.example'", "pds.url"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, text), environ={})
    assert str(info.value).startswith(key)
    assert "hunter2" not in str(info.value)


def test_environment_and_credentials_override(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mongo_uri").write_text("mongodb://from-cred:27017/\n")
    path = write(tmp_path, "[pds]\nurl = 'http://file:1'\n")
    cfg = config.load(path, environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert cfg.mongo.uri == "mongodb://from-cred:27017/"
    cfg = config.load(
        path,
        environ={
            "CREDENTIALS_DIRECTORY": str(creds),
            "SYNCD_MONGO_URI": "mongodb://env:1/",
            "SYNCD_PDS_URL": "http://env:2",
        },
    )
    assert cfg.mongo.uri == "mongodb://env:1/" and cfg.pds.url == "http://env:2"
    cfg = config.load(None, environ={"SYNCD_CONFIG": str(path)})
    assert cfg.pds.url == "http://file:1"


def test_cli_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[pds]\nmax_writes_per_call = 0\n")
    assert cli.main(["status", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pds.max_writes_per_call" in err[0]


def test_example_config_documents_every_key_with_its_default() -> None:
    import dataclasses
    import tomllib

    raw = tomllib.loads((ROOT / "config.example.toml").read_text())
    defaults = config.Config()
    for section, cls in config._SECTIONS.items():
        documented = raw.get(section, {})
        for f in dataclasses.fields(cls):
            assert f.name in documented, f"config.example.toml lacks {section}.{f.name}"
            value = documented[f.name]
            default = getattr(getattr(defaults, section), f.name)
            assert (tuple(value) if isinstance(value, list) else value) == default, (
                f"{section}.{f.name}"
            )


def test_a_retired_key_is_accepted_and_ignored(tmp_path: Path) -> None:
    # pipeline.batch_linger_ms did nothing; configs written for it still load.
    path = tmp_path / "c.toml"
    path.write_text("[pipeline]\nbatch_linger_ms = 20\nqueue_size = 5\n")
    cfg = config.load(
        path,
        environ={"SYNCD_MONGO_URI": "mongodb://h/?replicaSet=rs0", "SYNCD_PDS_URL": "http://pds"},
    )
    assert cfg.pipeline.queue_size == 5 and not hasattr(cfg.pipeline, "batch_linger_ms")


def test_the_known_collections_are_the_mappings() -> None:
    from syncd.config import DEFAULT_COLLECTIONS
    from syncd.mappings import MAPPINGS

    assert DEFAULT_COLLECTIONS == tuple(MAPPINGS)
