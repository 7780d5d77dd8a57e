"""End to end over real DDS: replay (dataset folder, mcap bag, ROS 1 bag) -> localizer -> evaluator, each a
separate process; lifecycle transitions; TF consistency; LOST and input errors while the node keeps running."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from rosutil import graph_of, start_graph, wait_until

pytestmark = [pytest.mark.timeout(300), pytest.mark.ros]


@pytest.fixture(scope="module")
def localizer(ros, ros_map):
    """One localizer process for the module, brought up through /localizer/change_state (no autostart)."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    g = start_graph(graph_of(("localizer", "localizer", {
        "autostart": False, "map": str(ros_map), "matcher": "nn", "coarse": "tracking,retrieval",
        "device": "cpu", "image_qos": "sensor_data", "tf_rate": 20.0, "publish_debug_image": True})))
    try:
        for tid in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            res = ros.call(ChangeState, "/localizer/change_state",
                           ChangeState.Request(transition=Transition(id=tid)), timeout=60.0)
            assert res.success, f"lifecycle transition {tid} failed:\n{''.join(g.output['localizer'])}"
        st = ros.call(GetState, "/localizer/get_state", GetState.Request())
        assert st.current_state.label == "active"
        yield g
        for tid in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP):  # frees map and models
            res = ros.call(ChangeState, "/localizer/change_state", ChangeState.Request(transition=Transition(id=tid)))
            assert res.success, f"lifecycle transition {tid} failed"
        st = ros.call(GetState, "/localizer/get_state", GetState.Request())
        assert st.current_state.label == "unconfigured"
    finally:
        g.stop()


def _replay_and_evaluate(run_graph, tmp_path, replay_params):
    out = tmp_path / "eval"
    g = run_graph(graph_of(
        ("evaluator", "evaluator", {"output_dir": str(out), "result_wait": 10.0}),
        ("replay", "replay", {"lockstep": True, "lockstep_timeout": 30.0, "wait_for": ["image", "frames", "evaluator"],
                              **replay_params})))
    codes = g.wait(timeout=150)
    assert codes == {"evaluator": 0, "replay": 0}, "".join(sum(g.output.values(), []))
    summary = json.loads((out / "summary.json").read_text())
    return out, summary


def _assert_day_accuracy(summary, n_frames):
    assert summary["results"] == summary["frames"] == n_frames
    day = summary["accuracy"]["day"]
    assert day["recall"][1] >= 0.75, summary["table"]  # (0.5 m, 5 deg)
    assert day["median_t"] < 0.25


def test_synthetic_sequence_tf_and_outputs(ros, localizer, ros_world, run_graph, tmp_path):
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from sensor_msgs.msg import Image

    from imp_ros import conversions as cv
    from imp_ros.tf_buffer import TfBuffer, TfListener

    poses, sub = ros.collect(PoseWithCovarianceStamped, "/imp/localization/pose")
    debug, dsub = ros.collect(Image, "/imp/localization/debug_image")
    buf = TfBuffer(cache_s=60.0)
    listener = TfListener(ros.node, buf)
    wait_until(lambda: ros.node.count_publishers("/imp/localization/pose") >= 1
               and ros.node.count_publishers("/imp/localization/debug_image") >= 1, 10, "the localizer's publishers")
    out, summary = _replay_and_evaluate(run_graph, tmp_path, {"source": str(ros_world), "condition": "day",
                                                               "odom_offset": [2.0, -1.0, 0.0, 15.0]})
    _assert_day_accuracy(summary, 8)
    for f in ("results_imp.txt", "trajectory_estimate.tum", "trajectory_ground_truth.tum", "frames.csv",
              "trajectory.png", "error_cdf.png"):
        assert (out / f).stat().st_size > 0, f
    assert "extraction" in summary["latency_ms"]
    assert summary["latency_ms"]["end_to_end"]["p50"] > 0
    # TF map->odom (from the localizer) composed with odom->base at the image time gives the published base pose.
    # odom->base is the replay's simulated odometry: odom_from_map(offset) * ground-truth map_from_base.
    from imp_core.types import Pose
    from imp_core.world.synthetic import SyntheticWorld
    from imp_ros.replay_node import ReplayNode

    wait_until(lambda: len(poses) >= 6, 10, "published poses")
    wait_until(lambda: buf.can_transform("map", "odom"), 10, "map->odom on /tf")
    last = poses[-1]
    stamp = cv.stamp_to_ns(last.header.stamp)
    rows = [ln.split(",") for ln in (out / "frames.csv").read_text().splitlines()[1:]]
    t_row, name = min(((float(r[0]), r[1]) for r in rows), key=lambda tr: abs(tr[0] - stamp * 1e-9))
    assert abs(t_row - stamp * 1e-9) < 1e-4
    # lockstep: frames are stamped on the playback timeline, the source's spacing (gaps over max_gap, 1 s, become one
    # frame period), however long each result took, so the localizer's tracking sees camera time
    world = SyntheticWorld(ros_world)
    played = sorted((float(r[0]), r[1]) for r in rows)
    for (t0, n0), (t1, n1) in zip(played, played[1:]):
        gap = world.stamp(n1) - world.stamp(n0)
        assert abs((t1 - t0) - (gap if 0 <= gap <= 1.0 else 0.1)) < 2e-6, (n0, n1, t1 - t0, gap)
    e = ReplayNode.PARAMS["camera_extrinsics"].default
    base_from_cam = Pose.from_qvec([e[6], e[3], e[4], e[5]], e[:3])
    yaw = np.radians(15.0)
    odom_from_map = Pose(np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]]),
                         [2.0, -1.0, 0.0])
    odom_from_base = odom_from_map * SyntheticWorld(ros_world).pose(name).inverse() * base_from_cam.inverse()
    map_from_base = cv.msg_to_pose(last.pose.pose)
    via_tf = buf.lookup("map", "odom") * odom_from_base
    assert np.linalg.norm(via_tf.t - map_from_base.t) < 0.02
    assert np.degrees(np.arccos(np.clip((np.trace(via_tf.R.T @ map_from_base.R) - 1) / 2, -1, 1))) < 0.5
    # and map->odom is close to the inverse of the simulated offset (the localization error is small)
    map_from_odom = buf.lookup("map", "odom")
    assert np.linalg.norm(map_from_odom.t - odom_from_map.inverse().t) < 0.2
    assert abs(np.arctan2(map_from_odom.R[1, 0], map_from_odom.R[0, 0]) + yaw) < np.radians(1.0)
    assert len(last.pose.covariance) == 36
    assert 0 < last.pose.covariance[0] < 1.0
    wait_until(lambda: debug, 10, "a debug image")
    assert (debug[-1].width, debug[-1].height) == (640, 480)
    assert debug[-1].encoding == "rgb8"
    ros.node.destroy_subscription(sub)
    ros.node.destroy_subscription(dsub)
    for s in listener._subs:
        ros.node.destroy_subscription(s)


