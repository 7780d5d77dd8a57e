"""Jacobians that carry a 6x6 pose covariance between frames (ROS order: x, y, z, rot_x, rot_y, rot_z).

Both layers use them: localization/pnp.py turns pycolmap's covariance into the world frame, the ROS nodes move it
to the robot's base frame or to the map frame of an /initialpose. Rotation perturbations are taken about world
(fixed-frame) axes throughout: R' = exp([psi]x) R.
"""
from __future__ import annotations

import numpy as np

from .types import Pose


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])


def covariance_to_world(cov_colmap: np.ndarray, pose: Pose) -> np.ndarray:
    """pycolmap's 6x6 pose covariance -> covariance of the camera pose in the world frame (ROS order).

    pycolmap returns the covariance of (h, dt): h is Ceres' quaternion tangent (half the rotation vector of a
    left perturbation R' = exp(2h) R, i.e. about camera axes) and dt the perturbation of cam_from_world's
    translation (checked against Monte Carlo in test_localization). With phi = 2h:
    d(centre) = -R^T [t]x phi - R^T dt and the world-frame rotation perturbation is psi = -R^T phi.
    """
    R, t = pose.R, pose.t
    A = np.zeros((6, 6))
    A[:3, :3] = -R.T @ _skew(t)
    A[:3, 3:] = -R.T
    A[3:, :3] = -R.T
    B = np.diag([2.0, 2.0, 2.0, 1.0, 1.0, 1.0])
    M = A @ B
    C = M @ cov_colmap @ M.T
    return 0.5 * (C + C.T)


def covariance_of_attached_frame(cov_cam: np.ndarray, map_from_cam: Pose, cam_from_body: Pose) -> np.ndarray:
    """World-frame covariance (ROS order) of a frame rigidly attached to the camera (e.g. base_link).

    The rotation block is unchanged (same world-frame rotation perturbation psi); the body origin moves with the
    lever arm ``l = R_wc @ t_cb``: d(p_body) = d(c_cam) + psi x l = d(c_cam) - [l]x psi.
    """
    lever = map_from_cam.R @ cam_from_body.t
    J = np.eye(6)
    J[:3, 3:] = -_skew(lever)
    C = J @ np.asarray(cov_cam, dtype=np.float64).reshape(6, 6) @ J.T
    return 0.5 * (C + C.T)


def covariance_in_frame(cov: np.ndarray, target_from_frame: Pose) -> np.ndarray:
    """Covariance of a pose given in ``frame`` -> the same pose's covariance in ``target`` (a fixed frame change).

    With p_t = R p_f + t and a world-axes rotation perturbation psi_t = R psi_f, both blocks rotate by R; no lever
    arm enters (that term belongs to a frame attached to the moving body: :func:`covariance_of_attached_frame`).
    """
    R = target_from_frame.R
    J = np.zeros((6, 6))
    J[:3, :3] = R
    J[3:, 3:] = R
    C = J @ np.asarray(cov, dtype=np.float64).reshape(6, 6) @ J.T
    return 0.5 * (C + C.T)
