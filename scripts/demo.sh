#!/usr/bin/env bash
# The main job on a fresh machine: set up, bring a sandbox world up with the demo
# seed (real PDS, MongoDB sandbox, image server, all on loopback), and run the
# daemon against it in the foreground. Ctrl-C stops the daemon and the world.
#
#   SYNCD_DEMO_DIR=DIR      where the world lives (default ./demo-world)
#   SYNCD_DEMO_SECONDS=N    stop by itself after N seconds (default: run until Ctrl-C)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
./scripts/setup.sh
dir="${SYNCD_DEMO_DIR:-$root/demo-world}"
bin=.venv/bin

"$bin/syncd-sandbox" down --dir "$dir" >/dev/null 2>&1 || true
"$bin/syncd-sandbox" up --dir "$dir" --seed demo --reset
cleanup() { "$bin/syncd-sandbox" down --dir "$dir" >/dev/null 2>&1 || true; }
trap cleanup EXIT

cfg="$dir/syncd.toml"
echo
echo "== syncd run --config $cfg   (status: $bin/syncd status --config $cfg)"
echo
"$bin/syncd" run --config "$cfg" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' INT TERM

# Once the backfill has had a moment, show what was mirrored, then try a live change.
(
  sleep 6
  echo; echo "== syncd status (after the backfill)"; "$bin/syncd" status --config "$cfg" || true
  "$bin/python" -m syncd_sandbox.demo_live --dir "$dir" || true
  sleep 3
  echo; echo "== syncd status (after live changes)"; "$bin/syncd" status --config "$cfg" || true
  echo; echo "== the daemon keeps tailing the change stream; Ctrl-C to stop"
) &
companion=$!

if [ -n "${SYNCD_DEMO_SECONDS:-}" ]; then
  ( sleep "$SYNCD_DEMO_SECONDS"; kill -TERM $pid 2>/dev/null || true ) &
fi
set +e
wait $pid
code=$?
kill $companion 2>/dev/null
exit $code
