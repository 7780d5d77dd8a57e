#!/usr/bin/env bash
# The main job: synthetic world -> map -> replay + localizer + evaluator as ROS 2 processes -> accuracy/latency summary.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
export AMENT_PREFIX_PATH="$ROOT/.venv"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m imp_ros.demo "$@"
