"""The localizer node publishes what its map's recognizer found: imp_msgs/RecognizedInstances on ~/instances for
every frame the recognizer ran on, and with ``publish_overlay`` the query with the instances' colours blended over
it plus the PnP inliers on ~/overlay. A localizer whose map has no recognizer offers neither topic. Real rclpy,
separate processes, the tiny world's map with a recognizer trained for 30 s (picked up without configuration)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from rosutil import graph_of, start_graph, wait_log, wait_until

pytestmark = [pytest.mark.timeout(420), pytest.mark.ros]


@pytest.fixture(scope="module")
def rec_map(ros_map, tmp_path_factory):
    """A copy of the ROS tests' map with its own recognizer (`imp map build --recognition` does the same)."""
    from imp_core.training.recognition.pipeline import build_recognizer

    map_dir = tmp_path_factory.mktemp("ros_rec") / "map"
    shutil.copytree(ros_map, map_dir)
    card = build_recognizer(map_dir, budget_min=0.5, threads=1, progress=False)
    assert card["used_by_localizer"], card["fit"]  # else the localizer would not pick it up on its own
    return map_dir


@pytest.fixture(scope="module")
def nodes(rec_map, ros_map):
    """One localizer on the map with a recognizer (overlay on), one on the same map without (its own topics)."""
    common = {"autostart": True, "matcher": "nn", "device": "cpu", "image_qos": "reliable", "tf_rate": 0.0}
    g = start_graph(graph_of(
        ("localizer", "localizer", {**common, "map": str(rec_map), "publish_overlay": True}),
        ("localizer_plain", "localizer", {**common, "map": str(ros_map), "publish_overlay": True,
                                          "publish_tf": False, "result_topic": "/plain/result",
                                          "pose_topic": "/plain/pose"})))
    try:
        for name in ("localizer", "localizer_plain"):
            wait_log(g, name, "active: listening", 180)
        yield g
    finally:
        g.stop()


def _blend(img, color, alpha=0.45):
    return np.clip((1 - alpha) * img.astype(np.float32) + alpha * color.astype(np.float32) + 0.5, 0, 255)


def test_instances_and_overlay_for_frames_the_recognizer_ran_on(ros, nodes, rec_map, ros_world):
    from imp_msgs.msg import LocalizationResult, RecognizedInstances
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from scipy.ndimage import binary_erosion
    from sensor_msgs.msg import CameraInfo, Image
    from std_srvs.srv import Trigger

    from imp_core.localization.visualize import instance_colors
    from imp_core.recognition.recognizer import Recognizer
    from imp_core.world.synthetic import SyntheticWorld
    from imp_ros import conversions as cv

    w = SyntheticWorld(ros_world)
    results, s1 = ros.collect(LocalizationResult, "/imp/localization/result")
    plain, s2 = ros.collect(LocalizationResult, "/plain/result")
    instances, s3 = ros.collect(RecognizedInstances, "/localizer/instances")
    overlays, s4 = ros.collect(Image, "/localizer/overlay")
    plain_instances, s5 = ros.collect(RecognizedInstances, "/localizer_plain/instances")
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    pub_img = ros.node.create_publisher(Image, "/camera/image_raw", qos)
    pub_info = ros.node.create_publisher(CameraInfo, "/camera/camera_info", qos)
    wait_until(lambda: pub_img.get_subscription_count() >= 2 and pub_info.get_subscription_count() >= 2
               and s3.get_publisher_count() >= 1 and s4.get_publisher_count() >= 1
               and ros.node.count_publishers("/imp/localization/result") >= 1
               and ros.node.count_publishers("/plain/result") >= 1, 30, "both localizers' endpoints")
    # no recognizer, no recognition topics (whatever publish_overlay says)
    assert ros.node.count_publishers("/localizer_plain/instances") == 0
    assert ros.node.count_publishers("/localizer_plain/overlay") == 0

    rec = Recognizer({"model": str(rec_map / "recognition" / "model.pt"), "device": "cpu",
                      "max_instances": 30})  # the instance stage's k_rec
    names = [n for n in w.query_names("day")][:3]
    for k, name in enumerate(names):
        assert ros.call(Trigger, "/localizer/relocalize", Trigger.Request()).success  # global search: recognition
        image = w.image(name)
        stamp = 1_000_000_000 * (100 + 10 * k)
        img_msg = cv.rgb_to_image(image, "rgb8", "camera_optical", stamp)
        info = cv.camera_to_info(w.camera(name), "camera_optical", stamp)
        pub_info.publish(info)
        pub_img.publish(img_msg)

        def of(box):
            return next((m for m in box if cv.stamp_to_ns(m.header.stamp) == stamp), None)

        res = wait_until(lambda: of(results), 60, f"the result of {name}")
        wait_until(lambda: of(plain), 60, f"the plain localizer's result of {name}")
        msg = wait_until(lambda: of(instances), 20, f"the instances of {name}")
        ov = wait_until(lambda: of(overlays), 20, f"the overlay of {name}")
        assert res.status == LocalizationResult.STATUS_OK, res.status_text

        # the instances are the recognizer's on this image, best first, as in the result message
        want = rec.predict(image)
        ids = [i.instance_id for i in msg.instances]
        assert ids
        assert ids == [i for i, _ in want.instances]
        assert ids == [i.instance_id for i in res.instances]
        assert np.allclose([i.confidence for i in msg.instances], [c for _, c in want.instances], atol=1e-4)
        assert msg.header.frame_id == "camera_optical"
        labels = cv.labels_from_msg(msg)
        assert labels.shape == image.shape[:2]
        assert set(ids) <= set(np.unique(labels).tolist())
        for iid, area, box in zip(ids, msg.area, msg.boxes):
            ys, xs = np.nonzero(labels == iid)
            assert area == pytest.approx(len(xs) / labels.size, rel=1e-5)
            assert (box.x_offset, box.y_offset) == (xs.min(), ys.min())
            assert (box.width, box.height) == (xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        # the label image is the recognizer's (a result keeps it at <= 256 px a side, so edges may move a pixel)
        assert (labels == want.label_map).mean() > 0.97

        # overlay: the query, instance pixels blended with the instance's colour, inliers in green
        assert (ov.width, ov.height, ov.encoding) == (image.shape[1], image.shape[0], "rgb8")
        over = cv.image_to_rgb(ov)
        inside = binary_erosion(labels > 0, iterations=3)
        inside[:40] = False  # the status line
        lut = instance_colors(np.arange(labels.max() + 1))
        blended = _blend(image[inside], lut[labels[inside]])
        assert (np.abs(over[inside].astype(np.float32) - blended).max(1) <= 1).mean() > 0.8  # dots/ids on the rest
        outside = binary_erosion(labels == 0, iterations=3)
        outside[:40] = False
        if outside.sum() > 1000:
            assert (over[outside] == image[outside]).all(1).mean() > 0.8
        assert (over == np.array([40, 255, 40], np.uint8)).all(-1).sum() >= res.num_inliers  # the inlier dots

    # the plain localizer localized the same frames but never announced instances
    assert len(plain) >= len(names)
    assert not plain_instances
    assert not any(r.instances for r in plain)
    for s in (s1, s2, s3, s4, s5):
        ros.node.destroy_subscription(s)
    ros.node.destroy_publisher(pub_img)
    ros.node.destroy_publisher(pub_info)
