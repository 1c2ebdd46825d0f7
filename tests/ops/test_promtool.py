"""Alerting rules and the example scrape config, checked by the real ``promtool``.

promtool comes from Debian's ``prometheus`` package, which scripts/setup.sh installs;
a missing promtool is a failure, not a skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

#: Starts processes (the PDS, the MongoDB sandbox, image workers, promtool, ...).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
ALERTS_TEST = PROM_DIR / "alerts_test.yml"
EXAMPLE_CONFIG = PROM_DIR / "prometheus.example.yml"
OPERATING = ROOT / "docs" / "operating.md"

REQUIRED_ALERTS = {
    "SyncdDown",
    "SyncdStreamDisconnected",
    "SyncdLagHigh",
    "SyncdResumeTokenOld",
    "SyncdDeadLettersIncreasing",
    "SyncdWriteErrorRatioHigh",
    "SyncdHistoryLost",
    "SyncdBackfillStuck",
    "SyncdRateLimited",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool not found: run scripts/setup.sh (installs Debian's 'prometheus')"
    return path


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=PROM_DIR)


def alert_blocks() -> dict[str, str]:
    text = ALERTS.read_text()
    parts = re.split(r"^\s*- alert: (\w+)\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_check_rules(promtool: str) -> None:
    proc = run([promtool, "check", "rules", str(ALERTS)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_rule_unit_tests(promtool: str) -> None:
    proc = run([promtool, "test", "rules", str(ALERTS_TEST)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_check_example_config(promtool: str) -> None:
    proc = run([promtool, "check", "config", str(EXAMPLE_CONFIG)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "job_name: syncd" in EXAMPLE_CONFIG.read_text()


def test_every_alert_is_documented_and_labelled() -> None:
    blocks = alert_blocks()
    assert set(blocks) >= REQUIRED_ALERTS
    docs = OPERATING.read_text()
    headings = {m.lower() for m in re.findall(r"^#{2,4} (\w+)\s*$", docs, flags=re.M)}
    for name, block in blocks.items():
        assert re.search(r"severity: (critical|warning)", block), name
        for key in ("summary:", "description:", "runbook:"):
            assert key in block, f"{name}: no {key}"
        anchor = f"docs/operating.md#{name.lower()}"
        assert anchor in block, f"{name}: runbook should point at {anchor}"
        assert name.lower() in headings, f"docs/operating.md has no '### {name}' runbook entry"


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    lines = ALERTS_TEST.read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"\s*alertname: (\w+)", line)
        if not m:
            continue
        following = lines[i + 1].strip()
        if following.startswith("exp_alerts: []"):
            quiet.add(m.group(1))
        elif following == "exp_alerts:":
            firing.add(m.group(1))
    blocks = set(alert_blocks())
    assert blocks <= firing, f"no firing case for {blocks - firing}"
    assert blocks <= quiet, f"no quiet case for {blocks - quiet}"
