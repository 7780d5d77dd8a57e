"""Aachen Day-Night v1.1 layout (as used by hloc and LBR)::

    images/images_upright/db/*.jpg
    images/images_upright/query/{day/{milestone,nexus4,nexus5x},night/nexus5x}/*.jpg
    3D-models/aachen_v_1_1/{cameras,images,points3D}.bin     COLMAP model, names relative to images_upright/
    queries/{day,night}_time_queries_with_intrinsics.txt    name MODEL w h params

Query names in result files are basenames (as hloc writes them for Aachen). Ground truth is not public; an
optional ``gt/query_poses.txt`` (result names) is read when present (e.g. in copies exported from a synthetic world).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

from ..types import Pose
from .base import DatasetError, LocalizationDataset, QueryItem
from .colmap_io import read_poses, read_query_list

MODEL = Path("3D-models/aachen_v_1_1")
IMAGES = Path("images/images_upright")
QUERY_LISTS = {"day": "queries/day_time_queries_with_intrinsics.txt",
               "night": "queries/night_time_queries_with_intrinsics.txt"}
GT = Path("gt/query_poses.txt")


def is_aachen(root) -> bool:
    root = Path(root)
    return (root / MODEL).is_dir() and (root / IMAGES).is_dir()


def result_name(list_name: str) -> str:
    """Name of a query in a visuallocalization.net result file for Aachen: the basename."""
    return Path(list_name).name


class AachenDataset(LocalizationDataset):
    kind = "aachen_v1.1"

    def __init__(self, root) -> None:
        super().__init__(Path(root))
        if not is_aachen(self.root):
            raise DatasetError(f"{self.root} is not an Aachen v1.1 layout (needs {MODEL}/ and {IMAGES}/)")
        self._gt: Optional[Dict[str, Pose]] = read_poses(self.root / GT) if (self.root / GT).is_file() else None

    @property
    def reference_model_dir(self) -> Path:
        return self.root / MODEL

    @property
    def image_root(self) -> Path:
        return self.root / IMAGES

    @property
    def conditions(self) -> List[str]:
        return [c for c, rel in QUERY_LISTS.items() if (self.root / rel).is_file()]

    def queries(self, condition: Optional[str] = None) -> List[QueryItem]:
        conds = self.conditions if condition is None else [condition]
        out = []
        for cond in conds:
            if cond not in QUERY_LISTS:
                raise ValueError(f"unknown Aachen condition {cond!r}; available: {list(QUERY_LISTS)}")
            path = self.root / QUERY_LISTS[cond]
            if not path.is_file():
                raise DatasetError(f"Aachen query list {path} does not exist")
            for name, cam in read_query_list(path).items():
                rname = result_name(name)
                gt = self._gt.get(rname) if self._gt is not None else None
                out.append(QueryItem(rname, self.image_root / name, cam, cond, gt, None))
        return out
