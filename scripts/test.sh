#!/usr/bin/env bash
# The whole test suite from a fresh clone: set-up, lint, types, tests.
#
# The PDS's npm install (better-sqlite3 compiled from source: about two minutes on
# one core; started first) runs in the background while ruff, mypy, the fast tier
# (`-m "not slow"`, no processes) and the slow tests that need no PDS (the MongoDB
# sandbox's conformance, the image workers, promtool, systemd) run on the other
# core; the rest of the slow tier waits for it, then runs as two pytest processes
# side by side (one test of each at a time uses about 1.5 of the 2 cores: most of a
# test's time is a process waiting on another). Options go to every pytest run
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

# The PDS tier in two halves of about the same time (~7 minutes each on 2 cores):
# the load and fault suites here, everything else (new files included) in the other.
# The first half's output is kept and printed after the second's.
loaded=(tests/chaos tests/cluster tests/coexistence tests/isolation tests/secrets tests/hostile
  tests/media tests/ops tests/admin/test_reconcile.py tests/admin/test_wipe_restore.py)
loaded_log="$(mktemp)"
tier slow "$@" "${loaded[@]}" "${no_pds[@]/#/--ignore=}" >"$loaded_log" 2>&1 &
loaded_pid=$!
trap 'pkill -TERM -P "$loaded_pid" 2>/dev/null || true; rm -f "$pds_log" "$loaded_log"' EXIT
rest_rc=0
tier slow "$@" "${no_pds[@]/#/--ignore=}" "${loaded[@]/#/--ignore=}" || rest_rc=$?
loaded_rc=0
wait "$loaded_pid" || loaded_rc=$?
echo "== the load and fault half (${loaded[*]}):"
cat "$loaded_log"
rm -f "$loaded_log"
[ "$rest_rc" -eq 0 ] && [ "$loaded_rc" -eq 0 ]
