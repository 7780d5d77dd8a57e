"""Absolute pose from 2D-3D matches (pycolmap LO-RANSAC + refinement) and its covariance in the world frame."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from ..config import merge
from ..covariance import covariance_to_world
from ..types import Camera, Pose

DEFAULT_PNP_CONF: Dict[str, Any] = {
    "ransac_max_error": 12.0,  # px, as hloc / LBR
    "min_inlier_ratio": 0.01,
    "max_iterations": 10000,
    # RANSAC stops once `confidence` of an all-inlier sample is reached for the inlier ratio found so far (trials
    # sized to it, x3 as COLMAP), but never before `min_iterations`: 100 (COLMAP's) is 3-4x what a tracking frame
    # with 80 % inliers needs
    "min_iterations": 100,
    "confidence": 0.99999,
    "refine_iterations": 100,  # Levenberg-Marquardt iterations of the refinement (about 1 ms each at 900 matches)
    # focal length: False = the camera's, True = always estimated (P4Pf-style sampling in RANSAC + refinement),
    # "auto" = estimated but kept only when it beats the given focal on inliers and reprojection error
    "refine_focal_length": False,
    "min_covariance_sigma_px": 0.5,  # floor of the residual std used to scale the covariance
    "random_seed": 0,  # RANSAC sampling seed: the same frame gives the same pose (-1: random)
}


@dataclass
class PnPResult:
    pose: Pose  # cam_from_world
    inliers: np.ndarray  # (N,) bool
    covariance: Optional[np.ndarray]  # 6x6 world frame, ROS order (x, y, z, rot_x, rot_y, rot_z)
    residual_sigma_px: float
    inlier_points2D: np.ndarray  # (K, 2) OpenCV pixel convention
    inlier_points3D: np.ndarray  # (K, 3)
    camera: Camera  # the camera the pose was estimated with (focal estimated or not)
    focal_estimated: bool = False

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())


def project_points(pose: Pose, camera: Camera, points3D: np.ndarray) -> np.ndarray:
    """(N, 2) pixels (OpenCV convention, camera distortion applied) of world points; NaN behind the camera."""
    xc = pose.transform(points3D)
    uv = np.full((len(xc), 2), np.nan)
    front = xc[:, 2] > 1e-6
    if front.any():
        uv[front] = np.asarray(camera.to_pycolmap().img_from_cam(xc[front])) - 0.5
    return uv


def reprojection_errors(pose: Pose, camera: Camera, points2D: np.ndarray, points3D: np.ndarray) -> np.ndarray:
    """Pixel reprojection errors (points2D in OpenCV pixel convention); inf behind the camera."""
    err = np.linalg.norm(project_points(pose, camera, points3D) - points2D, axis=1)
    return np.where(np.isfinite(err), err, np.inf)


def estimate_pose(points2D: np.ndarray, points3D: np.ndarray, camera: Camera,
                  conf: Optional[Mapping[str, Any]] = None) -> Optional[PnPResult]:
    """LO-RANSAC PnP + refinement. ``points2D`` in OpenCV pixel convention (+0.5 added for COLMAP here)."""

    conf = merge(DEFAULT_PNP_CONF, conf, where="pnp")
    _check_conf(conf)
    points2D = np.asarray(points2D, dtype=np.float64).reshape(-1, 2)
    points3D = np.asarray(points3D, dtype=np.float64).reshape(-1, 3)
    if len(points2D) < 4:
        return None
    mode = conf["refine_focal_length"]
    if isinstance(mode, str):
        if mode != "auto":
            raise ValueError(f"pnp.refine_focal_length must be true, false or 'auto', got {mode!r}")
        return _estimate_auto_focal(points2D, points3D, camera, conf)
    return _estimate(points2D, points3D, camera, conf, bool(mode))


def estimates_focal(conf: Optional[Mapping[str, Any]]) -> bool:
    """Whether ``estimate_pose`` with this conf estimates the focal length (``refine_focal_length`` true or
    'auto'), i.e. whether the camera's focal length is treated as unknown."""
    return merge(DEFAULT_PNP_CONF, conf, where="pnp")["refine_focal_length"] in (True, "auto")


