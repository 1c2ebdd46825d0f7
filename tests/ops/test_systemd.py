"""The systemd units: ``systemd-analyze verify`` and the keys the operations doc promises.

``systemd-analyze verify`` checks that every Exec*= binary exists, and
/opt/syncd/.venv/bin/syncd does not exist on a development machine. Rather than
rewriting ExecStart (which would verify a different file), the units are verified
*unmodified* with ``--root=``: a throwaway root holding the units in
/etc/systemd/system, a copy of this machine's unit tree (for sysinit.target & co.),
and executables at the documented install paths. Verify's warnings (unknown keys,
unparsable values) do not change its exit status, so the output must also be empty.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

#: Starts processes (the PDS, the MongoDB sandbox, image workers, promtool, ...).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"
UNIT_NAMES = ("syncd.service", "syncd-reconcile.service", "syncd-reconcile.timer")


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path}: key outside a section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def exec_paths(path: Path) -> set[str]:
    paths = set()
    for key, values in parse_unit(path).get("Service", {}).items():
        if key.startswith("Exec"):
            for value in values:
                paths.add(value.lstrip("-@:+!").split()[0])
    return paths


def make_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    for name in UNIT_NAMES:
        shutil.copy(UNITS / name, root / "etc/systemd/system" / name)
    for name in UNIT_NAMES:
        for exe in exec_paths(UNITS / name):
            target = root / exe.lstrip("/")
            if not exe.startswith("/opt/syncd/"):
                # Not ours: it must exist on a normal system, and on this one.
                assert os.access(exe, os.X_OK), f"{name}: {exe} is not executable here"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("#!/bin/sh\nexit 0\n")
            target.chmod(0o755)
    return root


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    assert os.access(SYSTEMD_ANALYZE, os.X_OK), "systemd-analyze is required (package systemd)"
    root = make_root(tmp_path)
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", f"--root={root}", *UNIT_NAMES],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0, output
    assert output == "", output


def test_verify_catches_mistakes(tmp_path: Path) -> None:
    """The harness is not vacuous: a typo and a missing binary are reported."""
    root = make_root(tmp_path)
    unit = root / "etc/systemd/system/syncd.service"
    unit.write_text(unit.read_text().replace("WatchdogSec=", "WatchdogSe="))
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", f"--root={root}", "syncd.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Unknown key 'WatchdogSe'" in proc.stdout + proc.stderr
    (root / "opt/syncd/.venv/bin/syncd").unlink()
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", f"--root={root}", "syncd.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "/opt/syncd/.venv/bin/syncd" in proc.stdout + proc.stderr


def test_service_keys() -> None:
    svc = parse_unit(UNITS / "syncd.service")["Service"]
    one = {k: v[-1] for k, v in svc.items()}
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "ExecStart": "/opt/syncd/.venv/bin/syncd run --config /etc/syncd/config.toml",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "Restart": "on-failure",
        "RestartSec": "5",
        "WatchdogSec": "60",
        "TimeoutStopSec": "15",
        "StateDirectory": "syncd",
        "ConfigurationDirectory": "syncd",
        "LoadCredential": "mongo_uri:/etc/syncd/credentials/mongo_uri",
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "CapabilityBoundingSet": "",
    }
    for key, value in expected.items():
        assert one.get(key) == value, f"{key}={one.get(key)!r}, expected {value!r}"
    assert "Environment=SYNCD_STATE_DIR=%S/syncd" in [
        f"Environment={v}" for v in svc["Environment"]
    ]
    assert svc["SystemCallFilter"][0] == "@system-service"
    assert "MemoryMax" in svc
    # Start-up (not backfill) must fit, with room for MongoDB/PDS retries.
    assert 60 <= int(one["TimeoutStartSec"]) <= 900


def test_reconcile_is_a_dry_run_on_a_timer() -> None:
    svc = parse_unit(UNITS / "syncd-reconcile.service")["Service"]
    assert svc["Type"] == ["oneshot"]
    assert "--apply" not in svc["ExecStart"][0]
    assert svc["User"] == parse_unit(UNITS / "syncd.service")["Service"]["User"]
    timer = parse_unit(UNITS / "syncd-reconcile.timer")
    assert timer["Timer"]["OnCalendar"] and timer["Timer"]["Persistent"] == ["yes"]


MDWE_PROBE = textwrap.dedent(
    """
    import ctypes, io, mmap, sys
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        sys.exit(77)  # kernel < 6.3
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except OSError:
        pass
    else:
        sys.exit("PR_SET_MDWE did not refuse a W+X mapping")

    import asyncio, sqlite3, ssl
    from PIL import Image
    im = Image.new("RGB", (1500, 1200), (10, 20, 30))
    for fmt in ("PNG", "JPEG", "WEBP", "GIF"):
        buf = io.BytesIO()
        im.save(buf, fmt)
        buf.seek(0)
        out = Image.open(buf)
        out.load()
        out.thumbnail((256, 256))
    import bson, pymongo, httpx, structlog, prometheus_client, atproto
    assert bson.decode(bson.encode({"a": 1})) == {"a": 1}
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    ec.generate_private_key(ec.SECP256K1()).sign(b"x", ec.ECDSA(hashes.SHA256()))
    ssl.create_default_context()
    db = sqlite3.connect(":memory:")
    db.execute("create table t(x)")
    db.execute("insert into t values (1)")
    asyncio.run(asyncio.sleep(0))
    import syncd.config, syncd.health, syncd.metrics, syncd.notify
    print("ok")
    """
)


def test_memory_deny_write_execute_is_safe() -> None:
    """MemoryDenyWriteExecute=yes: the runtime stack maps no W+X memory.

    PR_SET_MDWE (Linux >= 6.3) is the same policy systemd enforces with seccomp:
    no mapping may be both writable and executable, nor become executable later.
    """
    proc = subprocess.run(
        [sys.executable, "-c", MDWE_PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    if proc.returncode == 77:
        pytest.skip("kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("ok")
