"""Bags through rosbags: ROS 2 mcap/sqlite3 and ROS 1 round trips, remapping, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped

from imp_core.types import Camera
from imp_ros import bags
from imp_ros import conversions as cv


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_round_trip(tmp_path, storage):
    rgb = (np.arange(48 * 64 * 3) % 251).astype(np.uint8).reshape(48, 64, 3)
    cam = Camera("OPENCV", 64, 48, [50, 51, 32.5, 24.5, 0.1, 0.01, 0, 0])
    ps = PoseStamped()
    ps.header.frame_id, ps.pose.position.x, ps.pose.orientation.w = "map", 1.5, 1.0
    msgs = [("/cam/info", 10**9, cv.camera_to_info(cam, "cam", 10**9)), ("/gt", 10**9, ps)]
    msgs += [("/cam/image", 10**9 + i * 10**8, cv.rgb_to_image(rgb, "bgr8", "cam", 10**9 + i * 10**8))
             for i in range(3)]
    path = bags.write_bag(tmp_path / ("b.bag" if storage == "ros1" else "b"), msgs, storage)
    assert bags.is_bag(path)
    assert bags.bag_topics(path)["/cam/info"] == "sensor_msgs/msg/CameraInfo"
    out = list(bags.read_bag(path, remap={"/cam/image": "/camera/image_raw"}))
    assert [t for t, _, _ in out].count("/camera/image_raw") == 3
    img = next(m for t, _, m in out if t == "/camera/image_raw")
    assert (cv.image_to_rgb(img) == rgb).all()
    assert img.header.frame_id == "cam"
    info = next(m for t, _, m in out if t == "/cam/info")
    assert np.allclose(info.k, cv.camera_to_info(cam).k)
    assert np.allclose(info.d, [0.1, 0.01, 0, 0, 0])
    gt = next(m for t, _, m in out if t == "/gt")
    assert gt.pose.position.x == 1.5
    assert [s for t, s, _ in out if t == "/camera/image_raw"] == [10**9, 11 * 10**8, 12 * 10**8]
    with pytest.raises(bags.BagError, match="none of the topics"):
        list(bags.read_bag(path, ["/nope"]))


def test_corrupt_and_missing(tmp_path):
    bad = tmp_path / "bad.bag"
    bad.write_bytes(b"garbage" * 50)
    with pytest.raises(bags.BagError, match="bad.bag"):
        list(bags.read_bag(bad))
    with pytest.raises(bags.BagError, match="does not exist"):
        list(bags.read_bag(tmp_path / "missing.mcap"))
    with pytest.raises(ValueError, match="unknown bag storage"):
        bags.write_bag(tmp_path / "x", [], "zip")


def _truncated_mcap(tmp_path, n=20, keep=0.5):
    rgb = (np.arange(48 * 64 * 3) % 251).astype(np.uint8).reshape(48, 64, 3)
    cam = Camera("PINHOLE", 64, 48, [50, 50, 32, 24])
    msgs = []
    for i in range(n):
        ns = 10**9 + i * 10**8
        msgs += [("/cam/info", ns, cv.camera_to_info(cam, "cam", ns)),
                 ("/cam/image", ns, cv.rgb_to_image(rgb, "rgb8", "cam", ns))]
    path = bags.write_bag(tmp_path / "trunc", msgs, "mcap")
    f = next(path.glob("*.mcap"))
    data = f.read_bytes()
    f.write_bytes(data[: int(len(data) * keep)])
    return path, rgb


def test_truncated_mcap_is_salvaged_with_a_warning(tmp_path):
    """Issue 11: a truncated mcap played 0 of its frames; the intact part is read and the count reported."""
    path, rgb = _truncated_mcap(tmp_path)
    warnings = []
    assert bags.bag_topics(path) == {"/cam/info": "sensor_msgs/msg/CameraInfo", "/cam/image": "sensor_msgs/msg/Image"}
    out = list(bags.read_bag(path, ["/cam/image"], warn=warnings.append))
    assert 5 <= len(out) < 20
    assert [s for _, s, _ in out] == [10**9 + i * 10**8 for i in range(len(out))]
    assert all((cv.image_to_rgb(m) == rgb).all() for _, _, m in out)
    assert len(warnings) == 1
    assert f"salvaged {len(out)} readable messages" in warnings[0]
    assert "trunc" in warnings[0]
    # a single .mcap file works the same; a file with no mcap content stays a clear error
    single = tmp_path / "single.mcap"
    single.write_bytes(next(path.glob("*.mcap")).read_bytes())
    assert len(list(bags.read_bag(single, warn=warnings.append))) > len(out)
    (tmp_path / "junk.mcap").write_bytes(b"garbage" * 100)
    with pytest.raises(bags.BagError, match="junk.mcap"):
        list(bags.read_bag(tmp_path / "junk.mcap"))
