"""``replay`` node: plays a dataset folder (synthetic world, Aachen v1.1, RobotCar Seasons) or a ROS 1 / ROS 2 bag
as a camera stream (Image or CompressedImage + CameraInfo), with the ground truth when known.

Modes: real time scaled by ``speed`` (frames stamped with the wall clock by default), ``loop``, and ``lockstep``
(wait for the localizer's result for each frame, so a benchmark loses none; frames are then stamped on the playback
timeline, the first frame's clock time plus the source's spacing, however long each result takes). Per frame it
publishes, in order: TF odom->base (simulated odometry from the ground truth, when known), CameraInfo,
``imp_msgs/ReplayFrame`` (name, condition, ground truth), ground-truth PoseStamped, then the image. At the end it
publishes a JSON summary on the latched ``done`` topic.
"""
from __future__ import annotations

import fnmatch
import json
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from imp_core.datasets import open_dataset
from imp_core.imageio import read_image
from imp_core.types import Pose, quat_xyzw_to_wxyz
from imp_ros import bags, common, multicam
from imp_ros import conversions as cv
from imp_ros.frame import Frame
from imp_ros.tf_buffer import TfBroadcaster


def dataset_frames(path: str, condition: str, pattern: str, rate: float, frame_id: str) -> Iterator[Frame]:
    """Frames of a localization dataset's queries, in time (then name) order."""

    ds = open_dataset(path)
    items = [q for q in ds.queries() if (not condition or q.condition == condition)
             and fnmatch.fnmatch(q.name, pattern)]
    if not items:
        raise ValueError(f"dataset {path}: no query matches condition={condition!r} names={pattern!r}")
    items.sort(key=lambda q: (q.stamp is None, q.stamp if q.stamp is not None else 0.0, q.name))
    t0 = None
    for i, q in enumerate(items):
        rgb = read_image(q.path)
        stamp = q.stamp if q.stamp is not None else i / rate
        t0 = stamp if t0 is None else t0
        yield Frame(i, int(round(stamp * 1e9)), q.name, q.condition or "", rgb=rgb,
                    info=cv.camera_to_info(q.camera, frame_id),
                    map_from_cam=None if q.gt_pose is None else q.gt_pose.inverse())


