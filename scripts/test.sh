#!/usr/bin/env bash
# The whole test suite from a fresh clone: set-up, lint, types, tests.
#
# The PDS's npm install (better-sqlite3 compiled from source: about two minutes on
# one core; started first) runs in the background while ruff, mypy, the fast tier
# (`-m "not slow"`, no processes) and the slow tests that need no PDS (the MongoDB
# sandbox's conformance, the image workers, promtool, systemd) run on the other
# core; the rest of the slow tier waits for it. Options go to every pytest run
# (e.g. `-rs`, `--durations=20`); to run some tests, call pytest itself.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

# One tier; "no tests collected" (5: arguments that select none of it) is not a failure.
tier() {
  local rc=0
  .venv/bin/python -m pytest -q -p no:cacheprovider -m "$@" || rc=$?
  [ "$rc" -eq 5 ] && rc=0
  return "$rc"
}

pds_log="$(mktemp)"
setsid ./scripts/setup.sh pds >"$pds_log" 2>&1 &
pds_pid=$!
trap 'kill -- -"$pds_pid" 2>/dev/null || true; rm -f "$pds_log"' EXIT
./scripts/setup.sh python
./scripts/setup.sh system

.venv/bin/ruff check syncd syncd_sandbox tests bench
.venv/bin/ruff format --check syncd syncd_sandbox tests bench
.venv/bin/mypy
tier "not slow" "$@"
no_pds=(tests/conformance tests/sandbox_mongo tests/images tests/ops/test_promtool.py tests/ops/test_systemd.py)
tier slow "$@" "${no_pds[@]}"

if ! wait "$pds_pid"; then
  cat "$pds_log" >&2
  echo "test.sh: setting up the PDS failed" >&2
  exit 1
fi
cat "$pds_log" >&2
tier slow "$@" "${no_pds[@]/#/--ignore=}"