def _check_conf(conf: Mapping[str, Any]) -> None:
    for key, lo in (("max_iterations", 1), ("min_iterations", 0), ("refine_iterations", 0)):
        v = conf[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"pnp.{key} must be an integer >= {lo}, got {v!r}")
    if not 0 < float(conf["confidence"]) < 1:
        raise ValueError(f"pnp.confidence must be in (0, 1), got {conf['confidence']!r}")


def _estimate(points2D: np.ndarray, points3D: np.ndarray, camera: Camera, conf: Mapping[str, Any],
              focal: bool) -> Optional[PnPResult]:
    import pycolmap

    if len(points2D) < (5 if focal else 4):
        return None
    est = pycolmap.AbsolutePoseEstimationOptions()
    est.ransac.max_error = float(conf["ransac_max_error"])
    est.ransac.min_inlier_ratio = float(conf["min_inlier_ratio"])
    est.ransac.max_num_trials = int(conf["max_iterations"])
    est.ransac.min_num_trials = min(int(conf["min_iterations"]), int(conf["max_iterations"]))
    est.ransac.confidence = float(conf["confidence"])
    est.estimate_focal_length = focal
    est.ransac.random_seed = int(conf["random_seed"])
    ref = pycolmap.AbsolutePoseRefinementOptions()
    ref.refine_focal_length = focal
    ref.refine_extra_params = False
    ref.print_summary = False
    ref.max_num_iterations = int(conf["refine_iterations"])
    cam = camera.to_pycolmap()
    ret = pycolmap.estimate_and_refine_absolute_pose(points2D + 0.5, points3D, cam, est, ref, return_covariance=True)
    if ret is None:
        return None
    if focal:  # pycolmap refined the focal length of `cam` in place
        try:
            camera = Camera.from_pycolmap(cam)
        except ValueError:  # a degenerate (non-positive / non-finite) focal: no pose from this sample
            return None
    pose = Pose.from_pycolmap(ret["cam_from_world"])
    inliers = np.asarray(ret["inlier_mask"], dtype=bool)
    kept = _consistent_inliers(pose, camera, inliers, ret, points2D, points3D, conf, ref)
    if kept is None:
        return None
    pose, camera, inliers, ret, err_all = kept
    err = err_all[inliers]
    n = max(int(inliers.sum()), 1)
    # residual std per coordinate from the inliers (2 coords per point, 6 dof, +1 with the focal length)
    dof = 7 if focal else 6
    sigma = float(np.sqrt(np.sum(np.minimum(err, conf["ransac_max_error"]) ** 2) / max(2 * n - dof, 1)))
    sigma = max(sigma, float(conf["min_covariance_sigma_px"]))
    cov = None
    if ret.get("covariance") is not None:
        cov = covariance_to_world(np.asarray(ret["covariance"])[:6, :6], pose) * sigma ** 2
    return PnPResult(pose, inliers, cov, sigma, points2D[inliers], points3D[inliers], camera, focal)


def _consistent_inliers(pose: Pose, camera: Camera, inliers: np.ndarray, ret: dict, points2D: np.ndarray,
                        points3D: np.ndarray, conf: Mapping[str, Any], ref, rounds: int = 3):
    """The inliers of the refined pose itself: RANSAC's inlier mask belongs to its best sample's model, and the
    robust (Cauchy) refinement after it may move the pose so that some of those matches reproject far beyond the
    threshold (a blurred night photo: 4 of 26 "inliers" at 16-34 px) while others come within it. Reported as
    inliers, such matches inflate the residual std and with it the covariance (rotation std 1.9 deg for a pose
    0.3 deg off). So the matches within ``ransac_max_error`` of the refined pose become the inliers and the pose
    (and focal length, when estimated) is refined again on them, until the set is stable (``rounds`` at most).
    Returns (pose, camera, inliers, ret, the reprojection errors of every match for that pose) with ``ret`` the
    last refinement's (its covariance); None when fewer than 4 (5 with the focal length) matches are left or the
    focal length degenerates."""
    focal = bool(ref.refine_focal_length)
    err = reprojection_errors(pose, camera, points2D, points3D)
    for _ in range(rounds):
        now = err <= float(conf["ransac_max_error"])
        if np.array_equal(now, inliers):
            break
        if now.sum() < (5 if focal else 4):
            return None
        try:
            new = _refine(pose, camera, points2D, points3D, now, ref, covariance=True)
        except ValueError:
            return None
        if new is None:
            break
        (pose, camera, ret), inliers = new, now
        err = reprojection_errors(pose, camera, points2D, points3D)
    return pose, camera, inliers, ret, err


