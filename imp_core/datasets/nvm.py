"""VisualSFM NVM models (``NVM_V3``), as shipped with RobotCar Seasons (``3D-models/all-merged/all.nvm``).

Layout of the first model in the file::

    NVM_V3 [FixedK fx cx fy cy r]          header (optional calibration after the tag)
    <num cameras>
    <name> <f> <qw> <qx> <qy> <qz> <cx> <cy> <cz> <r> 0     one line per camera
    <num points>
    <x y z> <r g b> <n> (<image index> <feature index> <u> <v>) * n       one line per 3D point

The quaternion is the world-to-camera rotation and ``c`` the camera centre, so ``t = -R c`` (COLMAP
cam_from_world). Names may start with ``./``. Later models in the same file (after the points of the first) are
ignored. Points are counted but not parsed unless asked for (all.nvm holds millions).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

import numpy as np

from ..errors import DatasetError
from ..types import Pose, qvec_to_rotmat


@dataclass
class NvmImage:
    name: str
    focal: float
    pose: Pose  # cam_from_world
    radial: float = 0.0


@dataclass
class NvmModel:
    images: List[NvmImage]
    num_points: int = 0
    points: Optional[np.ndarray] = None  # (N, 3) when read with points=True
    calibration: List[float] = field(default_factory=list)  # FixedK values from the header, if any


def clean_name(name: str) -> str:
    """``./a/b.png`` -> ``a/b.png`` (NVM exports prefix names with ``./``)."""
    while name.startswith("./"):
        name = name[2:]
    return name


def read_nvm(path, points: bool = False) -> NvmModel:
    """Read the first model of an NVM file (errors name ``file:line``)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"NVM model {path} does not exist")
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        lines = (ln for ln in enumerate(f, 1))

        def next_nonblank() -> Tuple[int, List[str]]:
            for i, ln in lines:
                tok = ln.split()
                if tok and not tok[0].startswith("#"):
                    return i, tok
            raise DatasetError(f"{path}: unexpected end of file")

        i, tok = next_nonblank()
        if not tok[0].startswith("NVM_V3"):
            raise DatasetError(f"{path}:{i}: not an NVM_V3 file (first line {' '.join(tok)!r})")
        calib = []
        if len(tok) > 1 and tok[1] == "FixedK":
            try:
                calib = [float(v) for v in tok[2:]]
            except ValueError:
                raise DatasetError(f"{path}:{i}: bad FixedK calibration {' '.join(tok[2:])!r}") from None
        i, tok = next_nonblank()
        try:
            n_cams = int(tok[0])
        except ValueError:
            raise DatasetError(f"{path}:{i}: expected the number of cameras, got {' '.join(tok)!r}") from None
        images: List[NvmImage] = []
        for _ in range(n_cams):
            i, tok = next_nonblank()
            if len(tok) < 10:
                raise DatasetError(f"{path}:{i}: expected 'name f qw qx qy qz cx cy cz r 0', got {' '.join(tok)!r}")
            try:
                vals = np.array([float(v) for v in tok[1:10]])
            except ValueError:
                raise DatasetError(f"{path}:{i}: non-numeric camera values for {tok[0]!r}") from None
            q = vals[1:5]
            if not np.all(np.isfinite(vals)) or np.linalg.norm(q) < 1e-8:
                raise DatasetError(f"{path}:{i}: invalid quaternion or centre for {tok[0]!r}")
            R = qvec_to_rotmat(q / np.linalg.norm(q))
            images.append(NvmImage(clean_name(tok[0]), float(vals[0]), Pose.from_center(R, vals[5:8]),
                                   float(vals[8])))
        n_pts = 0
        xyz = None
        try:
            i, tok = next_nonblank()
            n_pts = int(tok[0])
        except DatasetError:
            pass  # a file with cameras only
        except ValueError:
            raise DatasetError(f"{path}:{i}: expected the number of points, got {' '.join(tok)!r}") from None
        if points and n_pts:
            xyz = np.zeros((n_pts, 3))
            for k in range(n_pts):
                i, tok = next_nonblank()
                try:
                    xyz[k] = [float(v) for v in tok[:3]]
                except (ValueError, IndexError):
                    raise DatasetError(f"{path}:{i}: bad 3D point line") from None
    return NvmModel(images, n_pts, xyz, calib)


def write_nvm(path, entries: Iterable[Tuple[str, float, Pose]],
              points: Optional[Iterable[Tuple[np.ndarray, List[Tuple[int, int, float, float]]]]] = None) -> Path:
    """Write an NVM_V3 model: ``entries`` = (name, focal, cam_from_world); ``points`` = (xyz, observations
    [(image index, feature index, u, v)]) with the colour left grey."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = list(entries)
    pts = list(points or [])
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"NVM_V3\n\n{len(entries)}\n")
        for name, focal, pose in entries:
            q, c = pose.qvec, pose.center
            f.write(f"{name} {focal:.10g} " + " ".join(f"{v:.15g}" for v in (*q, *c)) + " 0 0\n")
        f.write(f"\n{len(pts)}\n")
        for xyz, obs in pts:
            f.write(" ".join(f"{v:.9g}" for v in xyz) + f" 128 128 128 {len(obs)}")
            for im, feat, u, v in obs:
                f.write(f" {im} {feat} {u:.4f} {v:.4f}")
            f.write("\n")
        f.write("\n\n0\n")
    return path
