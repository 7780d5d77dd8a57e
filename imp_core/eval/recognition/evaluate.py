"""Score a recognition model on query images: ground-truth label maps come from depth + pose (the map's
labelled 3D points, nearest within a radius) or from stored masks (our uint16 PNGs or LBR colour PNGs)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple, Union

import numpy as np

from ...imageio import read_image
from ...mapping import LocalizationMap
from ...recognition.instances import load_point_labels
from ...recognition.masks import dense_labels_from_depth
from .metrics import RecognitionScore


def point_spacing(xyz: np.ndarray, sample: int = 2000, seed: int = 0) -> float:
    """Median distance from a map point to its nearest neighbour (sets the depth-GT radius)."""
    from scipy.spatial import cKDTree

    xyz = np.asarray(xyz, np.float64)
    if len(xyz) < 2:
        raise ValueError("the map needs at least 2 labelled 3D points")
    rng = np.random.default_rng(seed)
    sel = xyz[rng.choice(len(xyz), min(sample, len(xyz)), replace=False)]
    d, _ = cKDTree(xyz).query(sel, k=2)
    return float(np.median(d[:, 1]))


class DepthGroundTruth:
    """Label maps for images with depth and pose, in the label space of an annotated map."""

    def __init__(self, map_dir: Union[str, Path], radius_factor: float = 4.0):
        pids, plabels, _ = load_point_labels(map_dir)
        lmap = LocalizationMap.load(map_dir)
        xyz = lmap.points3D_xyz(pids)
        ok = np.isfinite(xyz).all(1)
        self.xyz, self.labels = xyz[ok], plabels[ok]
        self.max_dist = radius_factor * point_spacing(self.xyz)

    def __call__(self, depth: np.ndarray, camera, pose) -> np.ndarray:
        return dense_labels_from_depth(depth, camera, pose, self.xyz, self.labels, self.max_dist)


def evaluate_recognition(recognizer: Any, items: Iterable[Tuple[np.ndarray, np.ndarray]],
                         progress: bool = False, total: Optional[int] = None) -> Dict[str, float]:
    """``items``: (RGB image, ground-truth label map at the image size) -> mIoU, top-1, pixel accuracy."""
    from tqdm import tqdm

    score = RecognitionScore(recognizer.num_classes, recognizer.conf["min_area"])
    for image, gt in tqdm(items, total=total, desc="recognition eval", disable=not progress, leave=False):
        rec = recognizer.predict(image)
        score.add(rec.label_map, gt, rec.instances)
    return score.summary()


def query_items(dataset: Any, queries: Sequence[Any], gt: DepthGroundTruth,
                load_image: Callable[[Any], np.ndarray]):
    """(image, GT label map) for dataset queries whose depth is known (e.g. the synthetic world)."""
    if not hasattr(dataset, "depth"):
        raise ValueError(f"{dataset!r} has no depth maps; evaluate with stored ground-truth masks instead")
    for q in queries:
        if q.gt_pose is None:
            raise ValueError(f"query {q.name} has no ground-truth pose; cannot derive its label map")
        yield load_image(q), gt(dataset.depth(q.name), q.camera, q.gt_pose)


def evaluate_per_condition(recognizer: Any, dataset: Any, map_dir: Union[str, Path],
                           conditions: Sequence[str], limit: Optional[int] = None,
                           progress: bool = True) -> Dict[str, Dict[str, float]]:
    gt = DepthGroundTruth(map_dir)
    out: Dict[str, Dict[str, float]] = {}
    for cond in conditions:
        qs = [q for q in dataset.queries() if q.condition == cond][:limit]
        if not qs:
            raise ValueError(f"{dataset!r} has no queries with condition {cond!r}")
        out[cond] = evaluate_recognition(recognizer, query_items(dataset, qs, gt, lambda q: read_image(q.path)),
                                         progress, len(qs))
    return out
