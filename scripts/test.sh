#!/usr/bin/env bash
# Run the test suite (sets the project up first if needed). Extra args go to pytest, e.g. -m slow.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
export AMENT_PREFIX_PATH="$ROOT/.venv" OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest -q "$@"
