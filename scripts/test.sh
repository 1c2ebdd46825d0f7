#!/usr/bin/env bash
# The whole test suite from a fresh clone: set-up, lint, types, tests.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
./scripts/setup.sh
.venv/bin/ruff check syncd syncd_sandbox tests bench
.venv/bin/ruff format --check syncd syncd_sandbox tests bench
.venv/bin/mypy
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
