"""Is the reported covariance honest? Normalized estimation error squared (NEES) of localized poses.

A pose comes with a 6x6 covariance (world frame, ROS order x, y, z, rot_x, rot_y, rot_z; rotations about world
axes, ``imp_core.covariance``). If it is honest, the error e of the pose (centre error and world-axes rotation
vector) makes ``e^T C^-1 e`` chi-square distributed: for the position block (3 dof) median 2.37 and 95 % of the
poses within 7.81; the same for the rotation block. A much smaller median means the covariance is conservative
(wider than the errors; an EKF then under-weights the fixes), a larger one, or fewer than 95 % inside, that it is
over-confident (an EKF then trusts wrong fixes).
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from ..types import Pose

CHI2_3DOF_MEDIAN = 2.3660  # scipy.stats.chi2.ppf(0.5, 3)
CHI2_3DOF_95 = 7.8147  # scipy.stats.chi2.ppf(0.95, 3)


def pose_error_vector(est: Pose, gt: Pose) -> np.ndarray:
    """(6,) error of ``est`` against ``gt`` (both cam_from_world) in the covariance's terms: camera centre
    difference (world frame) and the rotation vector psi with R_wc(est) = exp([psi]x) R_wc(gt)."""
    from scipy.spatial.transform import Rotation

    psi = Rotation.from_matrix(est.R.T @ gt.R).as_rotvec()  # R_wc(est) R_wc(gt)^T
    return np.r_[est.center - gt.center, psi]


def nees(error: np.ndarray, covariance: np.ndarray) -> Dict[str, float]:
    """NEES of one pose's ``error`` (``pose_error_vector``) under its 6x6 ``covariance``: position and rotation
    blocks (3 dof each); inf where a block is singular."""
    e = np.asarray(error, np.float64).reshape(6)
    C = np.asarray(covariance, np.float64).reshape(6, 6)
    out = {}
    for key, s in (("position", slice(0, 3)), ("rotation", slice(3, 6))):
        try:
            out[key] = float(e[s] @ np.linalg.solve(C[s, s], e[s]))
        except np.linalg.LinAlgError:
            out[key] = float("inf")
    return out


def block_consistency(values: Sequence[float]) -> Dict[str, float]:
    """Summary of one block's NEES values (3 dof): the median (honest: 2.37), the share within the chi-square 95 %
    bound (honest: 0.95) and the variance scale that would make the median honest; NaN without values."""
    v = np.asarray(values, np.float64)
    if not len(v):
        return {"median": float("nan"), "within_95": float("nan"), "scale": float("nan")}
    med = float(np.median(v))
    return {"median": med, "within_95": float(np.mean(v <= CHI2_3DOF_95)), "scale": med / CHI2_3DOF_MEDIAN}


def consistency(values: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """Summary of per-pose ``nees`` values: count, and per block (``position_*``, ``rotation_*``) its
    ``block_consistency``."""
    out: Dict[str, float] = {"count": float(len(values))}
    for key in ("position", "rotation"):
        for k, v in block_consistency([x[key] for x in values]).items():
            out[f"{key}_{k}"] = v
    return out