def _refine(pose: Pose, camera: Camera, points2D: np.ndarray, points3D: np.ndarray, mask: np.ndarray, ref,
            covariance: bool = False) -> Optional[Tuple[Pose, Camera, dict]]:
    """pycolmap's refinement of ``pose`` (and of ``camera``'s focal length when ``ref`` refines it) on the matches
    in ``mask``: (pose, camera, pycolmap's result), None when it fails. Raises ValueError when the refined focal
    length degenerates (non-positive / non-finite)."""
    import pycolmap

    cam = camera.to_pycolmap()
    ret = pycolmap.refine_absolute_pose(pose.to_pycolmap(), points2D + 0.5, points3D, mask, cam, ref,
                                        return_covariance=covariance)
    if ret is None:
        return None
    camera = Camera.from_pycolmap(cam) if ref.refine_focal_length else camera  # refined in place
    return Pose.from_pycolmap(ret["cam_from_world"]), camera, ret


def _estimate_auto_focal(points2D: np.ndarray, points3D: np.ndarray, camera: Camera,
                         conf: Mapping[str, Any]) -> Optional[PnPResult]:
    """Unknown focal length, robustly: PnP with the given (guessed) focal and PnP with the focal estimated in
    RANSAC; the estimate is kept only when its residual std is no higher than the guess's and

    - it has more inliers (with few good matches the extra degree of freedom fits noise and turns outliers into
      inliers at the threshold's edge, 71 -> 19 good inliers in the photo that motivated this; the guess is kept
      then, its residual being lower), or
    - on the matches both models call inliers it lowers the squared reprojection errors by more than one extra
      parameter explains by chance (likelihood-ratio test, chi^2 with 1 dof at 95 %: 3.84 sigma^2). Counting
      inliers alone rejects a right estimate when both models explain nearly every match, as on a small image where
      the RANSAC threshold is a large share of the frame: a guess 15 % off kept 485 inliers against the estimate's
      478 at 1.2 % off (benchmarks/bench_focal.py). Matches only the estimate explains do not count here, so
      absorbing outliers does not pass the test.
    """
    fixed = _estimate(points2D, points3D, camera, conf, False)
    est = _estimate(points2D, points3D, camera, conf, True)
    if est is None:
        return fixed
    if fixed is None:
        return est
    if est.residual_sigma_px > fixed.residual_sigma_px:
        return fixed
    if est.num_inliers > fixed.num_inliers:
        return est
    both = fixed.inliers & est.inliers
    if both.sum() < 8:
        return fixed
    sse_fixed = _least_squares_sse(fixed, points2D[both], points3D[both], False, conf)
    sse_est = _least_squares_sse(est, points2D[both], points3D[both], True, conf)
    if sse_fixed - sse_est > CHI2_1DOF_95 * est.residual_sigma_px ** 2:
        return est
    return fixed


def _least_squares_sse(res: PnPResult, points2D: np.ndarray, points3D: np.ndarray, focal: bool,
                       conf: Mapping[str, Any]) -> float:
    """Sum of squared reprojection errors after a least-squares refit of ``res`` (pose, and focal length when
    ``focal``) on these matches: the likelihood-ratio test needs both models at their least-squares optimum, which
    the robust (Cauchy, 1 px) refinement of the estimation is not."""
    import pycolmap

    ref = pycolmap.AbsolutePoseRefinementOptions()
    ref.refine_focal_length = focal
    ref.refine_extra_params = False
    ref.print_summary = False
    ref.loss_function_scale = 1e3 * float(conf["ransac_max_error"])  # Cauchy this wide: least squares
    ref.gradient_tolerance = 1e-10
    ref.max_num_iterations = int(conf["refine_iterations"])
    try:
        new = _refine(res.pose, res.camera, points2D, points3D, np.ones(len(points2D), bool), ref)
    except ValueError:  # a degenerate focal length: the fit as it was
        new = None
    pose, camera = (new[0], new[1]) if new is not None else (res.pose, res.camera)
    return float(np.sum(reprojection_errors(pose, camera, points2D, points3D) ** 2))


CHI2_1DOF_95 = 3.841  # 95 % quantile of chi^2 with 1 degree of freedom (the focal length)
