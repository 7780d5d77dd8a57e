"""Plain data types shared by every stage of imp (no ROS, no torch).

Conventions (one place, so nobody has to guess):
- Poses are COLMAP's ``cam_from_world``: ``x_cam = R @ x_world + t``. The camera centre is ``-R.T @ t``.
- Quaternions stored in ``Pose`` helpers are **w, x, y, z** (COLMAP text files, visuallocalization.net results).
  ROS messages and ``pycolmap.Rotation3d.quat`` use x, y, z, w: convert with ``quat_wxyz_to_xyzw``.
- Keypoints are pixel coordinates with the centre of the top-left pixel at (0, 0) (OpenCV convention).
  COLMAP puts that centre at (0.5, 0.5): add 0.5 when handing keypoints to pycolmap.
- Images are ``HxWx3 uint8`` RGB numpy arrays (or ``HxW`` uint8 grayscale).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import ArrayLike

from .errors import ImpError

# COLMAP camera models we read and write, with their parameter names.
CAMERA_MODELS: Dict[str, Tuple[str, ...]] = {
    "SIMPLE_PINHOLE": ("f", "cx", "cy"),
    "PINHOLE": ("fx", "fy", "cx", "cy"),
    "SIMPLE_RADIAL": ("f", "cx", "cy", "k"),
    "RADIAL": ("f", "cx", "cy", "k1", "k2"),
    "OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2"),
}


def quat_wxyz_to_xyzw(q: ArrayLike) -> np.ndarray:
    a = np.asarray(q, dtype=np.float64)
    return np.array([a[1], a[2], a[3], a[0]])


def quat_xyzw_to_wxyz(q: ArrayLike) -> np.ndarray:
    a = np.asarray(q, dtype=np.float64)
    return np.array([a[3], a[0], a[1], a[2]])


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion (w, x, y, z) with w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    K = np.array(
        [
            [R[0, 0] - R[1, 1] - R[2, 2], 0, 0, 0],
            [R[1, 0] + R[0, 1], R[1, 1] - R[0, 0] - R[2, 2], 0, 0],
            [R[2, 0] + R[0, 2], R[2, 1] + R[1, 2], R[2, 2] - R[0, 0] - R[1, 1], 0],
            [R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1], R[0, 0] + R[1, 1] + R[2, 2]],
        ]
    ) / 3.0
    w, V = np.linalg.eigh(K)
    q = V[[3, 0, 1, 2], np.argmax(w)]
    if q[0] < 0:
        q = -q
    return q / np.linalg.norm(q)


def qvec_to_rotmat(q: ArrayLike) -> np.ndarray:
    """Unit quaternion (w, x, y, z) -> rotation matrix."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * y * y - 2 * z * z, 2 * x * y - 2 * w * z, 2 * x * z + 2 * w * y],
            [2 * x * y + 2 * w * z, 1 - 2 * x * x - 2 * z * z, 2 * y * z - 2 * w * x],
            [2 * x * z - 2 * w * y, 2 * y * z + 2 * w * x, 1 - 2 * x * x - 2 * y * y],
        ]
    )


