"""Aachen Day-Night v1.1 exactly as downloaded from visuallocalization.net::

    images_upright/  (or images/images_upright/: both occur)
        db/*.jpg                                   database
        sequences/gopro3_undistorted/*.png         database images added in v1.1
        query/{day/{milestone,nexus4,nexus5x},night/nexus5x_additional_night}/*.jpg
    3D-models/aachen_v_1_1/{cameras,images,points3D}.bin   COLMAP model, names relative to images_upright/
    queries/{day,night}_time_queries_with_intrinsics.txt   name MODEL w h params

Result names are basenames (``IMG_20140520_182846.jpg``), as the benchmark expects. Ground truth is not public; an
optional ``gt/query_poses.txt`` (result names) is read when present (fixtures exported from the synthetic world).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

from ..types import Pose
from .base import DatasetError, LocalizationDataset, QueryItem
from .colmap_io import read_poses, read_query_list

MODEL = Path("3D-models/aachen_v_1_1")
IMAGE_DIRS = (Path("images_upright"), Path("images/images_upright"))
IMAGES = IMAGE_DIRS[1]  # where our exporter writes by default
QUERY_LISTS = {"day": "queries/day_time_queries_with_intrinsics.txt",
               "night": "queries/night_time_queries_with_intrinsics.txt"}
GT = Path("gt/query_poses.txt")


def image_dir(root) -> Optional[Path]:
    """images_upright/ at the root or under images/ (the first that exists)."""
    for rel in IMAGE_DIRS:
        if (Path(root) / rel).is_dir():
            return Path(root) / rel
    return None


def _has_model(root) -> bool:
    d = Path(root) / MODEL
    return any((d / f).is_file() for f in ("cameras.bin", "cameras.txt"))


def aachen_image_root(root) -> Optional[Path]:
    """The image folder of a complete Aachen v1.1 layout (reference model and images_upright/), else None."""
    return image_dir(root) if _has_model(root) else None


def is_aachen(root) -> bool:
    return aachen_image_root(root) is not None


def diagnose(root) -> Optional[str]:
    """For a directory that looks like Aachen v1.1 but is not complete: what is missing, where we looked."""
    root = Path(root)
    hints = [p for p in ("3D-models/aachen_v_1_1", "images_upright", "images/images_upright", "queries",
                         "aachen.db", "database.db") if (root / p).exists()]
    if not hints or is_aachen(root):
        return None
    missing = []
    if not _has_model(root):
        missing.append(f"the COLMAP model {root / MODEL}/cameras.bin (from aachen_v1_1.zip)")
    if image_dir(root) is None:
        missing.append("the image folder (looked for " + " and ".join(str(root / d) + "/" for d in IMAGE_DIRS) + ")")
    return f"Aachen Day-Night v1.1 (found {', '.join(hints)}) is missing " + " and ".join(missing)


def result_name(list_name: str) -> str:
    """Name of a query in a visuallocalization.net result file for Aachen: the basename."""
    return Path(list_name).name


class AachenDataset(LocalizationDataset):
    kind = "aachen_v1.1"

    def __init__(self, root) -> None:
        super().__init__(Path(root))
        image_root = aachen_image_root(self.root)
        if image_root is None:
            raise DatasetError(diagnose(self.root) or f"{self.root} is not an Aachen v1.1 layout (needs {MODEL}/ "
                               "and images_upright/ or images/images_upright/)")
        self._image_root: Path = image_root  # looked up once, not per image path
        self._gt: Optional[Dict[str, Pose]] = read_poses(self.root / GT) if (self.root / GT).is_file() else None

    @property
    def reference_model_dir(self) -> Path:
        return self.root / MODEL

    @property
    def image_root(self) -> Path:
        return self._image_root

    @property
    def conditions(self) -> List[str]:
        return [c for c, rel in QUERY_LISTS.items() if (self.root / rel).is_file()]

    def queries(self, condition: Optional[str] = None) -> List[QueryItem]:
        conds = self.conditions if condition is None else [condition]
        if not conds:
            raise DatasetError("no Aachen query list (looked for "
                               + " and ".join(str(self.root / r) for r in QUERY_LISTS.values()) + ")")
        out = []
        seen: Dict[str, str] = {}
        for cond in conds:
            if cond not in QUERY_LISTS:
                raise ValueError(f"unknown Aachen condition {cond!r}; available: {list(QUERY_LISTS)}")
            path = self.root / QUERY_LISTS[cond]
            if not path.is_file():
                raise DatasetError(f"Aachen query list {path} does not exist")
            for name, cam in read_query_list(path).items():
                rname = result_name(name)
                if rname in seen:
                    raise DatasetError(f"{path}: {name!r} and {seen[rname]!r} share the basename {rname!r}, which "
                                       "the submission format cannot tell apart")
                seen[rname] = name
                gt = self._gt.get(rname) if self._gt is not None else None
                out.append(QueryItem(rname, self.image_file(name), cam, cond, gt, None))
        return out
