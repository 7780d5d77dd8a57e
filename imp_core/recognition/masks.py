"""Label maps and instance mask files: paint keypoint labels into a dense mask, label maps from depth + pose, the
labels of keypoints under a mask, a label map's instance layout; our uint16 mask PNGs and LBR's colour-coded release
masks (PNG colour codes + ``code gid`` list, read by ``read_code_gid`` / ``read_lbr_mask``)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np

from ..types import Camera, Pose, backproject


def fill_label_mask(keypoints: np.ndarray, labels: np.ndarray, size: Tuple[int, int], radius: float) -> np.ndarray:
    """Label image (h, w) int32 from labelled pixels: each pixel takes the label of the nearest labelled
    keypoint within ``radius`` pixels, 0 elsewhere."""
    from scipy.ndimage import distance_transform_edt

    w, h = int(size[0]), int(size[1])
    mask = np.zeros((h, w), np.int32)
    kp = np.rint(np.asarray(keypoints, np.float64).reshape(-1, 2)).astype(np.int64)
    labels = np.asarray(labels).reshape(-1)
    ok = (labels > 0) & (kp[:, 0] >= 0) & (kp[:, 0] < w) & (kp[:, 1] >= 0) & (kp[:, 1] < h)
    if not ok.any():
        return mask
    seeds = np.zeros((h, w), np.int32)
    seeds[kp[ok, 1], kp[ok, 0]] = labels[ok]
    dist, (iy, ix) = distance_transform_edt(seeds == 0, return_indices=True)
    near = seeds[iy, ix]
    return np.where(dist <= radius, near, 0).astype(np.int32)


def dense_labels_from_depth(depth: np.ndarray, camera: Camera, pose: Pose, points_xyz: np.ndarray,
                            point_labels: np.ndarray, max_dist: float) -> np.ndarray:
    """Ground-truth label image from a depth map: back-project every valid pixel, take the label of the
    nearest labelled map point within ``max_dist`` metres (0 otherwise). Used to score recognition."""
    from scipy.spatial import cKDTree

    depth = np.asarray(depth, np.float32)
    h, w = depth.shape
    ys, xs = np.nonzero(depth > 0)
    world = backproject(camera.K, pose, np.stack([xs, ys], 1), depth[ys, xs])
    out = np.zeros((h, w), np.int32)
    if len(world) == 0 or len(points_xyz) == 0:
        return out
    d, i = cKDTree(np.asarray(points_xyz, np.float64)).query(world, distance_upper_bound=max_dist)
    hit = np.isfinite(d)
    out[ys[hit], xs[hit]] = np.asarray(point_labels)[i[hit]]
    return out


def keypoint_labels(keypoints: np.ndarray, label_map: np.ndarray) -> np.ndarray:
    """Instance label under each keypoint (nearest pixel; 0 outside the image)."""
    h, w = label_map.shape[:2]
    kp = np.rint(np.asarray(keypoints, np.float64).reshape(-1, 2)).astype(np.int64)
    ok = (kp[:, 0] >= 0) & (kp[:, 0] < w) & (kp[:, 1] >= 0) & (kp[:, 1] < h)
    out = np.zeros(len(kp), np.int32)
    out[ok] = label_map[kp[ok, 1], kp[ok, 0]]
    return out


def save_mask(path: Union[str, Path], mask: np.ndarray) -> None:
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mask.max(initial=0) > 65535 or mask.min(initial=0) < 0:
        raise ValueError(f"instance mask {path}: labels must lie in 0..65535")
    if not cv2.imwrite(str(path), mask.astype(np.uint16)):
        raise OSError(f"cannot write instance mask {path}")


def read_mask(path: Union[str, Path]) -> np.ndarray:
    import cv2

    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise FileNotFoundError(f"instance mask not found or unreadable: {path}")
    if m.ndim != 2:
        raise ValueError(f"instance mask {path} must be single-channel (16-bit ids), got shape {m.shape}")
    return m.astype(np.int32)


def read_code_gid(path: Union[str, Path]) -> Dict[int, int]:
    """LBR ``*_grgb_gid*.txt``: one ``code gid`` pair per line (code = R*65536 + G*256 + B)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LBR code->gid list not found: {path}")
    out: Dict[int, int] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        tok = line.split()
        if not tok:
            continue
        if len(tok) != 2:
            raise ValueError(f"{path}:{n}: expected 'code gid', got {line!r}")
        try:
            out[int(tok[0])] = int(tok[1])
        except ValueError as e:
            raise ValueError(f"{path}:{n}: expected two integers, got {line!r}") from e
    return out


def read_lbr_mask(path: Union[str, Path], code_to_gid: Mapping[int, int]) -> np.ndarray:
    """An LBR colour mask PNG -> int32 ids (colours missing from the list -> 0)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)  # BGR
    if img is None:
        raise FileNotFoundError(f"LBR mask not found or unreadable: {path}")
    code = img[..., 2].astype(np.int64) * 65536 + img[..., 1].astype(np.int64) * 256 + img[..., 0]
    uniq, inv = np.unique(code, return_inverse=True)
    ids = np.array([code_to_gid.get(int(c), 0) for c in uniq], np.int32)
    return ids[inv].reshape(code.shape)


def layout_histogram(label_map: np.ndarray, confidence: Optional[np.ndarray], num_classes: int) -> np.ndarray:
    """A query's instance layout: the recognized pixels per instance weighted by their confidence (column 0, no
    instance, stays 0), L2-normalised. Its dot product with a database image's ``InstanceIndex.layouts`` row says
    how much the two images show the same instances in the same proportions: several instances agreeing tell the
    right place from a look-alike that shares one facade with it."""
    lab = np.asarray(label_map).reshape(-1).astype(np.int64)
    w = None if confidence is None else np.asarray(confidence, np.float64).reshape(-1)
    keep = (lab > 0) & (lab < num_classes)
    h = np.bincount(lab[keep], weights=None if w is None else w[keep], minlength=num_classes)[:num_classes]
    h = h.astype(np.float32)
    return h / max(float(np.linalg.norm(h)), 1e-12)