@dataclass
class Pose:
    """A rigid transform ``cam_from_world`` (or any ``a_from_b``): ``x_a = R @ x_b + t``."""

    R: np.ndarray = field(default_factory=lambda: np.eye(3))  # any (3, 3) array-like, stored as float64
    t: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self) -> None:
        self.R = np.asarray(self.R, dtype=np.float64).reshape(3, 3)
        self.t = np.asarray(self.t, dtype=np.float64).reshape(3)

    @classmethod
    def from_qvec(cls, qvec_wxyz: ArrayLike, t: ArrayLike) -> "Pose":
        return cls(qvec_to_rotmat(qvec_wxyz), np.asarray(t, dtype=np.float64))

    @classmethod
    def from_matrix(cls, T: np.ndarray) -> "Pose":
        T = np.asarray(T, dtype=np.float64)
        return cls(T[:3, :3], T[:3, 3])

    @classmethod
    def from_center(cls, R: ArrayLike, center: ArrayLike) -> "Pose":
        """Build cam_from_world from the rotation and the camera centre in world coordinates."""
        R = np.asarray(R, dtype=np.float64)
        return cls(R, -R @ np.asarray(center, dtype=np.float64))

    @property
    def qvec(self) -> np.ndarray:
        """Rotation as (w, x, y, z)."""
        return rotmat_to_qvec(self.R)

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates (for a cam_from_world pose)."""
        return -self.R.T @ self.t

    @property
    def matrix(self) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3] = self.R
        T[:3, 3] = self.t
        return T

    def inverse(self) -> "Pose":
        return Pose(self.R.T, -self.R.T @ self.t)

    def __mul__(self, other: "Pose") -> "Pose":
        """Composition: ``(a_from_b * b_from_c) = a_from_c``."""
        return Pose(self.R @ other.R, self.R @ other.t + self.t)

    def transform(self, pts: np.ndarray) -> np.ndarray:
        return np.asarray(pts, dtype=np.float64) @ self.R.T + self.t

    def to_pycolmap(self):
        import pycolmap

        return pycolmap.Rigid3d(pycolmap.Rotation3d(quat_wxyz_to_xyzw(self.qvec)), self.t)

    @classmethod
    def from_pycolmap(cls, rigid) -> "Pose":
        return cls(np.asarray(rigid.rotation.matrix()), np.asarray(rigid.translation))


def backproject(K: np.ndarray, cam_from_world: "Pose", uv: np.ndarray, z: np.ndarray) -> np.ndarray:
    """World points of pixels ``uv`` (N, 2; OpenCV convention) at camera depths ``z`` (N,) for a pinhole ``K``."""
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    rays = np.linalg.solve(np.asarray(K, np.float64), np.concatenate([uv, np.ones((len(uv), 1))], 1).T).T
    return cam_from_world.inverse().transform(rays * np.asarray(z, np.float64).reshape(-1, 1))


def rotation_angle_deg(R1: np.ndarray, R2: np.ndarray) -> float:
    """Angle of the relative rotation R1^T R2 in degrees."""
    cos = (np.trace(np.asarray(R1).T @ np.asarray(R2)) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def pose_error(est: Pose, gt: Pose) -> Tuple[float, float]:
    """(position error in metres, rotation error in degrees) between two cam_from_world poses."""
    return float(np.linalg.norm(est.center - gt.center)), rotation_angle_deg(gt.R, est.R)


class CameraError(ImpError, ValueError):
    """Camera parameters that cannot describe a real camera; the message names the parameter."""


@dataclass
class Camera:
    """A COLMAP camera: model name, size and parameter vector (``name MODEL w h params`` in query lists)."""

    model: str
    width: int
    height: int
    params: np.ndarray

    def __post_init__(self) -> None:
        if self.model not in CAMERA_MODELS:
            raise CameraError(f"unsupported camera model {self.model!r}; supported: {sorted(CAMERA_MODELS)}")
        self.params = np.asarray(self.params, dtype=np.float64).reshape(-1)
        need = len(CAMERA_MODELS[self.model])
        if self.params.size != need:
            raise CameraError(
                f"camera model {self.model} takes {need} parameters {CAMERA_MODELS[self.model]}, got {self.params.size}"
            )
        self.width, self.height = int(self.width), int(self.height)
        if self.width <= 0 or self.height <= 0:
            raise CameraError(f"camera size must be positive, got {self.width}x{self.height}")
        self._validate()

    def _validate(self) -> None:
        """Reject parameters that cannot describe a real camera (they gave 180-degree-off or silent LOST poses)."""
        names = CAMERA_MODELS[self.model]
        for name, v in zip(names, self.params):
            if not np.isfinite(v):
                raise CameraError(f"camera {self.model}: parameter {name} is {v} (must be finite)")
        (fx, fy), (cx, cy) = self.focal, self.principal_point
        for name, f in zip(("fx", "fy") if "fx" in names else ("f",), (fx, fy)):
            if f <= 0:
                raise CameraError(f"camera {self.model}: focal length {name} = {f:g} must be positive")
        # a principal point more than half the image size outside the image is a unit or ordering mistake
        for name, c, size in (("cx", cx, self.width), ("cy", cy, self.height)):
            if not -0.5 * size <= c <= 1.5 * size:
                raise CameraError(f"camera {self.model} {self.width}x{self.height}: principal point {name} = {c:g} "
                                  f"is far outside the image (allowed {-0.5 * size:g} .. {1.5 * size:g})")

    @classmethod
    def from_K(cls, K: np.ndarray, width: int, height: int) -> "Camera":
        """PINHOLE camera from an OpenCV pixel-convention K (the inverse of ``Camera.K``)."""
        K = np.asarray(K, dtype=np.float64)
        return cls("PINHOLE", width, height, np.array([K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5]))

    @property
    def focal(self) -> Tuple[float, float]:
        p = self.params
        return (p[0], p[0]) if self.model.startswith("SIMPLE") or self.model == "RADIAL" else (p[0], p[1])

    @property
    def principal_point(self) -> Tuple[float, float]:
        p = self.params
        return (p[1], p[2]) if self.model.startswith("SIMPLE") or self.model == "RADIAL" else (p[2], p[3])

    @property
    def K(self) -> np.ndarray:
        """Pinhole matrix in the OpenCV pixel convention (distortion ignored)."""
        (fx, fy), (cx, cy) = self.focal, self.principal_point
        # COLMAP's principal point is in its own convention (pixel centre at 0.5): shift by 0.5.
        return np.array([[fx, 0, cx - 0.5], [0, fy, cy - 0.5], [0, 0, 1.0]])

    @property
    def distortion(self) -> np.ndarray:
        """OpenCV distortion vector (k1, k2, p1, p2) for this model (zeros for pinhole models)."""
        p = self.params
        if self.model == "SIMPLE_RADIAL":
            return np.array([p[3], 0, 0, 0.0])
        if self.model == "RADIAL":
            return np.array([p[3], p[4], 0, 0.0])
        if self.model == "OPENCV":
            return np.array(p[4:8])
        return np.zeros(4)

    def to_pycolmap(self):
        import pycolmap

        return pycolmap.Camera(model=self.model, width=self.width, height=self.height, params=self.params)

    @classmethod
    def from_pycolmap(cls, cam) -> "Camera":
        return cls(cam.model.name, cam.width, cam.height, np.asarray(cam.params))

    def to_line(self) -> str:
        """``MODEL w h p1 p2 ...`` as in COLMAP cameras.txt / query lists."""
        return " ".join([self.model, str(self.width), str(self.height)] + [f"{v:.6f}" for v in self.params])

    @classmethod
    def from_tokens(cls, tokens: Sequence[str]) -> "Camera":
        """``MODEL W H p1 p2 ...`` (a COLMAP camera line); errors name the bad token."""
        tokens = list(tokens)
        if len(tokens) < 4:
            raise CameraError(f"camera needs 'MODEL W H params...', got {' '.join(tokens)!r}")
        try:
            w, h = int(tokens[1]), int(tokens[2])
        except ValueError:
            raise CameraError(f"camera width/height must be integers, got {tokens[1]!r} {tokens[2]!r}") from None
        try:
            params = np.array([float(v) for v in tokens[3:]])
        except ValueError:
            raise CameraError(f"camera parameters must be numbers, got {' '.join(tokens[3:])!r}") from None
        return cls(tokens[0], w, h, params)

    def scaled(self, sx: float, sy: Optional[float] = None) -> "Camera":
        """The same camera for an image resized by (sx, sy)."""
        sy = sx if sy is None else sy
        p = self.params.copy()
        w, h = int(round(self.width * sx)), int(round(self.height * sy))
        if self.model.startswith("SIMPLE") or self.model == "RADIAL":
            p[0] *= (sx + sy) / 2
            p[1] *= sx
            p[2] *= sy
        else:
            p[0] *= sx
            p[1] *= sy
            p[2] *= sx
            p[3] *= sy
        return Camera(self.model, w, h, p)


@dataclass
class Features:
    """Local features of one image. ``kind`` names the extractor conf (maps refuse other kinds)."""

    keypoints: np.ndarray  # (N, 2) float32, OpenCV pixel convention
    descriptors: np.ndarray  # (N, D) float32
    scores: np.ndarray  # (N,) float32
    image_size: Tuple[int, int]  # (width, height)
    kind: str = ""
    labels: Optional[np.ndarray] = None  # (N,) int32 instance label per keypoint (0 = none), LBR

    def __post_init__(self) -> None:
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32).reshape(-1, 2)
        n = len(self.keypoints)
        desc = np.asarray(self.descriptors, dtype=np.float32)
        self.descriptors = desc.reshape(n, -1) if n else desc.reshape(0, desc.shape[-1] if desc.ndim == 2 else 0)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(n)
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int32).reshape(n)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    def __len__(self) -> int:
        return len(self.keypoints)

    def subset(self, idx: np.ndarray) -> "Features":
        return Features(
            self.keypoints[idx],
            self.descriptors[idx],
            self.scores[idx],
            self.image_size,
            self.kind,
            None if self.labels is None else self.labels[idx],
        )


@dataclass
class Matches:
    """Correspondences between image 0 (query) and image 1 (reference): index pairs and a score each."""

    indices: np.ndarray  # (M, 2) int64: [i in image 0, j in image 1]
    scores: np.ndarray  # (M,) float32
    info: Dict[str, float] = field(default_factory=dict)  # e.g. iterations run, early stop, tokens kept

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, dtype=np.int64).reshape(-1, 2)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(len(self.indices))

    def __len__(self) -> int:
        return len(self.indices)

    @classmethod
    def empty(cls) -> "Matches":
        return cls(np.zeros((0, 2), np.int64), np.zeros(0, np.float32))


# Localization states, shared with the ROS message constants.
STATUS_OK = "OK"
STATUS_LOST = "LOST"
STATUS_NOT_INITIALIZED = "NOT_INITIALIZED"
STATUS_RELOCALIZING = "RELOCALIZING"


@dataclass
class LocalizationResult:
    """What the localizer answers for one frame."""

    status: str = STATUS_LOST
    pose: Optional[Pose] = None  # cam_from_world of the query camera
    # 6x6 covariance of the camera pose in the world frame, ROS order (x, y, z, rot_x, rot_y, rot_z),
    # position in metres^2, rotation in rad^2 (rotation about world axes).
    covariance: Optional[np.ndarray] = None
    num_matches: int = 0  # 2D-3D correspondences fed to PnP
    num_inliers: int = 0
    references: List[str] = field(default_factory=list)  # reference image names used
    instances: List[Tuple[int, float]] = field(default_factory=list)  # recognized (instance id, confidence)
    # recognized instance of each query pixel (0: none) when a recognizer ran, as a (h, w) uint16 map at most 256
    # pixels on a side (visualize.compact_labels; visualize.expand_labels gives it back at the image's size)
    label_map: Optional[np.ndarray] = None
    timings: Dict[str, float] = field(default_factory=dict)  # milliseconds per stage, plus "total"
    mode: str = "global"  # "global", "tracking" or "instance"
    message: str = ""  # human-readable reason when not OK
    inlier_keypoints: Optional[np.ndarray] = None  # (K, 2) query pixels of the PnP inliers
    inlier_points3D: Optional[np.ndarray] = None  # (K, 3) their map points
    # how much the pose is trusted, in [0, 1] (imp_core.localization.confidence); a pose below the localizer's
    # acceptance.min_confidence is not OK. ``quality`` holds the measures it is computed from.
    confidence: float = 0.0
    quality: Dict[str, float] = field(default_factory=dict)
    camera: Optional["Camera"] = None  # the camera the pose was computed with (focal estimated when unknown)
    focal_estimated: bool = False  # True when camera's focal length was estimated for this frame

    @property
    def success(self) -> bool:
        return self.status == STATUS_OK and self.pose is not None
