"""Match overlays: what the localizer used, drawn on the query (debug images, `imp localize --image`)."""
from __future__ import annotations

import numpy as np

from ..types import Camera, LocalizationResult


def draw_localization(image: np.ndarray, camera: Camera, result: LocalizationResult) -> np.ndarray:
    """RGB copy of ``image`` with the PnP inliers (green dots), a red line from each to its map point
    reprojected by the estimated pose (the residual), and a status line."""
    import cv2

    img = np.ascontiguousarray(image.copy() if image.ndim == 3 else np.stack([image] * 3, -1))
    if result.success and result.inlier_keypoints is not None and len(result.inlier_keypoints):
        from .pnp import project_points

        proj = project_points(result.pose, camera, result.inlier_points3D)
        for (u, v), (pu, pv) in zip(result.inlier_keypoints, proj):
            p0 = (int(round(u)), int(round(v)))
            if np.isfinite(pu):
                p1 = (int(round(pu)), int(round(pv)))
                cv2.line(img, p0, p1, (255, 60, 60), 1, cv2.LINE_AA)
            cv2.circle(img, p0, 2, (40, 255, 40), -1, cv2.LINE_AA)
    ok = result.success
    text = (f"{result.status} {result.mode} conf {result.confidence:.2f} inliers {result.num_inliers}/"
            f"{result.num_matches} {result.timings.get('total', 0):.0f} ms")
    cv2.putText(img, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(img, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (40, 255, 40) if ok else (255, 60, 60), 2,
                cv2.LINE_AA)
    return img