def bag_frames(path: str, image_topic: str, info_topic: str, gt_topic: str, warn=None) -> Iterator[Frame]:
    """Frames of a bag: each image with the latest CameraInfo and the ground truth at its stamp when present."""
    topics = bags.bag_topics(path)
    if not image_topic:
        cands = [t for t, m in topics.items() if m in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")]
        if not cands:
            raise bags.BagError(f"bag {path} has no Image/CompressedImage topic (topics: {topics})")
        image_topic = sorted(cands)[0]
    if not info_topic:
        cands = [t for t, m in topics.items() if m == "sensor_msgs/msg/CameraInfo"]
        info_topic = sorted(cands)[0] if cands else ""
    for t in (image_topic, info_topic, gt_topic):
        if t and t not in topics:
            raise bags.BagError(f"bag {path} has no topic {t!r} (topics: {sorted(topics)})")
    gt: Dict[int, Pose] = {}
    if gt_topic:
        for _, stamp, m in bags.read_bag(path, [gt_topic], warn=warn):
            p = m.pose.pose if hasattr(m.pose, "pose") else m.pose
            gt[stamp] = cv.msg_to_pose(p)
    info = None
    i = 0
    for topic, stamp, m in bags.read_bag(path, [t for t in (image_topic, info_topic) if t], warn=warn):
        if topic == info_topic:
            info = m
            continue
        yield Frame(i, stamp, msg=m, info=info, map_from_cam=gt.get(stamp))
        i += 1


def _remap_entries(v) -> Optional[str]:
    bad = [it for it in (v or []) if it and ":=" not in it]
    return f"entries {bad} are not 'from:=to'" if bad else None


def _extrinsics(v) -> Optional[str]:
    v = list(v or [])
    if len(v) != 7 or not np.isfinite(np.asarray(v, float)).all():
        return "needs 7 finite values [x y z qx qy qz qw]"
    return None if np.linalg.norm(v[3:]) > 1e-9 else "the quaternion is zero"


def _odom_offset(v) -> Optional[str]:
    v = list(v or [])
    return None if len(v) == 4 and np.isfinite(np.asarray(v, float)).all() else "needs 4 finite values [x y z yaw_deg]"


class ReplayNode(Node):
    P = common.Param
    PARAMS = {
        "source": P("", "dataset folder (synthetic, Aachen v1.1, RobotCar Seasons) or bag (.bag, .mcap, .db3, folder)",
                    check=lambda v: "is empty: give a dataset folder or a bag" if not v else common.existing_path(v)),
        "condition": P("", "dataset queries of this condition only (day, night...); empty: all"),
        "names": P("*", "glob on query names"),
        "max_frames": P(0, "stop after this many frames over all loops (0: no limit)", range=(0, 2**31 - 1)),
        "rate": P(10.0, "frame rate for datasets without stamps (Hz)", range=(1e-3, 1e4)),
        "speed": P(1.0, "playback speed factor (real time x speed)", range=(1e-3, 1e3)),
        "max_gap": P(1.0, "longer gaps between source stamps (s) are shortened to one frame period", range=(0.0, 1e6)),
        "loop": P(False, "play the source again and again (stamps keep increasing)"),
        "lockstep": P(False, "wait for the localizer's result for each frame (benchmarks lose no frame)"),
        "lockstep_timeout": P(60.0, "seconds to wait for one result in lockstep", range=(0.01, 1e5)),
        "lockstep_retries": P(1, "frames re-sent when no result came", range=(0, 100)),
        "stamp_mode": P("auto", "'now': stamps from the node clock; 'source': the source's stamps; 'playback': the "
                                "node clock at the first frame plus the source time played since (source spacing, gaps "
                                "capped at max_gap); 'auto': playback in lockstep (frames keep the camera's spacing "
                                "however long the localizer takes, so tracking's time-gap checks see camera time, and "
                                "/clock, held between lockstep frames, stays monotonic), else now",
                        choices=("auto", "now", "source", "playback")),
        "publish_clock": P(True, "publish rosgraph_msgs/Clock on /clock with the playback time (use_sim_time)"),
        "clock_rate": P(50.0, "/clock messages per second between frames", range=(1.0, 1000.0)),
        "image_topic": P(common.IMAGE_TOPIC, "image output topic (CompressedImage at <topic>/compressed)"),
        "camera_info_topic": P(common.CAMERA_INFO_TOPIC, "CameraInfo output topic"),
        "compressed": P(False, "publish dataset frames as JPEG CompressedImage"),
        "encoding": P("rgb8", "Image encoding of dataset frames",
                      choices=("rgb8", "bgr8", "mono8", "mono16", "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8",
                               "bayer_grbg8")),
        "image_qos": P("reliable", "QoS of image and CameraInfo publishers", choices=common.QOS_CHOICES),
        "result_topic": P(common.RESULT_TOPIC, "localizer results (lockstep)"),
        "frames_topic": P(common.FRAMES_TOPIC, "imp_msgs/ReplayFrame output (name, condition, ground truth)"),
        "ground_truth_topic": P(common.GT_POSE_TOPIC, "ground-truth camera PoseStamped output"),
        "done_topic": P(common.DONE_TOPIC, "latched JSON summary at the end"),
        "evaluator_ready_topic": P(common.EVALUATOR_READY_TOPIC, "the evaluator's latched ready message"),
        "bag_image_topic": P("", "image topic inside the bag (empty: the first Image/CompressedImage topic)"),
        "bag_camera_info_topic": P("", "CameraInfo topic inside the bag (empty: the first one)"),
        "bag_ground_truth_topic": P("", "ground-truth pose topic inside the bag (empty: none)"),
        "remap": P([""], "bag topic remappings 'from:=to'", check=_remap_entries),
        "map_frame": P("map", "frame of the ground truth"),
        "odom_frame": P("odom", "odometry frame of the simulated odom->base TF"),
        "base_frame": P("base_link", "vehicle base frame"),
        "camera_frame": P("camera_optical", "camera optical frame of dataset frames"),
        "camera_extrinsics": P([0.5, 0.0, 1.2, -0.5, 0.5, -0.5, 0.5], "base->camera [x y z qx qy qz qw]",
                               check=_extrinsics),
        "publish_odom": P(True, "publish simulated odom->base from the ground truth"),
        "odom_offset": P([2.0, -1.0, 0.0, 15.0], "simulated odom frame in map [x y z yaw_deg]", check=_odom_offset),
        "wait_for": P(["image"], "wait for subscribers on these topics (image, frames, evaluator, or names)"),
        "wait_timeout": P(30.0, "seconds to wait for peers before playing anyway", range=(0.0, 1e5)),
        "exit_on_done": P(True, "exit when the source is played"),
    }
    del P

    def __init__(self) -> None:
        super().__init__("replay")
        common.declare(self, self.PARAMS)
        p = lambda n: common.param(self, n)  # noqa: E731
        self.p = p
        self.remap = self._parse_remap(p("remap"))
        self.image_qos = qos = common.qos_from_param(p("image_qos"), depth=5, name="image_qos")
        self._topic_pubs: Dict[str, object] = {}  # multi-camera bags: publisher per camera topic
        self._bag_static: Dict[str, Pose] = {}  # multi-camera bags: base->camera per optical frame (/tf_static)
        from geometry_msgs.msg import PoseStamped
        from imp_msgs.msg import LocalizationResult, ReplayFrame
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image
        from std_msgs.msg import String

        self.image_topic = p("image_topic")
        self.pub_image = self.create_publisher(Image, self.image_topic, qos)
        self.pub_compressed = self.create_publisher(CompressedImage, self.image_topic + "/compressed", qos)
        self.pub_info = self.create_publisher(CameraInfo, p("camera_info_topic"), qos)
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_frame = self.create_publisher(ReplayFrame, p("frames_topic"), reliable)
        self.pub_gt = self.create_publisher(PoseStamped, p("ground_truth_topic"), reliable)
        self.pub_done = self.create_publisher(String, p("done_topic"), common.latched_qos())
        from rosgraph_msgs.msg import Clock

        clock_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_clock = self.create_publisher(Clock, "/clock", clock_qos) if p("publish_clock") else None
        self._clock_ns = 0  # playback time last published on /clock (never goes back)
        self._clock_lock = threading.Lock()
        self._clock_anchor: Optional[tuple] = None  # (monotonic, playback ns) while playing in real time
        self._playback_ns: Optional[int] = None  # stamp_mode playback: the last frame's stamp

        self.tf = TfBroadcaster(self)
        self.tf_static = TfBroadcaster(self, static=True)
        e = list(p("camera_extrinsics"))  # 7 finite values (checked by its Param)
        self.base_from_cam = Pose.from_qvec(quat_xyzw_to_wxyz(e[3:7]), e[:3])
        o = list(p("odom_offset"))
        yaw = np.radians(o[3])
        self.odom_from_map = Pose(np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0],
                                            [0, 0, 1.0]]), o[:3])
        self._results: Dict[int, object] = {}
        self._result_event = threading.Condition()
        self.create_subscription(LocalizationResult, p("result_topic"), self._on_result,
                                 QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
        self._evaluator_ready = threading.Event()
        self.create_subscription(String, p("evaluator_ready_topic"), lambda m: self._evaluator_ready.set(),
                                 common.latched_qos())
        self.finished = False
        self.exit_code = 0
        self.stats = {"published": 0, "results": 0, "lockstep_timeouts": 0, "source": p("source")}
        self._stop = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._play_safe, name="imp-replay", daemon=True)
        self._clock_thread = threading.Thread(target=self._clock_loop, name="imp-replay-clock", daemon=True) \
            if self.pub_clock is not None else None
        self._thread.start()
        if self._clock_thread is not None:
            self._clock_thread.start()

    @staticmethod
    def _parse_remap(items: List[str]) -> Dict[str, str]:
        out = {}
        for it in items:
            if not it:
                continue
            if ":=" not in it:
                raise ValueError(f"parameter 'remap': entry {it!r} is not 'from:=to'")
            a, b = it.split(":=", 1)
            out[a.strip()] = b.strip()
        return out

    # ------------------------------------------------------------ playing
    def _frames(self) -> Iterator[Frame]:
        p = self.p
        src = p("source")
        if bags.is_bag(src):
            if not p("bag_image_topic") and multicam.is_multi_camera(src):  # every camera on its own topics
                yield from multicam.bag_frames(src, self.remap, warn=self.get_logger().warning)
                return
            inverse = {v: k for k, v in self.remap.items()}
            yield from bag_frames(src, p("bag_image_topic") or inverse.get(p("image_topic"), ""),
                                  p("bag_camera_info_topic") or inverse.get(p("camera_info_topic"), ""),
                                  p("bag_ground_truth_topic") or inverse.get(p("ground_truth_topic"), ""),
                                  warn=self.get_logger().warning)
        elif Path(src).is_dir():
            yield from dataset_frames(src, p("condition"), p("names"), p("rate"), p("camera_frame"))
        else:
            raise FileNotFoundError(f"parameter 'source': {src} is neither a dataset folder nor a bag")

    def _wait_for_peers(self) -> None:
        """Wait (up to ``wait_timeout``) for a subscriber on each ``wait_for`` topic ("image" and "frames" are
        aliases), for the evaluator's ready message ("evaluator"), and in lockstep for the result publisher."""
        alias = {"image": self.image_topic, "frames": self.p("frames_topic"), "done": self.p("done_topic")}
        wanted = [t for t in self.p("wait_for") if t]
        topics = [alias.get(t, t) for t in wanted if t != "evaluator"]
        deadline = time.monotonic() + self.p("wait_timeout")
        if "evaluator" in wanted and not self._evaluator_ready.wait(self.p("wait_timeout")):
            self.get_logger().warning(f"the evaluator was not ready after {self.p('wait_timeout')} s; playing anyway")
        for t in topics:
            while self.count_subscribers(t) < 1 and time.monotonic() < deadline and not self._stop.is_set():
                time.sleep(0.05)
            if self.count_subscribers(t) < 1:
                self.get_logger().warning(f"no subscriber on {t} after {self.p('wait_timeout')} s; playing anyway")
        if self.p("lockstep"):
            while (self.count_publishers(self.p("result_topic")) < 1 and time.monotonic() < deadline
                   and not self._stop.is_set()):
                time.sleep(0.05)

    def _play_safe(self) -> None:
        try:
            self._wait_for_peers()
            first = True
            while first or (self.p("loop") and not self._stop.is_set()):
                self._play_once(loop_offset_ns=0 if first else self._next_offset)
                first = False
        except Exception as e:
            self.get_logger().error(f"replay of {self.p('source')} failed: {e}")
            self.stats["error"] = str(e)
            self.exit_code = 2
        self._finish()

    def _play_once(self, loop_offset_ns: int) -> None:
        """One pass over the source. Real-time pacing follows the source stamps, with gaps longer than
        ``max_gap`` (e.g. between two sequences) shortened to one frame period."""
        p = self.p
        t0_wall = time.monotonic()
        virtual = 0.0  # seconds of source time played so far (gaps capped)
        prev = None
        last = 0
        n_max = p("max_frames")
        self.get_logger().info(f"playing {p('source')}" + (" in lockstep" if p("lockstep") else f" at x{p('speed')}")
                               + (" (loop)" if p("loop") else ""))
        for fr in self._frames():
            if self._stop.is_set() or (n_max and self.stats["published"] >= n_max):
                self._stop.set()
                break
            src_ns = fr.stamp_ns + loop_offset_ns
            step = 0.0
            if prev is not None:
                gap = (src_ns - prev) * 1e-9
                step = gap if 0 <= gap <= p("max_gap") else 1.0 / p("rate")
                virtual += step
            elif self._playback_ns is not None:  # a new pass (loop): one frame period after the last one
                step = 1.0 / p("rate")
            prev = src_ns
            if not p("lockstep"):
                delay = t0_wall + virtual / p("speed") - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
            stamp = self._stamp(src_ns, step)
            if self._stop.is_set():
                break
            self._publish_clock(stamp)
            self._clock_anchor = (time.monotonic(), stamp)
            self._publish(fr, stamp)
            if p("lockstep"):
                self._wait_result(fr, stamp)
            last = src_ns
        self._next_offset = last + int(1e9 / p("rate"))

    def _stamp(self, src_ns: int, step_s: float) -> int:
        """A frame's stamp by ``stamp_mode`` (``step_s``: source seconds since the previous frame, gaps capped)."""
        mode = self.p("stamp_mode")
        if mode == "auto":
            mode = "playback" if self.p("lockstep") else "now"
        if mode == "source":
            return src_ns
        if mode == "playback":
            if self._playback_ns is None:
                self._playback_ns = self.get_clock().now().nanoseconds
            else:
                self._playback_ns += int(round(step_s * 1e9))
            return self._playback_ns
        return self.get_clock().now().nanoseconds

    def _publish(self, fr: Frame, stamp: int) -> None:
        from geometry_msgs.msg import PoseStamped
        from imp_msgs.msg import ReplayFrame

        p = self.p
        st = cv.ns_to_stamp(stamp)
        if fr.static_tf:  # a multi-camera bag's extrinsics replace camera_extrinsics
            self._bag_static = {t.child_frame_id: cv.transform_to_pose(t.transform) for t in fr.static_tf}
            for t in fr.static_tf:
                t.header.stamp = st
            self.tf_static.send(list(fr.static_tf))
        base_from_cam = self.base_from_cam
        if self._bag_static and fr.msg is not None:
            base_from_cam = self._bag_static.get(fr.msg.header.frame_id, base_from_cam)
        if fr.map_from_cam is not None and p("publish_odom"):
            map_from_base = fr.map_from_cam * base_from_cam.inverse()
            self.tf.send([cv.pose_to_transform(self.odom_from_map * map_from_base, p("odom_frame"),
                                               p("base_frame"), stamp)])
        if self.stats["published"] == 0 and not self._bag_static:
            cam_frame = fr.info.header.frame_id if fr.info is not None and fr.info.header.frame_id else p(
                "camera_frame")
            self.tf_static.send([cv.pose_to_transform(self.base_from_cam, p("base_frame"), cam_frame, stamp)])
        if fr.info is not None:
            fr.info.header.stamp = st
            (self._pub_for(fr.info_topic, type(fr.info)) if fr.info_topic else self.pub_info).publish(fr.info)
        rf = ReplayFrame(name=fr.name, condition=fr.condition, index=fr.index,
                         has_ground_truth=fr.map_from_cam is not None)
        rf.header.stamp = st
        rf.header.frame_id = p("map_frame")
        if fr.map_from_cam is not None:
            rf.camera_pose = cv.pose_to_msg(fr.map_from_cam)
            self.pub_gt.publish(PoseStamped(header=rf.header, pose=rf.camera_pose))
        else:
            rf.camera_pose.orientation.w = 1.0
        self.pub_frame.publish(rf)
        if fr.msg is not None:
            fr.msg.header.stamp = st
            pub = self.pub_compressed if hasattr(fr.msg, "format") else self.pub_image
            (self._pub_for(fr.image_topic, type(fr.msg)) if fr.image_topic else pub).publish(fr.msg)
        elif p("compressed"):
            self.pub_compressed.publish(cv.rgb_to_compressed(fr.rgb, "jpeg", p("camera_frame"), stamp))
        else:
            self.pub_image.publish(cv.rgb_to_image(fr.rgb, p("encoding"), p("camera_frame"), stamp))
        self.stats["published"] += 1

    def _pub_for(self, topic: str, cls):
        """Publisher of a multi-camera bag's topic (created on first use, with the image QoS)."""
        if topic not in self._topic_pubs:
            self._topic_pubs[topic] = self.create_publisher(cls, topic, self.image_qos)
        return self._topic_pubs[topic]

    def _wait_result(self, fr: Frame, stamp: int) -> None:
        tries = 1 + max(0, int(self.p("lockstep_retries")))
        per_try = self.p("lockstep_timeout") / tries
        for k in range(tries):
            with self._result_event:
                ok = self._result_event.wait_for(lambda: stamp in self._results or self._stop.is_set(), per_try)
            if ok:
                self._results.pop(stamp, None)
                return
            if k + 1 < tries:
                self.get_logger().warning(f"no result for frame {fr.index} {fr.name} after {per_try:.1f} s; resending")
                self._publish(fr, stamp)
                self.stats["published"] -= 1
        self.stats["lockstep_timeouts"] += 1
        self.get_logger().warning(f"no result for frame {fr.index} {fr.name}; moving on")

    def _on_result(self, msg) -> None:
        with self._result_event:
            self._results[cv.stamp_to_ns(msg.header.stamp)] = True
            self.stats["results"] += 1
            if len(self._results) > 1000:
                self._results.clear()
            self._result_event.notify_all()

    def _finish(self) -> None:
        from std_msgs.msg import String

        self.pub_done.publish(String(data=json.dumps(self.stats)))
        self.get_logger().info(f"replay done: {json.dumps(self.stats)}")
        if self.p("exit_on_done"):
            if not self._closing:  # on SIGINT/SIGTERM the process is going anyway: no waiting for acks
                self.pub_done.wait_for_all_acked(timeout=Duration(seconds=3.0))
            self.finished = True

    def close(self) -> None:
        """Stop playing and join the threads (no thread may be inside rclpy when the process exits)."""
        self._closing = True
        self._stop.set()
        with self._result_event:
            self._result_event.notify_all()
        for t in (self._thread, self._clock_thread):
            if t is not None and t is not threading.current_thread():
                t.join(timeout=30.0)

    # ------------------------------------------------------------ /clock
    def _publish_clock(self, ns: int) -> None:
        from rosgraph_msgs.msg import Clock

        if self.pub_clock is None:
            return
        with self._clock_lock:  # two threads publish: keep /clock monotonic
            if ns < self._clock_ns:
                return
            self._clock_ns = ns
            self.pub_clock.publish(Clock(clock=cv.ns_to_stamp(ns)))

    def _clock_loop(self) -> None:
        """Between frames the playback time advances with the wall clock x ``speed`` (held in lockstep, where the
        next frame waits for a result); each frame publishes its own stamp first."""
        period = 1.0 / self.p("clock_rate")
        while not self._stop.wait(period):
            anchor = self._clock_anchor
            if anchor is None or self.p("lockstep"):
                continue
            t_mono, ns = anchor
            self._publish_clock(ns + int((time.monotonic() - t_mono) * self.p("speed") * 1e9))


def main(args=None) -> int:
    return common.run(ReplayNode, executor_threads=1, args=args, name="replay")


if __name__ == "__main__":
    raise SystemExit(main())
