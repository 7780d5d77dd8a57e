"""The embedded synthetic street: a deterministic dataset with exact poses, depth and instance masks.

The layout ``imp_core.world.make_world(root, preset, seed)`` writes (in the layout of real benchmarks)::

    world.json                       preset, seed, version, counts, conf (written last: marks a complete world)
    images/db/0003.png               mapping drive (day)
    images/query/{day,night}/seq1_0012.png
    depth/<name>                     uint16 millimetres (0 = sky or farther than 65.5 m), name as under images/
    masks/<name>                     uint16 instance ids (0 = ground, poles, sky; facades >= 1)
    sfm_gt/                          COLMAP binary model of the database: cameras and posed images, no points
    queries/{day,night}_queries_with_intrinsics.txt    name MODEL w h params
    gt/query_poses.txt               name qw qx qy qz tx ty tz (cam_from_world)
    gt/sequences.json                sequences (condition, names, stamps at 10 Hz) and database stamps
    instances.json                   facade id, name, front corners (4, 3) and all quads of the instance

``SyntheticWorld(root)`` reads it back as a ``LocalizationDataset``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np

from ..paths import safe_join
from ..types import Camera, Pose
from .base import DatasetError, LocalizationDataset, QueryItem
from .colmap_io import read_model_poses, read_poses, read_query_list

VERSION = 1
FORMAT = "imp-synthetic-world"
CONDITIONS = ("day", "night")


def _read_png(path: Path, flags: int) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"file {path} does not exist")
    img = cv2.imread(str(path), flags)
    if img is None:
        raise DatasetError(f"file {path} is not a readable image (corrupt?)")
    return img


def is_synthetic_world(root) -> bool:
    p = Path(root) / "world.json"
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text()).get("format") == FORMAT
    except ValueError:
        return False


class SyntheticWorld(LocalizationDataset):
    """Read access to a world written by ``make_world``. Names are relative to ``images/``."""

    kind = "synthetic"

    def __init__(self, root) -> None:
        super().__init__(Path(root))
        self.meta = self._json("world.json")
        if self.meta.get("format") != FORMAT:
            raise DatasetError(
                f"{self.root / 'world.json'} is not a synthetic world (format {self.meta.get('format')!r})")
        seq = self._json("gt/sequences.json")
        try:
            self.sequences: Dict[str, List[str]] = {k: list(v["names"]) for k, v in seq["sequences"].items()}
            self._stamps = {n: float(t) for v in seq["sequences"].values() for n, t in zip(v["names"], v["stamps"])}
            self._stamps.update({n: float(t) for n, t in zip(seq["db"]["names"], seq["db"]["stamps"])})
            self._seq_cond = {k: v["condition"] for k, v in seq["sequences"].items()}
        except (KeyError, TypeError) as e:
            raise DatasetError(f"{self.root / 'gt/sequences.json'} is malformed (missing {e})") from None
        self.instances: List[dict] = self._json("instances.json").get("instances", [])
        self._query_cams: Dict[str, Camera] = {}
        self._cond: Dict[str, str] = {}
        for cond in CONDITIONS:
            cams = read_query_list(self.root / "queries" / f"{cond}_queries_with_intrinsics.txt")
            self._query_cams.update(cams)
            self._cond.update({n: cond for n in cams})
        self._gt = read_poses(self.root / "gt" / "query_poses.txt")
        missing = [n for n in self._query_cams if n not in self._gt]
        if missing:
            raise DatasetError(f"{self.root / 'gt/query_poses.txt'} lacks poses for {missing[:3]}...")

    def _json(self, rel: str) -> dict:
        p = self.root / rel
        if not p.is_file():
            raise DatasetError(f"synthetic world file {p} does not exist (run make_world / `imp world`)")
        try:
            return json.loads(p.read_text())
        except ValueError as e:
            raise DatasetError(f"synthetic world file {p} is not valid JSON: {e}") from None

    @property
    def reference_model_dir(self) -> Path:
        return self.root / "sfm_gt"

    @property
    def image_root(self) -> Path:
        return self.root / "images"

    @property
    def conf(self) -> dict:
        return self.meta["conf"]

    @property
    def conditions(self) -> List[str]:
        return [c for c in CONDITIONS if c in self._cond.values()]

    def query_names(self, condition: Optional[str] = None) -> List[str]:
        if condition is not None and condition not in CONDITIONS:
            raise ValueError(f"unknown condition {condition!r}; available: {CONDITIONS}")
        return [n for n, c in self._cond.items() if condition is None or c == condition]

    def queries(self, condition: Optional[str] = None) -> List[QueryItem]:
        return [QueryItem(n, self.image_path(n), self._query_cams[n], self._cond[n], self._gt[n], self._stamps.get(n))
                for n in self.query_names(condition)]

    def _known(self, name: str) -> None:
        if name not in self._cond and name not in self._reference():
            raise KeyError(f"{name!r} is not an image of the synthetic world {self.root}")

    def condition(self, name: str) -> str:
        self._known(name)
        return self._cond.get(name, "db")

    def stamp(self, name: str) -> float:
        self._known(name)
        return self._stamps[name]

    def camera(self, name: str) -> Camera:
        self._known(name)
        return self._query_cams[name] if name in self._query_cams else self.db_camera(name)

    def pose(self, name: str) -> Pose:
        """cam_from_world ground truth."""
        self._known(name)
        return self._gt[name] if name in self._gt else self.db_pose(name)

    def image_path(self, name: str) -> Path:
        return self.image_file(name)

    def _aux_file(self, kind: str, name: str) -> Path:
        """``depth/<name>`` or ``masks/<name>`` (checked like ``image_file``)."""
        return safe_join(self.root / kind, name, what=f"image name in {self.root}")

    def image(self, name: str) -> np.ndarray:
        """RGB uint8."""
        self._known(name)
        return cv2.cvtColor(_read_png(self.image_path(name), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def depth(self, name: str) -> np.ndarray:
        """z-depth in metres (float32), 0 where invalid (sky, beyond 65.5 m)."""
        self._known(name)
        return _read_png(self._aux_file("depth", name), cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000.0

    def instance_mask(self, name: str) -> np.ndarray:
        """int32 instance ids (0 = no instance)."""
        self._known(name)
        return _read_png(self._aux_file("masks", name), cv2.IMREAD_UNCHANGED).astype(np.int32)

    @property
    def db_names(self) -> List[str]:
        return sorted(self._reference())

    def instance(self, instance_id: int) -> dict:
        for inst in self.instances:
            if inst["id"] == instance_id:
                return inst
        raise KeyError(f"no instance {instance_id} in {self.root / 'instances.json'}")

    def check_files(self) -> None:
        """Raise DatasetError naming the first missing image, depth map or mask."""
        read_model_poses(self.reference_model_dir)
        for name in list(self._reference()) + list(self._cond):
            for p in (self.image_path(name), self._aux_file("depth", name), self._aux_file("masks", name)):
                if not p.is_file():
                    raise DatasetError(f"synthetic world file {p} does not exist")
