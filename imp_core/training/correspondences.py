"""Ground-truth keypoint correspondences from depth maps and poses (as ``dump_megadepth`` in imp-release).

A keypoint of image 0 with valid depth is lifted to 3D, projected into image 1, and matched to the nearest
keypoint there within ``inlier_px`` (5 px); the match must survive the cycle check (the image-1 keypoint lifted
with its own depth lands within ``inlier_px`` of the image-0 keypoint) and one-to-one de-duplication (closest
first). Labels per keypoint: index of the partner, ``UNMATCHED`` (-1: projects outside the other image, is
occluded there, or is >= ``outlier_px`` (15 px) from every keypoint), or ``IGNORE`` (-2: no depth or ambiguous).
Keypoints are in the OpenCV pixel convention; ``K`` likewise; poses are cam_from_world.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np
from scipy.spatial import cKDTree

from ..types import Pose, backproject

UNMATCHED = -1
IGNORE = -2


@dataclass
class View:
    keypoints: np.ndarray  # (N, 2)
    depth: np.ndarray  # (H, W) metres, 0 = invalid
    K: np.ndarray  # (3, 3)
    pose: Pose  # cam_from_world


def sample_depth(depth: np.ndarray, kpts: np.ndarray) -> np.ndarray:
    """Depth at the rounded keypoint location (0 outside the map)."""
    h, w = depth.shape[:2]
    xy = np.round(kpts).astype(np.int64)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    z = np.zeros(len(kpts), np.float64)
    z[inside] = depth[xy[inside, 1], xy[inside, 0]]
    return z


def warp(src: View, dst: View, occlusion_tol: float = 0.1) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project ``src`` keypoints into ``dst``: (uv (N,2), has_depth (N,), visible (N,)).

    ``visible``: in front of the camera, inside the image and not occluded (projected depth within
    ``occlusion_tol`` relative of dst's depth map; pixels without dst depth count as visible)."""
    z = sample_depth(src.depth, src.keypoints)
    has_depth = z > 0
    X = backproject(src.K, src.pose, src.keypoints, z)
    Xc = dst.pose.transform(X)
    zc = Xc[:, 2]
    front = zc > 1e-6
    uvw = Xc @ dst.K.T
    uv = uvw[:, :2] / np.where(front, uvw[:, 2], 1.0)[:, None]
    h, w = dst.depth.shape[:2]
    inside = front & (uv[:, 0] >= -0.5) & (uv[:, 0] < w - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < h - 0.5)
    zd = np.zeros(len(z))
    zd[inside] = sample_depth(dst.depth, uv[inside])
    occluded = inside & (zd > 0) & (zc > zd * (1 + occlusion_tol))
    return uv, has_depth, has_depth & inside & ~occluded


def _labels(dist: np.ndarray, has_depth: np.ndarray, visible: np.ndarray, outlier_px: float) -> np.ndarray:
    lab = np.full(len(dist), IGNORE, np.int64)
    lab[has_depth & (~visible | (dist >= outlier_px))] = UNMATCHED
    return lab


def correspondences(v0: View, v1: View, inlier_px: float = 5.0, outlier_px: float = 15.0
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(matches (M, 2) int64, labels0 (N0,), labels1 (N1,)) between two views."""
    n0, n1 = len(v0.keypoints), len(v1.keypoints)
    if n0 == 0 or n1 == 0:
        return np.zeros((0, 2), np.int64), np.full(n0, IGNORE, np.int64), np.full(n1, IGNORE, np.int64)
    uv01, d0, vis0 = warp(v0, v1)
    uv10, d1, vis1 = warp(v1, v0)
    return match_projections(v0.keypoints, v1.keypoints, uv01, d0, vis0, uv10, d1, vis1, inlier_px, outlier_px)


def match_projections(kp0: np.ndarray, kp1: np.ndarray, uv01: np.ndarray, known0: np.ndarray, vis0: np.ndarray,
                      uv10: np.ndarray, known1: np.ndarray, vis1: np.ndarray, inlier_px: float = 5.0,
                      outlier_px: float = 15.0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels from keypoints projected into the other image (by depth + pose, or by a homography).

    ``uv01`` (N0, 2): image-0 keypoints in image 1; ``known0``: the projection is defined (depth known);
    ``vis0``: it lands visibly inside image 1; likewise ``uv10`` / ``known1`` / ``vis1``. Nearest keypoint within
    ``inlier_px`` that passes the cycle check, one-to-one (closest first)."""
    n0, n1 = len(kp0), len(kp1)
    lab0, lab1 = np.full(n0, IGNORE, np.int64), np.full(n1, IGNORE, np.int64)
    if n0 == 0 or n1 == 0:
        return np.zeros((0, 2), np.int64), lab0, lab1
    tree1, tree0 = cKDTree(kp1), cKDTree(kp0)
    dist01, nn01 = tree1.query(np.where(vis0[:, None], uv01, 1e9))
    dist10, nn10 = tree0.query(np.where(vis1[:, None], uv10, 1e9))
    dist01 = np.where(vis0, dist01, np.inf)
    dist10 = np.where(vis1, dist10, np.inf)
    lab0, lab1 = _labels(dist01, known0, vis0, outlier_px), _labels(dist10, known1, vis1, outlier_px)
    # candidates: forward within inlier_px, and the partner projected back lands within inlier_px (cycle check)
    cand = np.flatnonzero(dist01 < inlier_px)
    j = nn01[cand]
    back = np.linalg.norm(uv10[j] - kp0[cand], axis=1)
    ok = vis1[j] & (back < inlier_px)
    cand, j = cand[ok], j[ok]
    order = np.argsort(dist01[cand], kind="stable")
    used0, used1, pairs = set(), set(), []
    for i, jj in zip(cand[order], j[order]):
        if i in used0 or jj in used1:
            continue
        used0.add(int(i))
        used1.add(int(jj))
        pairs.append((int(i), int(jj)))
    matches = np.array(pairs, np.int64).reshape(-1, 2)
    lab0[matches[:, 0]] = matches[:, 1]
    lab1[matches[:, 1]] = matches[:, 0]
    return matches, lab0, lab1