@pytest.mark.parametrize("storage", ["mcap", "ros1"])
def test_bag_replay(localizer, ros_world, run_graph, tmp_path, storage):
    from imp_core.world.synthetic import SyntheticWorld
    from imp_ros.bags import dataset_to_bag

    bag = tmp_path / ("day.bag" if storage == "ros1" else "day_bag")
    dataset_to_bag(SyntheticWorld(ros_world), bag, storage, "day", image_topic="/cam0/image",
                   info_topic="/cam0/info", encoding="bgr8" if storage == "ros1" else "rgb8")
    _, summary = _replay_and_evaluate(run_graph, tmp_path, {
        "source": str(bag), "remap": ["/cam0/image:=/camera/image_raw", "/cam0/info:=/camera/camera_info"],
        "bag_ground_truth_topic": "/ground_truth/camera_pose"})
    summary["accuracy"]["day"] = summary["accuracy"]["all"]  # bags carry no condition
    _assert_day_accuracy(summary, 8)


class Client:
    """Publishes image + CameraInfo pairs to the localizer and collects its results and /diagnostics."""

    def __init__(self, ros, world_dir):
        from diagnostic_msgs.msg import DiagnosticArray
        from imp_msgs.msg import LocalizationResult
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        from imp_core.world.synthetic import SyntheticWorld
        from imp_ros import conversions as cv

        self.ros, self.cv = ros, cv
        self.w = w = SyntheticWorld(world_dir)
        name = w.sequences[sorted(w.sequences)[0]][0]
        self.name = name if w.condition(name) == "day" else next(n for n in w.query_names("day"))
        self.info = cv.camera_to_info(w.camera(self.name), "camera_optical")
        self.results, self._rsub = ros.collect(LocalizationResult, "/imp/localization/result")
        self.diags, self._dsub = ros.collect(DiagnosticArray, "/diagnostics")
        wait_until(lambda: ros.node.count_publishers("/imp/localization/result") >= 1
                   and ros.node.count_publishers("/diagnostics") >= 1, 10, "the localizer's publishers")
        self.qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_img = ros.node.create_publisher(Image, "/camera/image_raw", self.qos)
        self.pub_info = ros.node.create_publisher(CameraInfo, "/camera/camera_info", self.qos)
        self.pubs = [self.pub_img, self.pub_info]
        wait_until(lambda: self.pub_img.get_subscription_count() > 0 and self.pub_info.get_subscription_count() > 0,
                   10, "localizer subscriptions")

    def image(self, encoding="rgb8"):
        return self.cv.rgb_to_image(self.w.image(self.name), encoding, "camera_optical")

    def send(self, img_msg, info_msg=None):
        info_msg = info_msg or self.info
        stamp = time.time_ns()
        img_msg.header.stamp = info_msg.header.stamp = self.cv.ns_to_stamp(stamp)
        self.pub_info.publish(info_msg)
        self.pub_img.publish(img_msg)
        return wait_until(lambda: next((r for r in self.results if self.cv.stamp_to_ns(r.header.stamp) == stamp),
                                       None), 30, "the localizer's result")

    def close(self):
        for s in (self._rsub, self._dsub):
            self.ros.node.destroy_subscription(s)
        for p in self.pubs:
            self.ros.node.destroy_publisher(p)


