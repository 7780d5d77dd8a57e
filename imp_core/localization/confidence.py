"""How much to trust a PnP pose: quality measures of the inlier set and one confidence score in [0, 1].

An absolute inlier count is a poor gate: 30 inliers out of 948 matches, all in one corner of the image, came
back OK 51.7 degrees off. What separates true poses from wrong ones is how the inliers sit, not how many:

- ``inlier_ratio``: inliers / 2D-3D matches. Wrong poses are RANSAC's best guess among mostly wrong matches;
  for a true pose a sizeable share of the matches agree.
- ``coverage``: fraction of the cells of a 6x6 grid over the image that hold an inlier. Inliers packed in one
  small region constrain rotation poorly and are what repeated structure produces.
- ``rotation_std_deg``: the 1-sigma rotation uncertainty from the pose covariance (scaled by the measured
  reprojection noise). Inliers that are few, far, noisy or bunched up leave the rotation poorly determined; on
  the synthetic world this separates wrong poses best.
- ``num_inliers``.

The score (see :func:`confidence_score`) is a logistic model of these, fitted on the synthetic world (not on
the real photos, which only evaluate it). The localizer's ``acceptance.min_confidence`` (0.5: more likely right
than wrong) is the threshold.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

GRID = 6


def inlier_coverage(points2D: np.ndarray, width: int, height: int, grid: int = GRID) -> float:
    """Fraction of the ``grid`` x ``grid`` image cells holding at least one of ``points2D`` (OpenCV pixels)."""
    if points2D is None or len(points2D) == 0:
        return 0.0
    p = np.asarray(points2D, dtype=np.float64)
    cx = np.clip((p[:, 0] + 0.5) / width * grid, 0, grid - 1).astype(int)
    cy = np.clip((p[:, 1] + 0.5) / height * grid, 0, grid - 1).astype(int)
    return float(len(np.unique(cy * grid + cx))) / (grid * grid)


def confidence_features(num_inliers: float, inlier_ratio: float, coverage: float,
                        rotation_std_deg: float) -> np.ndarray:
    """The inputs of the confidence model: [log inliers, inlier ratio, coverage, log rotation std (deg)]."""
    rot = rotation_std_deg if np.isfinite(rotation_std_deg) and rotation_std_deg > 0 else 10.0
    return np.array([np.log(max(num_inliers, 1.0)), inlier_ratio, coverage, np.log(max(rot, 1e-3))])


def confidence_score(num_inliers: float, inlier_ratio: float, coverage: float, rotation_std_deg: float) -> float:
    """Confidence in [0, 1] that the pose is right (within 5 deg and 10 % of the scene depth); see the module doc."""
    x = confidence_features(num_inliers, inlier_ratio, coverage, rotation_std_deg)
    z = CONF_MODEL["bias"] + float(np.dot(CONF_MODEL["weights"], x))
    return float(1.0 / (1.0 + np.exp(-z)))


#: logistic model fitted on the synthetic world by ``benchmarks/bench_confidence.py --fit`` (sift+nn and xfeat+nn
#: maps; day and night queries; given and unknown focal; retrieved references plus hard negatives from references
#: 20 m away, which the repetitive street makes look right). Weights for [log inliers, inlier ratio, coverage,
#: log rotation std]; never fitted on real photos.
CONF_MODEL: Dict[str, Any] = {"bias": -2.023, "weights": [0.092, 0.788, 0.011, -2.023]}


def pose_quality(pnp, num_matches: int, contributions: np.ndarray) -> Dict[str, float]:
    """Quality measures of one PnP result (``pnp``: PnPResult on ``num_matches`` 2D-3D matches, ``contributions``:
    its inliers per reference image) and its ``confidence``."""
    k = int(pnp.num_inliers)
    ratio = k / max(int(num_matches), 1)
    cov = inlier_coverage(pnp.inlier_points2D, pnp.camera.width, pnp.camera.height)
    refs = int((np.asarray(contributions) >= 5).sum())
    rot_std = float("nan")
    if pnp.covariance is not None:
        rot_std = float(np.degrees(np.sqrt(max(np.linalg.eigvalsh(pnp.covariance[3:, 3:]).max(), 0.0))))
    out = {"num_inliers": float(k), "inlier_ratio": float(ratio), "coverage": cov, "references_agreeing": float(refs),
           "residual_px": float(pnp.residual_sigma_px), "rotation_std_deg": rot_std}
    out["confidence"] = confidence_score(k, ratio, cov, rot_std)
    return out
