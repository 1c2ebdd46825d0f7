#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: everything the demo and the tests need.
#   - a virtualenv in .venv with syncd and its dev extra (editable)
#   - the reference PDS (npm ci in sandbox/pds, better-sqlite3 compiled from source)
#   - Debian's prometheus (promtool, and the server for the end-to-end scrape test)
# Re-running it is cheap: each step checks whether it is already done.
# `setup.sh python|pds|system` runs one step (scripts/test.sh overlaps them);
# no argument runs all three.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

log() { printf '[setup] %s\n' "$*" >&2; }
want() { [ -z "$only" ] || [ "$only" = "$1" ]; }
only="${1:-}"
case "$only" in ""|python|pds|system) ;; *) echo "usage: $0 [python|pds|system]" >&2; exit 2 ;; esac

# 1. Python
py="${PYTHON:-python3}"
if want python && [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$py" -m venv .venv
fi
stamp=.venv/.syncd-installed
if want python && { [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; }; then
  log "installing syncd[dev] into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi

# 2. The PDS (Node)
if want pds && { [ ! -f sandbox/pds/node_modules/.syncd-installed ] || [ sandbox/pds/package-lock.json -nt sandbox/pds/node_modules/.syncd-installed ]; }; then
  log "npm ci in sandbox/pds (about 2 minutes)"
  (
    cd sandbox/pds
    npm ci --no-audit --no-fund --loglevel=error
    # package.json allows better-sqlite3's install script; an npm that ignores
    # that still needs the native module built.
    if [ ! -f node_modules/better-sqlite3/build/Release/better_sqlite3.node ]; then
      npm rebuild better-sqlite3 --loglevel=error
    fi
  )
  touch sandbox/pds/node_modules/.syncd-installed
fi

# 3. Debian packages the tests use (promtool, prometheus). Skipped when present.
if want system && { ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; }; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    log "apt-get install prometheus"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    # The Debian package starts a system service; syncd's tests run their own on loopback.
    (systemctl disable --now prometheus >/dev/null 2>&1 || service prometheus stop >/dev/null 2>&1 || true)
  else
    log "promtool/prometheus missing and not root: install Debian's 'prometheus' package"
  fi
fi
log "ready${only:+ ($only)}"
