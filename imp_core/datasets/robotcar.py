"""RobotCar Seasons (v2) layout (as used by hloc and LBR)::

    images/overcast-reference/{left,right,rear}/<timestamp>.jpg        database
    images/<condition>/{left,right,rear}/<timestamp>.jpg               queries (dawn, dusk, night, ...)
    intrinsics/{left,right,rear}_intrinsics.txt                        lines "fx 400.0", "fy", "cx", "cy"
    3D-models/colmap/                                                  reference COLMAP model (names relative
                                                                       to images/), e.g. converted from
                                                                       3D-models/all-merged/all.nvm with hloc

Queries get ``SIMPLE_RADIAL width height f cx cy 0.0`` (1024x1024 unless the intrinsics file also has
``width``/``height`` lines). Result names are ``<camera>/<timestamp>.jpg``; stamps come from the file name
(microseconds). Ground truth is not public: an optional ``gt/query_poses.txt`` (result names) is read if present.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..types import Camera, Pose
from .base import DatasetError, LocalizationDataset, QueryItem
from .colmap_io import read_poses

CAMERAS = ("left", "right", "rear")
REFERENCE = "overcast-reference"
CONDITIONS = ("dawn", "dusk", "night", "night-rain", "overcast-summer", "overcast-winter", "rain", "snow", "sun")
MODEL = Path("3D-models/colmap")
GT = Path("gt/query_poses.txt")
DEFAULT_SIZE = 1024


def is_robotcar(root) -> bool:
    root = Path(root)
    return (root / "images").is_dir() and any((root / "intrinsics" / f"{c}_intrinsics.txt").is_file() for c in CAMERAS)


def read_intrinsics(path) -> Camera:
    """``key value`` lines (fx, fy, cx, cy[, width, height]) -> SIMPLE_RADIAL camera with k = 0."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"RobotCar intrinsics file {path} does not exist")
    vals: Dict[str, float] = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        tok = line.split()
        if not tok:
            continue
        try:
            vals[tok[0]] = float(tok[1])
        except (IndexError, ValueError):
            raise DatasetError(f"{path}:{i}: expected 'key value', got {line!r}") from None
    missing = [k for k in ("fx", "fy", "cx", "cy") if k not in vals]
    if missing:
        raise DatasetError(f"{path}: missing {', '.join(missing)}")
    if abs(vals["fx"] - vals["fy"]) > 1e-6 * vals["fx"]:
        raise DatasetError(f"{path}: fx != fy, SIMPLE_RADIAL needs one focal length")
    w, h = int(vals.get("width", DEFAULT_SIZE)), int(vals.get("height", DEFAULT_SIZE))
    return Camera("SIMPLE_RADIAL", w, h, [vals["fx"], vals["cx"], vals["cy"], 0.0])


def write_intrinsics(path, cam: Camera) -> Path:
    (fx, fy), (cx, cy) = cam.focal, cam.principal_point
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"fx {fx:.6f}", f"fy {fy:.6f}", f"cx {cx:.6f}", f"cy {cy:.6f}"]
    if (cam.width, cam.height) != (DEFAULT_SIZE, DEFAULT_SIZE):
        lines += [f"width {cam.width}", f"height {cam.height}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def result_name(list_name: str) -> str:
    """``night/rear/123.jpg`` -> ``rear/123.jpg`` (hloc's prepend_camera_name)."""
    p = Path(list_name)
    return f"{p.parent.name}/{p.name}"


class RobotCarDataset(LocalizationDataset):
    kind = "robotcar"

    def __init__(self, root, cameras: Sequence[str] = CAMERAS) -> None:
        super().__init__(Path(root))
        if not (self.root / "images").is_dir():
            raise DatasetError(f"{self.root / 'images'} does not exist (RobotCar Seasons layout)")
        self.cameras = [c for c in cameras if (self.root / "intrinsics" / f"{c}_intrinsics.txt").is_file()]
        if not self.cameras:
            raise DatasetError(f"no intrinsics/{{{','.join(cameras)}}}_intrinsics.txt in {self.root}")
        self._intr = {c: read_intrinsics(self.root / "intrinsics" / f"{c}_intrinsics.txt") for c in self.cameras}
        self._gt: Optional[Dict[str, Pose]] = read_poses(self.root / GT) if (self.root / GT).is_file() else None

    @property
    def reference_model_dir(self) -> Path:
        d = self.root / MODEL
        if not d.is_dir():
            raise DatasetError(f"RobotCar reference model {d} does not exist (convert 3D-models/all-merged/all.nvm "
                               f"to a COLMAP model there, e.g. with hloc's colmap_from_nvm)")
        return d

    @property
    def image_root(self) -> Path:
        return self.root / "images"

    @property
    def conditions(self) -> List[str]:
        return sorted(p.name for p in self.image_root.iterdir() if p.is_dir() and p.name != REFERENCE)

    def queries(self, condition: Optional[str] = None) -> List[QueryItem]:
        conds = self.conditions if condition is None else [condition]
        out = []
        for cond in conds:
            if not (self.image_root / cond).is_dir():
                raise DatasetError(f"no RobotCar query folder {self.image_root / cond}")
            for cam_name in self.cameras:
                for p in sorted((self.image_root / cond / cam_name).glob("*.jpg")):
                    rname = result_name(str(p.relative_to(self.image_root)))
                    try:
                        stamp = int(p.stem) / 1e6
                    except ValueError:
                        stamp = None
                    gt = self._gt.get(rname) if self._gt is not None else None
                    out.append(QueryItem(rname, p, self._intr[cam_name], cond, gt, stamp))
        return out

    def query_list(self, condition: Optional[str] = None) -> Dict[str, Camera]:
        """Query list entries (names relative to images/) as hloc generates them from the intrinsics."""
        return {str(q.path.relative_to(self.image_root)): q.camera for q in self.queries(condition)}
