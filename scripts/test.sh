#!/usr/bin/env bash
# Run the test suite (sets the project up first if needed). Extra args go to pytest, e.g. -m slow.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
export AMENT_PREFIX_PATH="$ROOT/.venv" OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
cd "$ROOT"
# Linters first (pinned in requirements-lint.txt): ruff on the repo (ruff.toml), mypy on imp_core (setup.cfg).
PY="$ROOT/.venv/bin/python"
LINT_STAMP="$(cat "$ROOT/requirements-lint.txt" | sha256sum | cut -c1-16)"
if [ "$(cat "$ROOT/.venv/.imp_lint_stamp" 2>/dev/null)" != "$LINT_STAMP" ]; then
  echo "[test] installing linters"
  "$PY" -m pip install -q -r "$ROOT/requirements-lint.txt"
  echo "$LINT_STAMP" > "$ROOT/.venv/.imp_lint_stamp"
fi
echo "[test] ruff"
"$PY" -m ruff check --no-cache .
echo "[test] mypy imp_core"
"$PY" -m mypy --cache-dir "$ROOT/.venv/.mypy_cache"
exec "$PY" -m pytest -q "$@"
