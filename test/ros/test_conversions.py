"""Image, CameraInfo, pose and result conversions (no DDS)."""
from __future__ import annotations

import numpy as np
import pytest

from imp_core.types import Camera, LocalizationResult, Pose
from imp_ros import conversions as cv


def _smooth_rgb(h=48, w=64):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4, y * 5, (x + y) * 2], -1).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("enc,tol", [("rgb8", 0), ("bgr8", 0), ("mono8", 60), ("mono16", 60), ("bayer_rggb8", 8),
                                     ("bayer_bggr8", 8), ("bayer_gbrg8", 8), ("bayer_grbg8", 8)])
def test_image_round_trip(enc, tol):
    rgb = _smooth_rgb()
    out = cv.image_to_rgb(cv.rgb_to_image(rgb, enc, "cam", 123))
    assert out.shape == rgb.shape
    assert out.dtype == np.uint8
    if enc.startswith("mono"):
        grey = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2])
        assert np.abs(out[..., 0].astype(float) - grey).max() <= 1.5
    else:  # bayer: interior pixels after demosaicing a smooth image
        assert np.abs(out[2:-2, 2:-2].astype(int) - rgb[2:-2, 2:-2]).max() <= tol


def test_image_with_row_padding_and_errors():
    rgb = _smooth_rgb()
    msg = cv.rgb_to_image(rgb, "rgb8")
    padded = np.zeros((48, 64 * 3 + 8), np.uint8)
    padded[:, : 64 * 3] = rgb.reshape(48, -1)
    msg.step, msg.data = 64 * 3 + 8, padded.tobytes()
    assert (cv.image_to_rgb(msg) == rgb).all()
    msg.encoding = "yuv422_odd"
    with pytest.raises(cv.ConversionError, match="yuv422_odd"):
        cv.image_to_rgb(msg)
    msg = cv.rgb_to_image(rgb, "rgb8")
    msg.data = msg.data[:100]
    with pytest.raises(cv.ConversionError, match="expected 48 rows"):
        cv.image_to_rgb(msg)


def test_compressed():
    rgb = _smooth_rgb()
    assert (cv.compressed_to_rgb(cv.rgb_to_compressed(rgb, "png")) == rgb).all()
    assert np.abs(cv.compressed_to_rgb(cv.rgb_to_compressed(rgb, "jpeg")).astype(int) - rgb).mean() < 3
    bad = cv.rgb_to_compressed(rgb, "png")
    bad.data = b"not an image"
    with pytest.raises(cv.ConversionError, match="cannot decode"):
        cv.compressed_to_rgb(bad)


def test_camera_info_and_undistortion():
    cam = Camera("PINHOLE", 64, 48, [50.0, 52.0, 32.0, 24.0])
    info = cv.camera_to_info(cam, "cam")
    assert info.k[2] == pytest.approx(31.5)  # COLMAP principal point is +0.5 w.r.t. ROS/OpenCV
    rgb = _smooth_rgb()
    und = cv.Undistorter()
    out, cam2 = und(rgb, info)
    assert (out == rgb).all()
    assert np.allclose(cam2.params, cam.params)
    dist = cv.camera_to_info(Camera("OPENCV", 64, 48, [50, 52, 32, 24, -0.2, 0.05, 0, 0]), "cam")
    out, cam3 = und(rgb, dist)
    assert cam3.model == "PINHOLE"
    assert not (out == rgb).all()
    info.k = [0.0] * 9
    with pytest.raises(cv.ConversionError, match="uncalibrated"):
        und(rgb, info)
    with pytest.raises(cv.ConversionError, match="differs"):
        und(rgb[:40], cv.camera_to_info(cam, "cam"))


def test_undistorter_keeps_each_cameras_tables(monkeypatch):
    """Cameras of a rig take turns: each calibration's remap tables are built once, not at every switch."""
    calls = []
    build = cv.cv2.initUndistortRectifyMap
    monkeypatch.setattr(cv.cv2, "initUndistortRectifyMap", lambda *a: calls.append(1) or build(*a))
    left = cv.camera_to_info(Camera("OPENCV", 64, 48, [50, 52, 32, 24, -0.2, 0.05, 0, 0]), "left")
    right = cv.camera_to_info(Camera("OPENCV", 64, 48, [55, 55, 30, 25, 0.1, 0, 0, 0]), "right")
    und, rgb = cv.Undistorter(), _smooth_rgb()
    outs = [und(rgb, info)[0] for info in (left, right, left, right)]
    assert len(calls) == 2
    assert (outs[0] == outs[2]).all()
    assert (outs[1] == outs[3]).all()
    assert not (outs[0] == outs[1]).all()


@pytest.mark.parametrize("field,index,value,match", [
    ("d", 0, float("nan"), r"D\[0\]=nan"), ("d", 3, float("inf"), r"D\[3\]=inf"),
    ("k", 0, -500.0, r"K\[0\] \(fx\)"), ("k", 4, 0.0, r"K\[4\] \(fy\)"), ("k", 0, float("nan"), r"K\[0\]=nan"),
    ("k", 4, float("inf"), r"K\[4\]=inf"), ("k", 2, 5000.0, r"K\[2\] \(cx\)"), ("k", 5, -300.0, r"K\[5\] \(cy\)"),
])
def test_camera_info_validation_names_the_parameter(field, index, value, match):
    """Issue 11: D=[nan,0,0,0,0] (and non-finite / non-positive K) was accepted and gave a silent LOST."""
    info = cv.camera_to_info(Camera("PINHOLE", 64, 48, [50.0, 52.0, 32.0, 24.0]), "cam")
    vals = list(getattr(info, field))
    vals[index] = value
    setattr(info, field, vals)
    with pytest.raises(cv.ConversionError, match=match):
        cv.Undistorter()(_smooth_rgb(), info)


def test_pose_transform_and_result():
    rng = np.random.default_rng(0)
    q = rng.normal(size=4)
    p = Pose.from_qvec(q / np.linalg.norm(q), rng.normal(size=3))
    back = cv.msg_to_pose(cv.pose_to_msg(p))
    assert np.allclose(back.matrix, p.matrix)
    ts = cv.pose_to_transform(p, "map", "odom", 5_000_000_123)
    assert cv.stamp_to_ns(ts.header.stamp) == 5_000_000_123
    assert np.allclose(cv.transform_to_pose(ts.transform).matrix, p.matrix)
    base_from_cam = Pose.from_qvec([0.5, -0.5, 0.5, -0.5], [0.5, 0, 1.2])
    res = LocalizationResult(status="OK", pose=p, covariance=np.eye(6) * 0.01, num_matches=50, num_inliers=40,
                             references=["db/1.png"], instances=[(3, 0.9)], timings={"extraction": 5.0, "total": 9.0},
                             mode="tracking")
    msg, pwc, map_from_base = cv.result_to_msgs(res, base_from_cam, "map", 42, "m1")
    assert msg.status == 0
    assert msg.num_inliers == 40
    assert msg.instances[0].instance_id == 3
    assert np.allclose(cv.msg_to_pose(msg.camera_pose).matrix, p.inverse().matrix)
    assert np.allclose(map_from_base.matrix, (p.inverse() * base_from_cam.inverse()).matrix)
    assert np.allclose(cv.msg_to_pose(pwc.pose.pose).matrix, map_from_base.matrix)
    lost, none, _ = cv.result_to_msgs(LocalizationResult(status="LOST", message="no matches"), base_from_cam,
                                      "map", 43, "m1")
    assert none is None
    assert lost.status == 1
    assert min(np.diag(np.reshape(lost.pose.covariance, (6, 6)))) > 1000
