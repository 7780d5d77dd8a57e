"""The unknown-camera focal rule (pnp.refine_focal_length: auto): keep RANSAC's focal estimate when it fits better
than the guess, also when both explain every match (what the first rule, "more inliers and a lower residual",
missed on small images; benchmarks/bench_focal.py)."""
from __future__ import annotations

import numpy as np
import pytest

from imp_core.localization.pnp import estimate_pose
from imp_core.types import Camera, Pose


def _matches(f_true, w, h, n=300, depth=10.0, spread=4.0, noise=1.5, outliers=0.05, seed=0):
    """Matches of a camera with focal ``f_true`` (w x h, principal point at the centre) to points 10 +- 4 m away."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    uv = rng.uniform([0, 0], [w, h], (n, 2))
    z = depth + rng.uniform(-spread, spread, n)
    xc = np.c_[(uv - [w / 2, h / 2]) / f_true * z[:, None], z]
    R = Rotation.from_rotvec(rng.normal(0, 0.3, 3)).as_matrix()
    t = rng.normal(0, 1, 3)
    X = (xc - t) @ R  # world points: x_cam = R x_world + t
    obs = uv + rng.normal(0, noise, uv.shape)
    k = int(outliers * n)
    obs[:k] = rng.uniform([0, 0], [w, h], (k, 2))
    return obs - 0.5, X, Pose(R, t)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_estimate_kept_when_both_models_explain_every_match(seed):
    """A 248-pixel-wide image whose focal is 0.87x the guess: the 12-pixel RANSAC threshold lets the guess keep as
    many inliers as the estimate, so counting inliers kept the guess (15 % off); the likelihood-ratio test on the
    common inliers keeps the estimate."""
    w, h = 248, 184
    f_true = 0.87 * 1.2 * w
    uv, X, _ = _matches(f_true, w, h, seed=seed)
    guess = Camera("SIMPLE_PINHOLE", w, h, [1.2 * w, w / 2, h / 2])
    fixed = estimate_pose(uv, X, guess)
    assert fixed.num_inliers >= 0.9 * len(uv)  # the guess explains (nearly) every match
    auto = estimate_pose(uv, X, guess, {"refine_focal_length": "auto"})
    assert auto.focal_estimated
    assert abs(auto.camera.focal[0] / f_true - 1) < 0.02


def test_right_guess_with_every_match_explained_stays_within_noise():
    """The guess right and every match explained: whichever model is kept, the focal is within 2 %."""
    w, h = 640, 480
    uv, X, _ = _matches(1.2 * w, w, h, seed=3)
    guess = Camera("SIMPLE_PINHOLE", w, h, [1.2 * w, w / 2, h / 2])
    auto = estimate_pose(uv, X, guess, {"refine_focal_length": "auto"})
    assert abs(auto.camera.focal[0] / (1.2 * w) - 1) < 0.02
