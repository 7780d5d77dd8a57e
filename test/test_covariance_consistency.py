"""The covariance honesty check (``imp_core.eval.covariance``) and the PnP covariance it checks: the check tells an
honest covariance from a scaled one, and with Gaussian pixel noise the localizer's covariance is not over-confident."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from imp_core.eval.covariance import CHI2_3DOF_MEDIAN, consistency, nees, pose_error_vector
from imp_core.localization.pnp import estimate_pose
from imp_core.types import Camera, Pose


def _gt():
    return Pose.from_center(Rotation.from_euler("xyz", [5, -20, 3], degrees=True).as_matrix(), [1.0, 0.5, -10.0])


def test_error_vector_follows_the_covariance_convention():
    """R_wc(est) = exp([psi]x) R_wc(gt), centre difference in the world frame (imp_core.covariance)."""
    gt = _gt()
    psi = np.array([0.01, -0.02, 0.005])
    dc = np.array([0.3, -0.1, 0.2])
    R_wc = Rotation.from_rotvec(psi).as_matrix() @ gt.R.T
    est = Pose.from_center(R_wc.T, gt.center + dc)
    assert np.allclose(pose_error_vector(est, gt), np.r_[dc, psi], atol=1e-9)
    assert np.allclose(pose_error_vector(gt, gt), 0)


def test_consistency_tells_honest_from_scaled_covariances():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 6))
    C = A @ A.T + 0.1 * np.eye(6)
    errors = rng.multivariate_normal(np.zeros(6), C, size=4000)
    honest = consistency([nees(e, C) for e in errors])
    assert honest["count"] == 4000
    for k in ("position", "rotation"):
        assert honest[f"{k}_median"] == pytest.approx(CHI2_3DOF_MEDIAN, rel=0.08)
        assert honest[f"{k}_within_95"] == pytest.approx(0.95, abs=0.015)
        assert honest[f"{k}_scale"] == pytest.approx(1.0, rel=0.08)
    wide = consistency([nees(e, 4 * C) for e in errors])  # conservative: 4x the variance
    assert wide["position_scale"] == pytest.approx(0.25, rel=0.08) and wide["position_within_95"] > 0.99
    narrow = consistency([nees(e, C / 4) for e in errors])  # over-confident
    assert narrow["rotation_scale"] == pytest.approx(4.0, rel=0.08) and narrow["rotation_within_95"] < 0.6
    singular = nees(np.ones(6), np.zeros((6, 6)))
    assert singular == {"position": float("inf"), "rotation": float("inf")}


def test_pnp_covariance_is_never_over_confident_under_gaussian_pixel_noise():
    """End to end: PnP on 2D-3D matches with Gaussian pixel noise; the covariance estimate_pose reports (scaled by
    the measured residual) holds the camera centre and rotation errors over many draws. It is conservative, not
    exact: pycolmap's refinement uses a Cauchy loss of scale 1 px, so its covariance carries the robust weights
    (less information than the least-squares one) while the errors are those of the robust estimate (NEES median
    0.6 x the chi-square one at 1 px noise, 0.45 x at 3 px). What must not happen is over-confidence."""
    rng = np.random.default_rng(1)
    cam = Camera("SIMPLE_PINHOLE", 1000, 700, [800.0, 500.0, 350.0])
    gt = _gt()
    for noise_px in (0.5, 1.0, 3.0):
        vals = []
        for _ in range(200):
            X = gt.inverse().transform(rng.uniform([-4, -3, 6], [4, 3, 16], (60, 3)))  # in front of the camera
            xc = gt.transform(X)
            uv = xc[:, :2] / xc[:, 2:] * 800.0 + [499.5, 349.5] + rng.normal(0, noise_px, (60, 2))
            res = estimate_pose(uv, X, cam, {"min_covariance_sigma_px": 0.0})
            vals.append(nees(pose_error_vector(res.pose, gt), res.covariance))
        s = consistency(vals)
        for k in ("position", "rotation"):
            assert 0.3 < s[f"{k}_scale"] < 1.05, (noise_px, s)
            assert s[f"{k}_within_95"] >= 0.95, (noise_px, s)


def test_rotation_nees_of_a_leave_one_out_photo_is_taken_in_one_frame():
    """test_sacre_coeur.rotation_nees: the pose and covariance of a photo localized in a 9-image map (its own frame)
    are carried into the 10-image map's frame by the rotation alignment before the NEES is taken."""
    from types import SimpleNamespace

    from test_sacre_coeur import rotation_nees

    rng = np.random.default_rng(3)
    R_align = Rotation.from_rotvec(rng.normal(size=3)).as_matrix()  # full.R ~ sub.R @ R_align.T
    gt = _gt()  # the photo in the 10-image map
    psi = np.array([0.002, -0.001, 0.003])  # its rotation error there, about that map's axes
    R_wc_est_full = Rotation.from_rotvec(psi).as_matrix() @ gt.R.T
    est_sub = Pose(R_wc_est_full.T @ R_align, np.zeros(3))  # the same orientation in the 9-image map's frame
    A = rng.normal(size=(3, 3))
    C_full = 1e-6 * (A @ A.T + np.eye(3))
    cov_sub = np.eye(6)
    cov_sub[3:, 3:] = R_align.T @ C_full @ R_align  # the covariance the localizer reports, about the 9-map's axes
    res = SimpleNamespace(pose=est_sub, covariance=cov_sub)
    assert rotation_nees(res, gt, R_align) == pytest.approx(psi @ np.linalg.solve(C_full, psi), rel=1e-6)
