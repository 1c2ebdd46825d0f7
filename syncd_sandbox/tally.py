"""Counts the chaos, hostile-input and secrets suites print at the end of a run.

Tests add to :data:`TALLY`; each suite's ``conftest.py`` exposes
:func:`pytest_terminal_summary`, which prints the counts once per session.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

TALLY: Counter[str] = Counter()
LABELS = {
    "kill_points": "kill points survived (SIGKILL + restart)",
    "mongo_faults": "MongoDB faults injected",
    "pds_faults": "PDS faults injected (proxy + restarts)",
    "load_ops": "source changes made by the load generator",
    "bad_documents": "hostile/malformed documents tried",
    "good_documents": "valid generated documents published",
    "records_checked": "records checked by the invariant",
    "documents_checked": "documents checked by the invariant",
    "invariant_checks": "invariant checks passed",
    "violations": "invariant violations (must be 0)",
    "secret_scans": "bytes of syncd output scanned for secrets",
}
_printed = False


def count(name: str, n: int = 1) -> None:
    TALLY[name] += n


def record_report(report: Any) -> None:
    """Add an :class:`~syncd_sandbox.invariant.InvariantReport` to the tally."""
    TALLY["records_checked"] += report.records_checked
    TALLY["documents_checked"] += report.documents_checked
    TALLY["violations"] += len(report.violations)
    TALLY["invariant_checks"] += 1 if report.ok else 0


def pytest_terminal_summary(terminalreporter: Any) -> None:
    global _printed
    if _printed or not TALLY:
        return
    _printed = True
    terminalreporter.section("syncd chaos / hostile / secrets counts")
    for key, label in LABELS.items():
        terminalreporter.write_line(f"{label:<48} {TALLY.get(key, 0):>8}")
    for key in sorted(set(TALLY) - set(LABELS)):
        terminalreporter.write_line(f"{key:<48} {TALLY[key]:>8}")
