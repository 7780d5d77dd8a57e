"""Which database images to match with each other when building a map."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..types import Pose


def pairs_exhaustive(names: Sequence[str]) -> List[Tuple[str, str]]:
    return [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]


def pairs_from_poses(poses: Dict[str, Pose], num_neighbors: int = 5, max_angle_deg: float = 60.0,
                     max_distance: float = float("inf")) -> List[Tuple[str, str]]:
    """Each image with its ``num_neighbors`` closest cameras (by centre distance) that look the same way.

    Returns unique unordered pairs (covisibility from known poses, like hloc's ``pairs_from_poses``).
    """
    names = sorted(poses)
    if len(names) < 2:
        return []
    centers = np.stack([poses[n].center for n in names])
    axes = np.stack([poses[n].R[2] for n in names])  # viewing direction in world = third row of R
    dist = np.linalg.norm(centers[:, None] - centers[None], axis=-1)
    cos = np.clip(axes @ axes.T, -1, 1)
    ok = (np.degrees(np.arccos(cos)) <= max_angle_deg) & (dist <= max_distance)
    np.fill_diagonal(ok, False)
    out = set()
    for i in range(len(names)):
        cand = np.where(ok[i])[0]
        cand = cand[np.argsort(dist[i, cand])][:num_neighbors]
        for j in cand:
            out.add((names[min(i, j)], names[max(i, j)]))
    return sorted(out)


def relative_fundamental(pose0: Pose, pose1: Pose, K0: np.ndarray, K1: np.ndarray) -> np.ndarray:
    """F with x1^T F x0 = 0 (pixel coordinates, OpenCV convention) from two cam_from_world poses."""
    rel = pose1 * pose0.inverse()
    t = rel.t
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    E = tx @ rel.R
    return np.linalg.inv(K1).T @ E @ np.linalg.inv(K0)


def sampson_error(F: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """Sampson distance (pixels) of correspondences x0 (N,2) <-> x1 (N,2) under F."""
    h0 = np.concatenate([x0, np.ones((len(x0), 1))], 1)
    h1 = np.concatenate([x1, np.ones((len(x1), 1))], 1)
    Fx0 = h0 @ F.T
    Ftx1 = h1 @ F
    num = np.sum(h1 * Fx0, axis=1) ** 2
    den = Fx0[:, 0] ** 2 + Fx0[:, 1] ** 2 + Ftx1[:, 0] ** 2 + Ftx1[:, 1] ** 2
    return np.sqrt(num / np.maximum(den, 1e-12))
