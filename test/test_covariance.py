"""imp_core.covariance: a pose covariance given in another fixed frame (an /initialpose in 'odom') carried to the
map frame agrees with sampling the pose and composing the frame change."""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from imp_core.covariance import covariance_in_frame
from imp_core.types import Pose


def test_covariance_in_frame_matches_sampling():
    rng = np.random.default_rng(3)
    map_from_odom = Pose(Rotation.from_euler("xyz", [20, -35, 110], degrees=True).as_matrix(), [40.0, -12.0, 3.0])
    odom_from_base = Pose(Rotation.from_euler("xyz", [0, 0, 30], degrees=True).as_matrix(), [5.0, 2.0, 0.0])
    A = rng.normal(size=(6, 6)) * 1e-2
    cov = A @ A.T
    mean = map_from_odom * odom_from_base
    samples = []
    for d in rng.multivariate_normal(np.zeros(6), cov, 20000):
        R = Rotation.from_rotvec(d[3:]).as_matrix() @ odom_from_base.R  # world-axes (odom) rotation perturbation
        base = map_from_odom * Pose(R, odom_from_base.t + d[:3])
        samples.append(np.concatenate([base.t - mean.t, Rotation.from_matrix(base.R @ mean.R.T).as_rotvec()]))
    emp = np.cov(np.array(samples).T)
    pred = covariance_in_frame(cov, map_from_odom)
    assert np.allclose(pred, emp, atol=0.05 * np.abs(pred).max())
    # the far-away map origin adds no lever arm: the position block keeps its total variance
    assert np.isclose(np.trace(pred[:3, :3]), np.trace(cov[:3, :3]))
