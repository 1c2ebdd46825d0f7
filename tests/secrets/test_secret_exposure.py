"""Nothing syncd writes contains an account password, a JWT, or the Mongo URI's password.

A full run at log level debug with PDS faults, a SIGKILL + restart, a wrong password
and dead letters; then every output is scanned: the log (all levels), ``/metrics``,
``syncd status --json`` and ``status`` (text), and every dead-letter reason.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time

import httpx

from syncd_sandbox import tally
from syncd_sandbox.accounts import WorldAccount, store_user
from syncd_sandbox.load import LoadGenerator
from syncd_sandbox.rig import Rig
from syncd_sandbox.syncd_process import SyncdProcess
from syncd_sandbox.testing import SandboxWorld

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.")
MONGO_PASSWORD = "Mongo-Secret-Pw-7f3a9"


def _scan(name: str, text: str, secrets: dict[str, str]) -> list[str]:
    tally.count("secret_scans", len(text))
    found = [f"{name}: {label}" for label, value in secrets.items() if value and value in text]
    found += [f"{name}: a JWT ({m.group(0)[:12]}...)" for m in JWT.finditer(text)]
    return found


def test_no_secret_in_any_output(world: SandboxWorld) -> None:
    rig = Rig(world, log_level="debug")
    try:
        _full_run(rig)
    finally:
        rig.close()


def _full_run(rig: Rig) -> None:
    w = rig.world
    carol = w.add_user("carol", with_atproto=False)
    dave = w.add_user("dave")
    store_user(w.db, WorldAccount("dave", dave.sub, dave.did, dave.handle, "WrongPassw0rd-dave"))
    owners = [w.sub("alice"), w.sub("bob"), carol.sub, dave.sub, None]
    proxy = rig.proxy
    assert proxy is not None
    proxy.add("status", status=500, probability=0.1)
    proxy.add("ratelimit", probability=0.05, reset_in=1)
    proxy.add("apply_then_drop", methods="com.atproto.repo.applyWrites", probability=0.1)
    proxy.add("reset", probability=0.05)
    w.insert("moods", {"user": w.sub("alice"), "mood": 5, "when": "yesterday"})  # a dead letter
    load = LoadGenerator(rig.load_db(), w.image_dir, owners, seed=1)
    for _ in range(40):
        load.step()
    rig.syncd.start()
    load.start(rate=20)
    time.sleep(3)
    rig.syncd.kill()
    rig.syncd.start()
    time.sleep(3)
    load.stop()
    proxy.clear()
    tally.count("pds_faults", proxy.total_injected)
    tally.count("kill_points")
    rig.exempt_dids.add(dave.did or "")
    rig.wait_quiet(60)
    metrics = httpx.get(rig.metrics_url, timeout=5).text
    assert rig.syncd.stop() == 0

    # The secrets: every account password (incl. the wrong one stored for dave), every
    # token syncd holds, and the Mongo password of a second run below.
    secrets = {f"password of {a.name}": a.password or "" for a in w.accounts.values() if a.password}
    secrets["dave's stored (wrong) password"] = "WrongPassw0rd-dave"
    db = sqlite3.connect(w.state_dir / "syncd.sqlite3")
    try:
        for did, access, refresh in db.execute("SELECT did, access_jwt, refresh_jwt FROM sessions"):
            secrets[f"access token of {did}"] = access
            secrets[f"refresh token of {did}"] = refresh
        reasons = "\n".join(
            f"{r} {d}" for r, d in db.execute("SELECT reason, detail FROM dead_letters")
        )
    finally:
        db.close()
    assert any(k.startswith("access token") for k in secrets)
    assert reasons, "the run should have produced dead letters"

    # A second, short run whose Mongo URI carries a password (the sandbox has no auth:
    # the driver's login fails, which is exactly when a URI tends to get printed).
    uri = w.mongo_uri.replace("mongodb://", f"mongodb://syncd:{MONGO_PASSWORD}@", 1)
    other = w.tmp / "with-password.toml"
    other.write_text(w.config_path.read_text().replace(f'uri = "{w.mongo_uri}"', f'uri = "{uri}"'))
    assert MONGO_PASSWORD in other.read_text()
    second = SyncdProcess(other, w.tmp / "syncd-mongo-password.log")
    second.start()
    time.sleep(4)
    second.stop()
    secrets["the Mongo URI's password"] = MONGO_PASSWORD

    status_json = subprocess.run(
        [sys.executable, "-m", "syncd", "status", "--json", "--config", str(w.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    status_text = subprocess.run(
        [sys.executable, "-m", "syncd", "status", "--config", str(w.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert status_json.returncode == 0, status_json.stderr
    leaks: list[str] = []
    leaks += _scan("log", rig.syncd.log_text(), secrets)
    leaks += _scan("log (mongo password run)", second.log_text(), secrets)
    leaks += _scan("/metrics", metrics, secrets)
    leaks += _scan("status --json", status_json.stdout + status_json.stderr, secrets)
    leaks += _scan("status", status_text.stdout + status_text.stderr, secrets)
    leaks += _scan("dead-letter reasons", reasons, secrets)
    assert rig.config.logging.level == "debug"  # every level was on
    assert not leaks, "\n".join(leaks)
