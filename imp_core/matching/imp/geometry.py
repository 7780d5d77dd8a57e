"""Pose checks used between iterations: essential matrix (image pairs) and PnP (localization)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

from ...types import Camera, rotation_angle_deg


@dataclass
class PoseEstimate:
    R: np.ndarray  # (3, 3)
    t: np.ndarray  # (3,) translation (unit direction for pairs, metres for PnP)
    inliers: np.ndarray  # (M,) bool over the matches that were given
    used: np.ndarray  # (M,) bool: matches that took part (PnP: reference keypoint has a 3D point)

    @property
    def inlier_ratio(self) -> float:
        n = int(self.used.sum())
        return float(self.inliers.sum()) / n if n else 0.0


def vector_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < 1e-12 or nb < 1e-12:
        return 180.0
    return float(np.degrees(np.arccos(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))))


def normalized_points(kpts: np.ndarray, camera: Camera) -> np.ndarray:
    """Pixel keypoints (OpenCV convention) -> undistorted normalized image coordinates."""
    pts = np.asarray(kpts, np.float64).reshape(-1, 1, 2)
    return cv2.undistortPoints(pts, camera.K, camera.distortion).reshape(-1, 2)


def relative_poses_agree(a: PoseEstimate, b: PoseEstimate, stop_deg: float) -> bool:
    """IMP's stop test for relative poses: max(rotation angle, translation-direction angle) <= stop_deg."""
    return max(rotation_angle_deg(a.R, b.R), vector_angle_deg(a.t, b.t)) <= stop_deg


#: OpenCV robust estimators a pair check may use (``PairGeometry(method=...)``)
PAIR_RANSAC_METHODS = ("USAC_MAGSAC", "USAC_DEFAULT", "USAC_ACCURATE", "USAC_FAST", "RANSAC")


