"""Overlays of what the localizer used, drawn on the query (debug images, `imp localize --image`, the ROS node's
``~/overlay``): PnP inliers with their reprojection residuals, and the recognized instances in their colours."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ..types import Camera, LocalizationResult
from .pnp import project_points


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image.copy() if image.ndim == 3 else np.stack([image] * 3, -1))


def instance_colors(ids: Union[Sequence[int], np.ndarray]) -> np.ndarray:
    """(N, 3) uint8 RGB colour of each instance id: fixed per id (the same instance has the same colour in every
    frame and every node), neighbouring ids far apart in hue (golden-ratio steps), 0 (no instance) black."""
    arr = np.asarray(ids, np.int64).reshape(-1)
    h = ((arr * 0.6180339887) % 1.0) * 6.0
    s = 0.55 + 0.45 * ((arr * 7) % 3) / 2  # three saturation/value levels tell apart ids of close hue
    v = 1.0 - 0.25 * ((arr * 5) % 2)
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    sector = np.floor(h).astype(int) % 6
    table = np.stack([np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    rgb = np.round(255 * table[sector, np.arange(len(arr))]).astype(np.uint8)  # HSV -> RGB, per id (exact)
    rgb[arr <= 0] = 0
    return rgb


def _draw_inliers(img: np.ndarray, camera: Optional[Camera], result: LocalizationResult) -> None:
    """Green dot at each PnP inlier, red line from it to its map point reprojected by the pose (the residual), with
    the result's camera (``camera`` when it has none)."""
    import cv2

    cam = result.camera or camera
    if not (result.success and result.pose is not None and cam is not None and result.inlier_keypoints is not None
            and result.inlier_points3D is not None and len(result.inlier_keypoints)):
        return

    proj = project_points(result.pose, cam, result.inlier_points3D)
    for (u, v), (pu, pv) in zip(result.inlier_keypoints, proj):
        p0 = (int(round(u)), int(round(v)))
        if np.isfinite(pu) and np.isfinite(pv):
            cv2.line(img, p0, (int(round(pu)), int(round(pv))), (255, 60, 60), 1, cv2.LINE_AA)
        cv2.circle(img, p0, 2, (40, 255, 40), -1, cv2.LINE_AA)


def _text(img: np.ndarray, text: str, org: Tuple[int, int], color, scale: float = 0.6) -> None:
    import cv2

    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 2, cv2.LINE_AA)


def _status(result: LocalizationResult) -> str:
    return (f"{result.status} {result.mode} conf {result.confidence:.2f} inliers {result.num_inliers}/"
            f"{result.num_matches} {result.timings.get('total', 0):.0f} ms")


def draw_localization(image: np.ndarray, camera: Optional[Camera], result: LocalizationResult) -> np.ndarray:
    """RGB copy of ``image`` with the PnP inliers (green dots), a red line from each to its map point
    reprojected by the estimated pose (the residual), and a status line. ``camera``: the query's camera, used when
    the result has none (None when the intrinsics were unknown: a result localized with them has its camera)."""
    img = _rgb(image)
    _draw_inliers(img, camera, result)
    _text(img, _status(result), (8, 24), (40, 255, 40) if result.success else (255, 60, 60))
    return img


LABEL_MAP_MAX_SIDE = 256  # results keep the instance label map at most this large (a batch keeps every result)


def compact_labels(label_map: Optional[np.ndarray], max_side: int = LABEL_MAP_MAX_SIDE) -> Optional[np.ndarray]:
    """An instance label map as a result keeps it: uint16 (ids above 65535 saturate), nearest-neighbour downsampled
    so that its longer side is at most ``max_side`` (a recognizer's own output is that coarse: 160x120 by default)."""
    import cv2

    if label_map is None:
        return None
    lab = np.clip(np.asarray(label_map), 0, 65535).astype(np.uint16)
    h, w = lab.shape[:2]
    s = max(h, w) / float(max_side)
    if s > 1:
        lab = cv2.resize(lab, (max(1, int(round(w / s))), max(1, int(round(h / s)))), interpolation=cv2.INTER_NEAREST)
    return lab


def expand_labels(label_map: np.ndarray, width: int, height: int) -> np.ndarray:
    """A (compact) label map at ``width`` x ``height`` (nearest neighbour), int32."""
    import cv2

    lab = np.asarray(label_map)
    if lab.shape[:2] != (height, width):
        lab = cv2.resize(lab.astype(np.uint16), (int(width), int(height)), interpolation=cv2.INTER_NEAREST)
    return lab.astype(np.int32)


def instance_regions(label_map: np.ndarray, ids: Sequence[int]) -> List[Tuple[float, Tuple[int, int, int, int]]]:
    """(share of the image, bounding box (x, y, w, h)) of each instance id in ``label_map``; (0, (0, 0, 0, 0)) for
    an id with no pixel."""
    out = []
    lab = np.asarray(label_map)
    for i in ids:
        ys, xs = np.nonzero(lab == int(i))
        if len(xs) == 0:
            out.append((0.0, (0, 0, 0, 0)))
            continue
        x0, y0 = int(xs.min()), int(ys.min())
        out.append((len(xs) / lab.size, (x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1)))
    return out


def draw_instances(image: np.ndarray, label_map: Optional[np.ndarray], camera: Camera,
                   result: LocalizationResult, alpha: float = 0.45) -> np.ndarray:
    """RGB copy of ``image`` with each recognized instance's pixels (``label_map``, at any resolution) blended
    with its colour (``instance_colors``, weight ``alpha``), its outline and id, then the PnP inliers and residuals
    and the status line of ``draw_localization``. Pixels of no instance (label 0) keep the query's values, except
    where a dot, line or text is drawn."""
    import cv2

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay alpha must be in [0, 1], got {alpha}")
    img = _rgb(image)
    if label_map is not None:
        lab = np.asarray(label_map)
        if lab.ndim != 2:
            raise ValueError(f"instance label map must be (H, W), got shape {lab.shape}")
        lab = expand_labels(lab, img.shape[1], img.shape[0])  # a result's compact map
        ids = np.unique(lab[lab > 0])
        if len(ids):
            lut = np.zeros((int(ids.max()) + 1, 3), np.uint8)
            lut[ids] = instance_colors(ids)
            on = lab > 0
            col = lut[lab[on]].astype(np.float32)
            img[on] = np.clip((1 - alpha) * img[on].astype(np.float32) + alpha * col + 0.5, 0, 255).astype(np.uint8)
            for i, c in zip(ids, lut[ids]):
                contours, _ = cv2.findContours((lab == i).astype(np.uint8), cv2.RETR_EXTERNAL,
                                               cv2.CHAIN_APPROX_SIMPLE)
                cv2.drawContours(img, contours, -1, tuple(int(v) for v in c), 1, cv2.LINE_AA)
        ranked = [int(i) for i, _ in result.instances]
        for i, (area, (x, y, w, h)) in zip(ranked, instance_regions(lab, ranked)):
            if area > 0:
                c = tuple(int(v) for v in instance_colors([i])[0])
                _text(img, f"#{i}", (x + w // 2 - 12, y + h // 2 + 6), c, 0.5)
    _draw_inliers(img, camera, result)
    _text(img, _status(result), (8, 24), (40, 255, 40) if result.success else (255, 60, 60))
    return img