@pytest.fixture(scope="module")
def client(ros, localizer, ros_world):
    c = Client(ros, ros_world)
    try:
        yield c
    finally:
        c.close()


def test_black_image_is_lost_with_a_huge_covariance(ros, client):
    from imp_msgs.msg import LocalizationResult
    from std_srvs.srv import Trigger

    assert ros.call(Trigger, "/localizer/relocalize", Trigger.Request()).success
    r = client.send(client.cv.rgb_to_image(np.zeros_like(client.w.image(client.name)), "rgb8", "camera_optical"))
    assert r.status == LocalizationResult.STATUS_LOST, r.status_text
    assert all(v > 1000 for v in np.asarray(r.pose.covariance).reshape(6, 6).diagonal())


def test_unknown_encoding_is_an_input_error(client):
    from imp_msgs.msg import LocalizationResult

    weird = client.image()
    weird.encoding = "yuv_fancy42"
    r = client.send(weird)
    assert r.status == LocalizationResult.STATUS_INPUT_ERROR, r.status_text
    assert "yuv_fancy42" in r.status_text


def test_uncalibrated_camera_info_is_an_input_error_and_a_diagnostic(client):
    from diagnostic_msgs.msg import DiagnosticStatus
    from imp_msgs.msg import LocalizationResult

    bad = client.cv.camera_to_info(client.w.camera(client.name), "camera_optical")
    bad.k = [0.0] * 9
    r = client.send(client.image(), bad)
    assert r.status == LocalizationResult.STATUS_INPUT_ERROR, r.status_text
    assert "uncalibrated" in r.status_text
    wait_until(lambda: any(s.level == DiagnosticStatus.ERROR and "uncalibrated" in s.message
                           for d in client.diags for s in d.status), 5, "an ERROR diagnostic naming the bad CameraInfo")


def test_initialpose_becomes_the_tracking_prior(ros, localizer, client):
    """/initialpose (base pose in map) becomes the tracking prior; extrinsics as the replay publishes them."""
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from imp_msgs.msg import LocalizationResult

    from imp_core.types import Pose
    from imp_ros.replay_node import ReplayNode
    from imp_ros.tf_buffer import TfBroadcaster

    cv, w = client.cv, client.w
    e = ReplayNode.PARAMS["camera_extrinsics"].default
    base_from_cam = Pose.from_qvec([e[6], e[3], e[4], e[5]], e[:3])
    static = TfBroadcaster(ros.node, static=True)
    client.pubs.append(static._pub)
    static.send([cv.pose_to_transform(base_from_cam, "base_link", "camera_optical", 0)])
    wait_until(lambda: static._pub.get_subscription_count() > 0, 10, "the localizer's /tf_static subscription")
    pub_init = ros.node.create_publisher(PoseWithCovarianceStamped, "/initialpose", client.qos)
    client.pubs.append(pub_init)
    wait_until(lambda: pub_init.get_subscription_count() > 0, 10, "the localizer's /initialpose subscription")
    init = PoseWithCovarianceStamped()
    init.header.frame_id = "map"
    init.pose.pose = cv.pose_to_msg(w.pose(client.name).inverse() * base_from_cam.inverse())
    n_log = len(localizer.output["localizer"])
    pub_init.publish(init)
    wait_until(lambda: any("prior set from /initialpose" in ln for ln in localizer.output["localizer"][n_log:]), 10,
               "the localizer to take the prior")
    r = client.send(client.image())  # still alive and localizing
    assert r.status == LocalizationResult.STATUS_OK, r.status_text
    assert r.mode == "tracking", r.mode


def test_localize_service_answers_while_streaming(ros, client):
    from imp_msgs.msg import LocalizationResult
    from imp_msgs.srv import LocalizeImage

    cv, w = client.cv, client.w
    client.send(client.image())  # the topic path is busy with a frame too
    req = LocalizeImage.Request(image=client.image("bgr8"), camera_info=client.info)
    resp = ros.call(LocalizeImage, "/localizer/localize", req, timeout=30.0)
    assert resp.success, resp.message
    assert resp.result.status == LocalizationResult.STATUS_OK, resp.message
    dt = np.linalg.norm(cv.msg_to_pose(resp.result.camera_pose).t - w.pose(client.name).center)
    assert dt < 0.25, dt


def test_diagnostics_report_rate_latency_and_drops(client):
    client.send(client.image())
    wait_until(lambda: client.diags, 10, "a /diagnostics message")
    keys = {kv.key: kv.value for kv in client.diags[-1].status[0].values}
    assert {"input_rate_hz", "latency_p50_ms", "dropped", "state"} <= set(keys), keys


def test_corrupt_bag_gives_clear_error(run_graph, tmp_path):
    bag = tmp_path / "broken.bag"
    bag.write_bytes(b"#ROSBAG V2.0\n" + b"\x00garbage" * 200)
    g = run_graph(graph_of(("replay", "replay", {"source": str(bag), "wait_for": [""], "wait_timeout": 1.0})))
    codes = g.wait(timeout=60)
    out = "".join(g.output["replay"])
    assert codes["replay"] == 2, out
    assert "cannot read bag" in out
    assert str(bag) in out