class PairGeometry:
    """Relative pose from the essential matrix (OpenCV ``method``, default USAC_MAGSAC; then cheirality via
    recoverPose). ``max_iterations``: the RANSAC cap (OpenCV's default 1000)."""

    #: whether one well-supported pose may stop EIMP without a second, agreeing one (IterativeMatcher.confident)
    single_pose_stop = True

    def __init__(self, camera0: Camera, camera1: Camera, threshold_px: float = 1.0, confidence: float = 0.99999,
                 stop_deg: float = 1.5, max_iterations: int = 1000, method: str = "USAC_MAGSAC"):
        self.camera0, self.camera1 = camera0, camera1
        focals = list(camera0.focal) + list(camera1.focal)
        self.threshold = threshold_px / float(np.mean(focals))
        self.confidence = confidence
        self.stop_deg = stop_deg
        self.max_iterations = int(max_iterations)
        if method not in PAIR_RANSAC_METHODS:
            raise ValueError(f"pair pose check method must be one of {PAIR_RANSAC_METHODS}, got {method!r}")
        self.ransac_method = method

    def estimate(self, kpts0: np.ndarray, kpts1: np.ndarray) -> Optional[PoseEstimate]:
        used = np.ones(len(kpts0), bool)
        if len(kpts0) < 5:
            return None
        n0, n1 = normalized_points(kpts0, self.camera0), normalized_points(kpts1, self.camera1)
        E, mask = cv2.findEssentialMat(n0, n1, np.eye(3), method=getattr(cv2, self.ransac_method),
                                       prob=self.confidence, threshold=self.threshold, maxIters=self.max_iterations)
        if E is None or mask is None:
            return None
        best = None
        for Ei in np.split(E, len(E) // 3):
            n, R, t, m = cv2.recoverPose(Ei, n0, n1, np.eye(3), mask=mask.copy())
            if best is None or n > best[0]:
                best = (n, R, t.ravel(), m.ravel() > 0)
        if best is None or best[0] < 5:
            return None
        return PoseEstimate(best[1], best[2], best[3], used)

    def agree(self, a: PoseEstimate, b: PoseEstimate) -> bool:
        return relative_poses_agree(a, b, self.stop_deg)


class ReleasedPairGeometry(PairGeometry):
    """The pose check of the released evaluation (``imp-release`` ``eval/pose_estimation.py: estimate_pose``).

    - ``cv2.findEssentialMat`` on pixel coordinates with both camera matrices (OpenCV normalizes with each K and
      rescales by their mean), threshold ``threshold_px`` (released: 1 px on YFCC, 3 px on ScanNet), USAC_MAGSAC,
      confidence 0.99999; an E that is not 3x3 (several solutions) gives no pose;
    - cheirality by its own triangulation of the RANSAC inliers: points normalized with the *mean* of the two
      camera matrices, the four (R, +-t) of ``cv2.decomposeEssentialMat`` tried in the order (R1, t), (R2, t),
      (R1, -t), (R2, -t); a point counts when its depth is in (0, ``distance``) in both cameras; the first
      candidate with the most such points wins;
    - the returned inlier mask is True for RANSAC *outliers* too: only RANSAC inliers that fail the cheirality
      test are False (as released; ``inlier_ratio`` is its mean over all matches).
    Distorted cameras (not in the released data) have their keypoints undistorted to pixels first.
    """

    def __init__(self, camera0: Camera, camera1: Camera, threshold_px: float = 1.0, confidence: float = 0.99999,
                 stop_deg: float = 1.5, distance: float = 1000.0, method: int = cv2.USAC_MAGSAC):
        super().__init__(camera0, camera1, threshold_px, confidence, stop_deg)
        self.threshold_px = float(threshold_px)
        self.distance = float(distance)
        self.method = method

    @staticmethod
    def _pixels(kpts: np.ndarray, camera: Camera) -> np.ndarray:
        pts = np.asarray(kpts, np.float64).reshape(-1, 2)
        if not np.any(camera.distortion):
            return pts
        return cv2.undistortPoints(pts.reshape(-1, 1, 2), camera.K, camera.distortion, P=camera.K).reshape(-1, 2)

    def estimate(self, kpts0: np.ndarray, kpts1: np.ndarray) -> Optional[PoseEstimate]:
        if len(kpts0) < 5:
            return None
        p0, p1 = self._pixels(kpts0, self.camera0), self._pixels(kpts1, self.camera1)
        K0, K1 = self.camera0.K, self.camera1.K
        E, mask = cv2.findEssentialMat(points1=p0, points2=p1, cameraMatrix1=K0, distCoeffs1=None,
                                       cameraMatrix2=K1, distCoeffs2=None, method=self.method,
                                       prob=self.confidence, threshold=self.threshold_px)
        if E is None or mask is None or E.shape != (3, 3):
            return None
        ransac = mask.ravel() > 0
        if not ransac.any():
            return None
        R, t, cheiral = self.decompose(E, p0[ransac], p1[ransac], (K0 + K1) / 2.0)
        inliers = np.ones(len(p0), bool)
        inliers[ransac] = cheiral
        return PoseEstimate(R, t, inliers, np.ones(len(p0), bool))

    def decompose(self, E: np.ndarray, p0: np.ndarray, p1: np.ndarray, K: np.ndarray
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(R, t, cheirality mask over the given points) of the candidate with most points in front."""
        def normalize(p):
            return np.stack([(p[:, 0] - K[0, 2]) / K[0, 0], (p[:, 1] - K[1, 2]) / K[1, 1]])

        n0, n1 = normalize(p0), normalize(p1)
        R1, R2, t = cv2.decomposeEssentialMat(E)
        t = t.reshape(3)
        P0 = np.eye(3, 4)
        best = None
        for R, tt in ((R1, t), (R2, t), (R1, -t), (R2, -t)):
            P = np.concatenate([R, tt[:, None]], 1)
            X = cv2.triangulatePoints(P0, P, n0, n1)
            ok = X[2] * X[3] > 0  # in front of camera 0 (sign of the homogeneous depth)
            with np.errstate(divide="ignore", invalid="ignore"):
                Xe = X[:3] / X[3]
                z1 = (P @ np.concatenate([Xe, np.ones((1, Xe.shape[1]))]))[2]
                ok &= (Xe[2] < self.distance) & (z1 > 0) & (z1 < self.distance)
            if best is None or int(ok.sum()) > int(best[2].sum()):
                best = (R, tt, ok)
        assert best is not None
        return best


class PnPGeometry:
    """Query pose from 2D-3D matches (pycolmap LO-RANSAC); ``points3D`` (N1, 3) has NaN rows without a point.

    ``estimate_focal``: the query's focal length is unknown (``camera0`` is a guess; the localizer's context says
    so): RANSAC estimates it with the pose (P4Pf), as the localizer's own PnP does. With the guess held fixed, the
    check kept only the matches the wrong focal length could explain, a region of the photo, and an early stop
    returned just those (Sacre-Coeur photo 32809961 with EIMP: 211 inliers over 44 % of the image, confidence
    0.35; estimated: 354 over 64 %, 0.92, 0.02 degrees off). Such a check also refines pose and focal length on
    its inliers: RANSAC's best P4Pf sample alone moved by metres and degrees between checkpoints, so two checks
    never agreed and the query never stopped early (``test_unknown_focal_checks_refine_so_that_consecutive_checks_
    agree``)."""

    def __init__(self, camera0: Camera, points3D: np.ndarray, threshold_px: float = 12.0, stop_deg: float = 1.5,
                 stop_position: float = 0.25, estimate_focal: bool = False, random_seed: int = 0):
        import pycolmap

        self.camera0 = camera0
        self.camera = camera0.to_pycolmap()
        self.points3D = np.asarray(points3D, np.float64).reshape(-1, 3)
        self.options = pycolmap.AbsolutePoseEstimationOptions()
        self.options.ransac.max_error = float(threshold_px)
        self.options.estimate_focal_length = bool(estimate_focal)
        # seeded (the localizer passes its pnp.random_seed in the matcher context): the same matches give the same
        # check, whatever ran before (pycolmap's -1 draws a new seed: a warm-up or a rerun changed stop and poses)
        self.options.ransac.random_seed = int(random_seed)
        # with the focal length free (P4Pf), a wrong pose fits many matches within the threshold on its own:
        # stop only on two agreeing poses
        self.single_pose_stop = not estimate_focal
        self.refinement = None  # pose + focal refinement on the inliers, with the focal length free only
        if estimate_focal:
            self.refinement = pycolmap.AbsolutePoseRefinementOptions()
            self.refinement.refine_focal_length = True
            self.refinement.refine_extra_params = False
            self.refinement.print_summary = False
        self.stop_deg, self.stop_position = stop_deg, stop_position

    def estimate(self, kpts0: np.ndarray, ref_idx: np.ndarray) -> Optional[PoseEstimate]:
        import pycolmap

        xyz = self.points3D[ref_idx]
        used = np.isfinite(xyz).all(1)
        if used.sum() < 4:
            return None
        p2d = np.asarray(kpts0, np.float64)[used] + 0.5
        if self.refinement is not None:
            ret = pycolmap.estimate_and_refine_absolute_pose(p2d, xyz[used], self.camera0.to_pycolmap(), self.options,
                                                             self.refinement)
        else:
            ret = pycolmap.estimate_absolute_pose(p2d, xyz[used], self.camera, self.options)
        if ret is None:
            return None
        rig = ret["cam_from_world"]
        inliers = np.zeros(len(used), bool)
        inliers[np.flatnonzero(used)] = np.asarray(ret["inlier_mask"], bool)
        return PoseEstimate(np.asarray(rig.rotation.matrix()), np.asarray(rig.translation), inliers, used)

    def agree(self, a: PoseEstimate, b: PoseEstimate) -> bool:
        """Rotation within stop_deg and camera centres within stop_position (map units)."""
        ca, cb = -a.R.T @ a.t, -b.R.T @ b.t
        return rotation_angle_deg(a.R, b.R) <= self.stop_deg and float(np.linalg.norm(ca - cb)) <= self.stop_position
