"""PnP conf: RANSAC minimum trials / confidence and refinement iterations reach pycolmap; bad values are refused."""
from __future__ import annotations

import numpy as np
import pytest

from imp_core.localization.pnp import DEFAULT_PNP_CONF, estimate_pose
from imp_core.types import Camera, Pose, pose_error


def _problem(outliers=0.3, seed=0):
    rng = np.random.default_rng(seed)
    cam = Camera("PINHOLE", 640, 480, [500, 500, 320, 240])
    gt = Pose.from_center(np.eye(3), [0.5, -0.2, -8.0])
    X = rng.uniform([-4, -3, 0], [4, 3, 6], (600, 3))
    uv = gt.transform(X)
    uv = uv[:, :2] / uv[:, 2:] * 500 + [319.5, 239.5] + rng.normal(0, 0.7, (len(X), 2))
    bad = rng.random(len(X)) < outliers
    uv[bad] = rng.uniform([0, 0], [640, 480], (bad.sum(), 2))
    return uv, X, cam, gt


def test_defaults_are_colmaps_and_explicit_defaults_change_nothing():
    uv, X, cam, gt = _problem()
    assert (DEFAULT_PNP_CONF["min_iterations"], DEFAULT_PNP_CONF["confidence"],
            DEFAULT_PNP_CONF["refine_iterations"]) == (100, 0.99999, 100)
    a = estimate_pose(uv, X, cam)
    b = estimate_pose(uv, X, cam, {"min_iterations": 100, "confidence": 0.99999, "refine_iterations": 100})
    assert np.array_equal(a.inliers, b.inliers)
    assert pose_error(a.pose, b.pose) == (0.0, 0.0)
    assert pose_error(a.pose, gt)[0] < 0.05


def test_refinement_iterations_and_minimum_trials_are_used():
    uv, X, cam, gt = _problem()
    full = estimate_pose(uv, X, cam, {"min_iterations": 30})
    none = estimate_pose(uv, X, cam, {"min_iterations": 30, "refine_iterations": 0})
    assert pose_error(full.pose, gt)[0] < 0.05
    assert pose_error(full.pose, none.pose)[0] > 1e-6  # no refinement: the RANSAC pose as is
    # a minimum above the maximum is clipped to it (pycolmap would abort)
    assert estimate_pose(uv, X, cam, {"min_iterations": 500, "max_iterations": 50}) is not None


@pytest.mark.parametrize("key,bad", [("min_iterations", -1), ("max_iterations", 0), ("refine_iterations", 1.5),
                                     ("confidence", 1.0), ("confidence", 0)])
def test_bad_values_name_the_key(key, bad):
    uv, X, cam, _ = _problem()
    with pytest.raises(ValueError, match=f"pnp.{key}"):
        estimate_pose(uv, X, cam, {key: bad})
