"""Message <-> numpy conversions: images, CameraInfo, poses, transforms, localization results.

cv_bridge is used for raw images when importable; otherwise our own conversion handles rgb8, bgr8, rgba8, bgra8,
mono8, mono16, bayer_* and compressed (JPEG/PNG) images. Pose conventions: ``imp_core.types.Pose`` is
``a_from_b``; a ROS pose/transform of frame ``child`` in frame ``parent`` is ``parent_from_child``.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose as PoseMsg
from geometry_msgs.msg import PoseWithCovariance, PoseWithCovarianceStamped, Transform, TransformStamped
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from imp_core.covariance import covariance_of_attached_frame
from imp_core.errors import ImpError
from imp_core.localization.visualize import expand_labels, instance_regions
from imp_core.types import (
    STATUS_LOST,
    STATUS_NOT_INITIALIZED,
    STATUS_OK,
    STATUS_RELOCALIZING,
    Camera,
    LocalizationResult,
    Pose,
    quat_wxyz_to_xyzw,
    quat_xyzw_to_wxyz,
)

try:  # the ROS distribution's bridge when present (colcon builds); the pip environment has none
    from cv_bridge import CvBridge as _CvBridge
except ImportError:
    _CvBridge = None


class ConversionError(ImpError, ValueError):
    """A message that cannot be converted (unknown encoding, uncalibrated camera, bad sizes)."""


_BAYER = {
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
}
_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8UC1": 1, "8UC3": 3}


# ---------------------------------------------------------------- time
def stamp_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    ns = int(ns)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


# ---------------------------------------------------------------- images
def _rows(msg: Image, itemsize: int, channels: int) -> np.ndarray:
    h, w = int(msg.height), int(msg.width)
    step = int(msg.step) or w * channels * itemsize
    buf = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, (bytes, np.ndarray)) else msg.data, np.uint8)
    if h <= 0 or w <= 0 or step < w * channels * itemsize or buf.size < h * step:
        raise ConversionError(
            f"image {w}x{h} encoding {msg.encoding!r}: data has {buf.size} bytes, expected {h} rows of step {step}"
        )
    rows = buf[: h * step].reshape(h, step)[:, : w * channels * itemsize]
    return np.ascontiguousarray(rows)


def image_to_rgb(msg: Image) -> np.ndarray:
    """sensor_msgs/Image -> HxWx3 uint8 RGB (mono16 is scaled to 8 bits; mono images are replicated)."""
    enc = msg.encoding.strip()
    if enc in _CHANNELS:
        c = _CHANNELS[enc]
        a = _rows(msg, 1, c).reshape(msg.height, msg.width, c)
        if enc in ("rgb8", "8UC3"):
            return a
        if enc == "bgr8":
            return a[..., ::-1].copy()
        if enc == "rgba8":
            return a[..., :3].copy()
        if enc == "bgra8":
            return a[..., 2::-1].copy()
        return np.repeat(a, 3, axis=2)
    if enc in ("mono16", "16UC1"):
        dt = np.dtype(">u2" if msg.is_bigendian else "<u2")
        a = _rows(msg, 2, 1).view(dt).reshape(msg.height, msg.width)
        a8 = (a.astype(np.float32) / 257.0).round().astype(np.uint8)
        return np.repeat(a8[..., None], 3, axis=2)
    if enc in _BAYER:
        a = _rows(msg, 1, 1).reshape(msg.height, msg.width)
        return cv2.cvtColor(a, _BAYER[enc])
    if _CvBridge is not None:
        try:
            return _CvBridge().imgmsg_to_cv2(msg, "rgb8")
        except Exception as e:  # cv_bridge raises its own error types
            raise ConversionError(f"cv_bridge cannot convert encoding {enc!r}: {e}") from e
    raise ConversionError(
        f"unsupported image encoding {enc!r}; supported: {sorted(list(_CHANNELS) + ['mono16', '16UC1'] + list(_BAYER))}"
    )


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> HxWx3 uint8 RGB."""
    buf = np.frombuffer(bytes(msg.data), np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise ConversionError(f"cannot decode compressed image (format {msg.format!r}, {buf.size} bytes)")
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:
        img = img[..., :3]
    return np.ascontiguousarray(img[..., ::-1])


def rgb_to_image(rgb: np.ndarray, encoding: str = "rgb8", frame_id: str = "", stamp_ns: int = 0) -> Image:
    """HxWx3 uint8 RGB -> sensor_msgs/Image in ``encoding`` (rgb8, bgr8, mono8, mono16, bayer_rggb8...)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ConversionError(f"expected an HxWx3 uint8 RGB array, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    if encoding == "rgb8":
        a = rgb
    elif encoding == "bgr8":
        a = rgb[..., ::-1]
    elif encoding == "mono8":
        a = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    elif encoding == "mono16":
        a = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype("<u2") * 257
    elif encoding in _BAYER:
        a = _mosaic(rgb, encoding)
    else:
        raise ConversionError(f"cannot encode to {encoding!r}")
    a = np.ascontiguousarray(a)
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=a.strides[0])
    msg.header.frame_id = frame_id
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.data = a.tobytes()
    return msg


def _mosaic(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """RGB -> single-channel Bayer mosaic with the 2x2 pattern named by ``encoding`` (e.g. rggb)."""
    pattern = encoding[len("bayer_"): len("bayer_") + 4]
    idx = {"r": 0, "g": 1, "b": 2}
    out = np.empty(rgb.shape[:2], np.uint8)
    for k, ch in enumerate(pattern):
        dy, dx = divmod(k, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, idx[ch]]
    return out


def rgb_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", frame_id: str = "", stamp_ns: int = 0,
                      quality: int = 95) -> CompressedImage:
    ext = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}.get(fmt)
    if ext is None:
        raise ConversionError(f"unsupported compressed format {fmt!r} (jpeg, png)")
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[..., ::-1]), params)
    if not ok:
        raise ConversionError(f"cv2 could not encode the image as {fmt}")
    msg = CompressedImage(format="rgb8; " + ("jpeg" if ext == ".jpg" else "png") + " compressed bgr8")
    msg.header.frame_id = frame_id
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.data = buf.tobytes()
    return msg


# ---------------------------------------------------------------- cameras
def camera_to_info(camera: Camera, frame_id: str = "", stamp_ns: int = 0) -> CameraInfo:
    """COLMAP camera -> CameraInfo (plumb_bob; principal point shifted to the ROS/OpenCV pixel convention)."""
    K = camera.K
    d = camera.distortion
    msg = CameraInfo(width=camera.width, height=camera.height, distortion_model="plumb_bob")
    msg.header.frame_id = frame_id
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.k = [float(v) for v in K.reshape(-1)]
    msg.d = [float(d[0]), float(d[1]), float(d[2]), float(d[3]), 0.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [K[0, 0], 0.0, K[0, 2], 0.0, 0.0, K[1, 1], K[1, 2], 0.0, 0.0, 0.0, 1.0, 0.0]
    msg.p = [float(v) for v in msg.p]
    return msg


def check_camera_info(msg: CameraInfo) -> None:
    """Raise ConversionError for an uncalibrated or inconsistent CameraInfo; the message names the field
    (K[0] = fx, K[4] = fy, K[2] = cx, K[5] = cy, D[i]) and the bad value."""
    where = f"CameraInfo (frame {msg.header.frame_id!r})"
    if msg.width == 0 or msg.height == 0:
        raise ConversionError(f"{where} has no image size ({msg.width}x{msg.height})")
    k = np.asarray(msg.k, np.float64).reshape(-1)
    if k.size != 9:
        raise ConversionError(f"{where}: K has {k.size} values, expected 9")
    K = k.reshape(3, 3)
    bad = [f"K[{i}]={v}" for i, v in enumerate(k) if not np.isfinite(v)]
    if bad:
        raise ConversionError(f"{where} is uncalibrated: {', '.join(bad)} not finite (K={k.tolist()})")
    if K[0, 0] <= 0 or K[1, 1] <= 0 or K[2, 2] != 1.0:
        names = [n for n, ok in (("K[0] (fx)", K[0, 0] > 0), ("K[4] (fy)", K[1, 1] > 0),
                                 ("K[8]", K[2, 2] == 1.0)) if not ok]
        raise ConversionError(
            f"{where} is uncalibrated: {', '.join(names)} invalid, K={k.tolist()} (fx, fy must be > 0 and K[8] = 1)"
        )
    for name, c, size in (("K[2] (cx)", K[0, 2], msg.width), ("K[5] (cy)", K[1, 2], msg.height)):
        if not -0.5 * size <= c <= 1.5 * size:
            raise ConversionError(f"{where}: principal point {name} = {c:g} is far outside the {msg.width}x"
                                  f"{msg.height} image (allowed {-0.5 * size:g} .. {1.5 * size:g})")
    d = np.asarray(msg.d, np.float64).reshape(-1)
    bad = [f"D[{i}]={v}" for i, v in enumerate(d) if not np.isfinite(v)]
    if bad:
        raise ConversionError(f"{where}: distortion {', '.join(bad)} not finite (D={d.tolist()})")
    if msg.d and msg.distortion_model not in ("plumb_bob", "rational_polynomial", ""):
        raise ConversionError(
            f"{where}: distortion model {msg.distortion_model!r} is not supported (plumb_bob, rational_polynomial)"
        )


class Undistorter:
    """CameraInfo -> (undistorted RGB, pinhole Camera). Each calibration is checked and its remap tables built once,
    kept per calibration (several cameras take turns without rebuilding them)."""

    MAX_CALIBRATIONS = 16

    def __init__(self) -> None:
        # (K, D, model, info size, image size) -> (remap tables or None, Camera)
        self._cache: Dict[Tuple, Tuple[Optional[Tuple[np.ndarray, np.ndarray]], Camera]] = {}

    def __call__(self, rgb: np.ndarray, info: CameraInfo) -> Tuple[np.ndarray, Camera]:
        h, w = rgb.shape[:2]
        key = (tuple(info.k), tuple(info.d), info.distortion_model, info.width, info.height, w, h)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._prepare(info, w, h)
            if len(self._cache) >= self.MAX_CALIBRATIONS:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = hit
        maps, camera = hit
        if maps is not None:
            rgb = cv2.remap(rgb, maps[0], maps[1], cv2.INTER_LINEAR)
        return rgb, camera

    @staticmethod
    def _prepare(info: CameraInfo, w: int, h: int):
        check_camera_info(info)
        if (w, h) != (info.width, info.height):
            raise ConversionError(
                f"image size {w}x{h} differs from CameraInfo size {info.width}x{info.height} "
                f"(frame {info.header.frame_id!r})"
            )
        K = np.asarray(info.k, np.float64).reshape(3, 3)
        d = np.asarray(info.d, np.float64)
        maps = cv2.initUndistortRectifyMap(K, d, None, K, (w, h), cv2.CV_16SC2) if d.size and np.any(d != 0) else None
        try:  # imp_core's own Camera validation (CameraError is a ValueError) names the parameter too
            camera = Camera.from_K(K, w, h)
        except ValueError as e:
            raise ConversionError(f"CameraInfo (frame {info.header.frame_id!r}): {e}") from e
        return maps, camera


# ---------------------------------------------------------------- poses and transforms
def pose_to_msg(parent_from_child: Pose) -> PoseMsg:
    """Pose (parent_from_child) -> geometry_msgs/Pose of ``child`` in ``parent``."""
    q = quat_wxyz_to_xyzw(parent_from_child.qvec)
    m = PoseMsg()
    m.position.x, m.position.y, m.position.z = (float(v) for v in parent_from_child.t)
    m.orientation.x, m.orientation.y, m.orientation.z, m.orientation.w = (float(v) for v in q)
    return m


def _to_pose(r, p) -> Pose:
    """ROS quaternion (x, y, z, w fields) + translation fields -> Pose; an invalid quaternion is an error."""
    q = quat_xyzw_to_wxyz([r.x, r.y, r.z, r.w])
    if not np.isfinite(q).all() or np.linalg.norm(q) < 1e-9:
        raise ConversionError(f"pose has an invalid quaternion {q.tolist()}")
    return Pose.from_qvec(q, [p.x, p.y, p.z])


def msg_to_pose(m: PoseMsg) -> Pose:
    """geometry_msgs/Pose (child in parent) -> Pose parent_from_child."""
    return _to_pose(m.orientation, m.position)


def transform_to_pose(t: Transform) -> Pose:
    """geometry_msgs/Transform -> Pose parent_from_child."""
    return _to_pose(t.rotation, t.translation)


def pose_to_transform(parent_from_child: Pose, parent: str, child: str, stamp_ns: int) -> TransformStamped:
    ts = TransformStamped()
    ts.header.frame_id = parent
    ts.header.stamp = ns_to_stamp(stamp_ns)
    ts.child_frame_id = child
    q = quat_wxyz_to_xyzw(parent_from_child.qvec)
    tr = ts.transform.translation
    tr.x, tr.y, tr.z = (float(v) for v in parent_from_child.t)
    ro = ts.transform.rotation
    ro.x, ro.y, ro.z, ro.w = (float(v) for v in q)
    return ts


# ---------------------------------------------------------------- results
STATUS_CODES: Dict[str, int] = {STATUS_OK: 0, STATUS_LOST: 1, STATUS_NOT_INITIALIZED: 2, STATUS_RELOCALIZING: 3}
STATUS_INPUT_ERROR = 4
LOST_VARIANCE = 9999.0


def result_to_msgs(result: LocalizationResult, base_from_camera: Pose, map_frame: str, stamp_ns: int,
                   map_id: str, status_override: Optional[int] = None):
    """LocalizationResult -> (imp_msgs/LocalizationResult, PoseWithCovarianceStamped of the base or None,
    map_from_base Pose or None). A failed result carries a huge covariance (never zero)."""
    from imp_msgs.msg import InstanceRecognition, StageTiming
    from imp_msgs.msg import LocalizationResult as ResultMsg

    msg = ResultMsg()
    msg.header.frame_id = map_frame
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.status = STATUS_CODES.get(result.status, 1) if status_override is None else status_override
    msg.status_text = result.status if not result.message else f"{result.status}: {result.message}"
    msg.mode = result.mode or ""
    msg.num_matches = int(result.num_matches)
    msg.num_inliers = int(result.num_inliers)
    msg.reference_images = [str(r) for r in result.references]
    msg.instances = [InstanceRecognition(instance_id=int(i), confidence=float(c)) for i, c in result.instances]
    msg.timings = [StageTiming(stage=str(k), milliseconds=float(v)) for k, v in result.timings.items()]
    msg.total_latency_ms = float(result.timings.get("total", sum(result.timings.values())))
    msg.map_id = map_id
    if not result.success:
        msg.pose.covariance = (np.eye(6) * LOST_VARIANCE).reshape(-1).tolist()
        msg.pose.pose.orientation.w = 1.0
        msg.camera_pose.orientation.w = 1.0
        return msg, None, None
    map_from_cam = result.pose.inverse()
    map_from_base = map_from_cam * base_from_camera.inverse()
    if result.covariance is not None:
        cov = covariance_of_attached_frame(result.covariance, map_from_cam, base_from_camera.inverse())
    else:
        cov = np.eye(6) * LOST_VARIANCE
    msg.camera_pose = pose_to_msg(map_from_cam)
    msg.pose = PoseWithCovariance(pose=pose_to_msg(map_from_base), covariance=cov.reshape(-1).tolist())
    pwc = PoseWithCovarianceStamped()
    pwc.header = msg.header
    pwc.pose = msg.pose
    return msg, pwc, map_from_base


def instances_to_msg(result: LocalizationResult, width: int, height: int, frame_id: str, stamp_ns: int):
    """The instances a frame's recognizer found -> imp_msgs/RecognizedInstances: ids and confidences best first,
    each one's share of the image and bounding box, and the mono16 label image at ``width`` x ``height``."""
    from imp_msgs.msg import InstanceRecognition, RecognizedInstances
    from sensor_msgs.msg import RegionOfInterest

    if result.label_map is None:
        raise ValueError("the result holds no instance label map (no recognizer ran on this frame)")
    labels = expand_labels(result.label_map, width, height).astype("<u2")
    ids = [int(i) for i, _ in result.instances]
    msg = RecognizedInstances()
    msg.header.frame_id = frame_id
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.instances = [InstanceRecognition(instance_id=int(i), confidence=float(c)) for i, c in result.instances]
    regions = instance_regions(labels, ids)
    msg.area = [float(a) for a, _ in regions]
    msg.boxes = [RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h) for _, (x, y, w, h) in regions]
    msg.labels = Image(height=int(height), width=int(width), encoding="mono16", is_bigendian=0, step=2 * int(width))
    msg.labels.header = msg.header
    msg.labels.data = np.ascontiguousarray(labels).tobytes()
    return msg


def labels_from_msg(msg) -> np.ndarray:
    """The (H, W) int32 instance label image of an imp_msgs/RecognizedInstances."""
    im = msg.labels
    if im.encoding != "mono16":
        raise ConversionError(f"instance labels must be mono16, got {im.encoding!r}")
    return _rows(im, 2, 1).view(">u2" if im.is_bigendian else "<u2").reshape(im.height, im.width).astype(np.int32)


def timings_dict(msg) -> Dict[str, float]:
    return {t.stage: float(t.milliseconds) for t in msg.timings}


def covariance_from_msg(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, np.float64).reshape(6, 6)
