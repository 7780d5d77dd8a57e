"""Pose files: visuallocalization.net results and TUM trajectories.

- results: ``name qw qx qy qz tx ty tz`` per line, world-to-camera (cam_from_world), quaternion scalar first;
- TUM: ``stamp tx ty tz qx qy qz qw`` per line, the camera's position and orientation in the world
  (camera-to-world), quaternion scalar last.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from ..datasets.colmap_io import read_poses, write_poses
from ..errors import ImpError
from ..types import Pose, quat_wxyz_to_xyzw, quat_xyzw_to_wxyz


class FormatError(ImpError, ValueError):
    """A pose file line cannot be parsed (the message names file and line)."""


def write_results(path, poses: Mapping[str, Pose]) -> Path:
    """visuallocalization.net submission file (one line per localized query)."""
    return write_poses(path, poses)


def read_results(path) -> Dict[str, Pose]:
    try:
        return read_poses(path)
    except ValueError as e:
        raise FormatError(str(e)) from None


def write_tum(path, stamps: Sequence[float], poses: Sequence[Pose]) -> Path:
    """TUM trajectory from cam_from_world poses (written as camera-to-world)."""
    if len(stamps) != len(poses):
        raise ValueError(f"{len(stamps)} stamps for {len(poses)} poses")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("# timestamp tx ty tz qx qy qz qw\n")
        for s, p in zip(stamps, poses):
            w = p.inverse()
            q = quat_wxyz_to_xyzw(w.qvec)
            f.write(f"{float(s):.6f} " + " ".join(f"{v:.9f}" for v in (*w.t, *q)) + "\n")
    return path


def read_tum(path) -> Tuple[np.ndarray, List[Pose]]:
    """(stamps, cam_from_world poses) from a TUM trajectory."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"trajectory file {path} does not exist")
    stamps, poses = [], []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        tok = line.replace(",", " ").split()
        if len(tok) != 8:
            raise FormatError(f"{path}:{i}: expected 'stamp tx ty tz qx qy qz qw' (8 fields), got {len(tok)}")
        try:
            v = np.array([float(x) for x in tok])
        except ValueError:
            raise FormatError(f"{path}:{i}: non-numeric value in {line!r}") from None
        if not np.all(np.isfinite(v)) or np.linalg.norm(v[4:]) < 1e-8:
            raise FormatError(f"{path}:{i}: invalid pose")
        world_from_cam = Pose.from_qvec(quat_xyzw_to_wxyz(v[4:]), v[1:4])
        stamps.append(v[0])
        poses.append(world_from_cam.inverse())
    return np.asarray(stamps), poses
