"""``localizer`` lifecycle node: camera stream -> imp_core ``Localizer`` -> pose, result, TF, diagnostics.

configure loads the map and models (``Localizer``), activate subscribes, deactivate unsubscribes, cleanup frees
everything. Only the latest frame is processed (a frame replaced before processing counts as dropped). The base
pose in ``map`` is the camera pose composed with base->camera from TF; TF map->odom uses odom->base at the image
time (map->base when no odom frame is known), republished at ``tf_rate``; ``publish_tf: false`` leaves TF to an EKF.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Dict, Optional, Tuple

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy

from imp_core.types import STATUS_OK, STATUS_RELOCALIZING, LocalizationResult, Pose
from imp_ros import common
from imp_ros import conversions as cv
from imp_ros.tf_buffer import TfBroadcaster, TfBuffer, TfListener, TransformLookupError


def build_localizer_conf(config: str, map_dir: str, features: str, matcher: str, coarse: str,
                         device: str, recognition_model: str = "") -> Dict[str, Any]:
    """Localizer conf from a YAML/JSON file plus parameter overrides (empty strings keep the file's values)."""
    from imp_core.localization.localizer import load_config

    conf = dict(load_config(config)) if config else {}
    if map_dir:
        conf["map"] = map_dir
    if features:
        conf["features"] = {**(conf.get("features") or {}), "name": features}
    if matcher:
        conf["matcher"] = {**(conf.get("matcher") or {}), "name": matcher}
    if coarse:
        conf["coarse"] = [{"name": c.strip()} for c in coarse.split(",") if c.strip()]
    if recognition_model:  # LBR: instance-guided coarse search (imp_core picks the stage/matcher defaults)
        conf["recognition"] = {**(conf.get("recognition") or {}), "model": recognition_model}
    conf["device"] = device
    return conf


class LocalizerNode(LifecycleNode):
    PARAMS = {
        "autostart": False,
        "map": "",
        "config": "",
        "features": "",
        "matcher": "",
        "coarse": "",
        "recognition_model": "",
        "device": "auto",
        "image_topic": common.IMAGE_TOPIC,
        "camera_info_topic": common.CAMERA_INFO_TOPIC,
        "compressed": False,
        "image_qos": "sensor_data",
        "pose_topic": common.POSE_TOPIC,
        "result_topic": common.RESULT_TOPIC,
        "publish_debug_image": False,
        "debug_image_topic": "/imp/localization/debug_image",
        "map_frame": "map",
        "odom_frame": "odom",
        "base_frame": "base_link",
        "camera_frame": "",
        "publish_tf": True,
        "tf_rate": 20.0,
        "tf_future_dating": 0.1,
        "tf_wait": 0.2,
        "info_wait": 0.1,
        "diagnostics_rate": 1.0,
        "latency_warn_ms": 1000.0,
    }

    def __init__(self, node_name: str = "localizer", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        common.declare(self, self.PARAMS)
        self.loc = None
        self.map_id = ""
        self._last_camera_frame = ""
        self._reset_state()
        self._lock = threading.Lock()  # the Localizer is used by one thread at a time
        self._frame_cv = threading.Condition()
        self._pending: Optional[Tuple[Any, float]] = None
        self._worker: Optional[threading.Thread] = None
        self._running = False
        self._subs: list = []
        self._timers: list = []
        self._entities: list = []
        if self.p("autostart"):
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()

    def p(self, name: str):
        return common.param(self, name)

    def _reset_state(self) -> None:
        self.state = "NOT_INITIALIZED"
        self.received = 0
        self.processed = 0
        self.dropped = 0
        self.input_errors = 0
        self.last_error = ""
        self.last_error_time = 0.0
        self.last_result: Optional[LocalizationResult] = None
        self.recv_times: deque = deque(maxlen=100)
        self.latencies: deque = deque(maxlen=200)
        self.infos: Dict[int, Any] = {}  # stamp -> CameraInfo; -1 = latest
        self.tf_current = None

    # ------------------------------------------------------------ lifecycle
    def on_configure(self, state) -> TransitionCallbackReturn:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from imp_msgs.msg import LocalizationResult as ResultMsg
        from imp_msgs.srv import LocalizeImage
        from sensor_msgs.msg import Image
        from std_srvs.srv import Trigger

        try:
            if not self.p("map"):
                raise ValueError("parameter 'map' is empty: give a map directory built by `imp map`")
            from imp_core.localization.localizer import Localizer

            conf = build_localizer_conf(self.p("config"), self.p("map"), self.p("features"), self.p("matcher"),
                                        self.p("coarse"), self.p("device"), self.p("recognition_model"))
            t0 = time.perf_counter()
            self.loc = Localizer(conf)
            self.map_id = str(getattr(self.loc.map, "map_id", ""))
            self.get_logger().info(
                f"configured: map {self.p('map')} (id {self.map_id}, {len(self.loc.map.names)} images) in "
                f"{time.perf_counter() - t0:.1f} s; device {self.p('device')}"
            )
        except Exception as e:
            self.get_logger().error(f"configure failed: {type(e).__name__}: {e}")
            self.loc = None
            return TransitionCallbackReturn.FAILURE
        self.image_qos = common.qos_from_param(self.p("image_qos"), depth=1, name="image_qos")
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_pose = self.create_publisher(PoseWithCovarianceStamped, self.p("pose_topic"), reliable)
        self.pub_result = self.create_publisher(ResultMsg, self.p("result_topic"), reliable)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", reliable)
        self.pub_debug = (self.create_publisher(Image, self.p("debug_image_topic"), reliable)
                          if self.p("publish_debug_image") else None)
        self.tf_buffer = TfBuffer(cache_s=30.0)
        self.tf_listener = TfListener(self, self.tf_buffer, callback_group=ReentrantCallbackGroup())
        self.tf_pub = TfBroadcaster(self)
        srv_group = MutuallyExclusiveCallbackGroup()
        self._entities = [
            self.pub_pose, self.pub_result, self.pub_diag, *self.tf_listener._subs,
            self.create_service(Trigger, "~/relocalize", self._on_relocalize, callback_group=srv_group),
            self.create_service(LocalizeImage, "~/localize", self._on_localize_srv, callback_group=srv_group),
        ] + ([self.pub_debug] if self.pub_debug else []) + ([self.tf_pub._pub] if self.tf_pub._pub else [])
        self.undistort = cv.Undistorter()
        self.undistort_srv = cv.Undistorter()  # the service runs on another thread
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        group = MutuallyExclusiveCallbackGroup()
        img_topic = self.p("image_topic")
        if self.p("compressed"):
            self._subs.append(self.create_subscription(CompressedImage, img_topic + "/compressed", self._on_image,
                                                       self.image_qos, callback_group=group))
        else:
            self._subs.append(self.create_subscription(Image, img_topic, self._on_image, self.image_qos,
                                                       callback_group=group))
        info_qos = common.qos_from_param(self.p("image_qos"), depth=5, name="image_qos")
        self._subs.append(self.create_subscription(CameraInfo, self.p("camera_info_topic"), self._on_info,
                                                   info_qos, callback_group=group))
        self._subs.append(self.create_subscription(PoseWithCovarianceStamped, "/initialpose", self._on_initialpose,
                                                   QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE),
                                                   callback_group=group))
        timer_group = MutuallyExclusiveCallbackGroup()
        self._timers = [self.create_timer(1.0 / self.p("diagnostics_rate"), self._publish_diagnostics,
                                          callback_group=timer_group)]
        if self.p("publish_tf") and self.p("tf_rate") > 0:
            self._timers.append(self.create_timer(1.0 / self.p("tf_rate"), self._republish_tf,
                                                  callback_group=timer_group))
        self._running = True
        self._worker = threading.Thread(target=self._work, name="imp-localizer", daemon=True)
        self._worker.start()
        self.get_logger().info(f"active: listening on {img_topic}{'/compressed' if self.p('compressed') else ''}")
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._stop_worker()
        for s in self._subs:
            self.destroy_subscription(s)
        for t in self._timers:
            self.destroy_timer(t)
        self._subs, self._timers = [], []
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._free()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._stop_worker()
        self._free()
        return TransitionCallbackReturn.SUCCESS

    def _stop_worker(self) -> None:
        self._running = False
        with self._frame_cv:
            self._frame_cv.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
            self._worker = None

    def _free(self) -> None:
        for e in self._entities:
            try:
                self.destroy_publisher(e) if hasattr(e, "publish") else (
                    self.destroy_service(e) if hasattr(e, "srv_type") else self.destroy_subscription(e))
            except Exception:
                pass
        self._entities = []
        with self._lock:
            if self.loc is not None:
                self.loc.close()
                self.loc = None
        self.map_id = ""
        self._last_camera_frame = ""
        self._reset_state()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    def close(self) -> None:
        self._stop_worker()
        self._free()

    # ------------------------------------------------------------ inputs
    def _on_info(self, msg) -> None:
        with self._frame_cv:
            self.infos[cv.stamp_to_ns(msg.header.stamp)] = msg
            self.infos[-1] = msg
            if len(self.infos) > 50:
                for k in sorted(self.infos)[1:-40]:
                    del self.infos[k]
            self._frame_cv.notify_all()

    def _info_for(self, stamp: int):
        """The CameraInfo with the image's stamp (waiting up to ``info_wait``), else the latest one."""
        with self._frame_cv:
            self._frame_cv.wait_for(lambda: stamp in self.infos or not self._running, self.p("info_wait"))
            return self.infos.get(stamp, self.infos.get(-1))

    def _on_image(self, msg) -> None:
        now = time.monotonic()
        with self._frame_cv:
            self.received += 1
            self.recv_times.append(now)
            if self._pending is not None:
                self.dropped += 1
            self._pending = (msg, now)
            self._frame_cv.notify()

    def _on_initialpose(self, msg) -> None:
        try:
            map_from_base = cv.msg_to_pose(msg.pose.pose)
            base_from_cam = self._base_from_camera(self._camera_frame(None), None)  # latest extrinsics
            cam_from_world = (map_from_base * base_from_cam).inverse()
            cov = cv.covariance_from_msg(msg.pose.covariance)
        except Exception as e:
            self.get_logger().error(f"/initialpose rejected: {e}")
            return
        with self._lock:
            if self.loc is not None:
                self.loc.set_prior(cam_from_world, cov)
        self.get_logger().info(f"prior set from /initialpose at {np.round(map_from_base.t, 2).tolist()}")

    def _on_relocalize(self, request, response):
        with self._lock:
            if self.loc is None:
                response.success, response.message = False, "localizer is not configured"
                return response
            self.loc.reset()
        self.state = STATUS_RELOCALIZING
        response.success, response.message = True, "tracking forgotten: next frame runs global relocalization"
        return response

    def _on_localize_srv(self, request, response):
        stamp = cv.stamp_to_ns(request.image.header.stamp)
        try:
            rgb, camera = self.undistort_srv(cv.image_to_rgb(request.image), request.camera_info)
            prior = None
            if request.use_prior:
                frame = self._camera_frame(request.image)
                prior = (cv.msg_to_pose(request.prior.pose.pose) * self._base_from_camera(frame, stamp)).inverse()
            with self._lock:
                if self.loc is None:
                    raise RuntimeError("localizer is not configured")
                res = self.loc.localize(rgb, camera, prior=prior, name="service")
            msg, _, _ = cv.result_to_msgs(res, self._base_from_camera(self._camera_frame(request.image), stamp),
                                          self.p("map_frame"), stamp, self.map_id)
            response.success, response.message, response.result = res.success, msg.status_text, msg
        except Exception as e:
            response.success, response.message = False, f"{type(e).__name__}: {e}"
        return response

    # ------------------------------------------------------------ processing
    def _work(self) -> None:
        while self._running:
            with self._frame_cv:
                self._frame_cv.wait_for(lambda: self._pending is not None or not self._running, timeout=0.5)
                item, self._pending = self._pending, None
            if item is None:
                continue
            try:
                self._process(*item)
            except Exception as e:  # keep the node alive whatever one frame does
                self.get_logger().error(f"frame failed: {type(e).__name__}: {e}")

    def _camera_frame(self, msg) -> str:
        """The camera_frame parameter, else the image's frame (the last image's when ``msg`` is None)."""
        if msg is not None and msg.header.frame_id:
            self._last_camera_frame = msg.header.frame_id
        return self.p("camera_frame") or self._last_camera_frame or self.p("base_frame")

    def _base_from_camera(self, camera_frame: str, stamp: Optional[int]) -> Pose:
        if camera_frame == self.p("base_frame"):
            return Pose()
        deadline = time.monotonic() + self.p("tf_wait")
        while True:
            try:
                return self.tf_buffer.lookup(self.p("base_frame"), camera_frame, stamp)
            except TransformLookupError as e:
                if time.monotonic() > deadline:
                    try:
                        return self.tf_buffer.lookup(self.p("base_frame"), camera_frame, None)
                    except TransformLookupError:
                        self.get_logger().warning(
                            f"no TF {self.p('base_frame')}->{camera_frame} ({e}); using the camera as the base",
                            throttle_duration_sec=10.0)
                        return Pose()
                time.sleep(0.01)

    def _input_error(self, msg, stamp: int, err: Exception) -> None:
        self.input_errors += 1
        self.last_error = f"{type(err).__name__}: {err}"
        self.last_error_time = time.monotonic()
        self.get_logger().error(f"rejected frame at t={stamp * 1e-9:.3f}: {self.last_error}",
                                throttle_duration_sec=2.0)
        res = LocalizationResult(status="LOST", message=str(err), mode="")
        out, _, _ = cv.result_to_msgs(res, Pose(), self.p("map_frame"), stamp, self.map_id,
                                      status_override=cv.STATUS_INPUT_ERROR)
        out.status_text = f"INPUT_ERROR: {err}"
        self.pub_result.publish(out)

    def _process(self, msg, t_recv: float) -> None:
        stamp = cv.stamp_to_ns(msg.header.stamp)
        info = self._info_for(stamp)
        try:
            rgb = cv.compressed_to_rgb(msg) if hasattr(msg, "format") else cv.image_to_rgb(msg)
            if info is None:
                raise cv.ConversionError(f"no CameraInfo received on {self.p('camera_info_topic')} yet")
            rgb, camera = self.undistort(rgb, info)
        except cv.ConversionError as e:
            self._input_error(msg, stamp, e)
            return
        frame = self._camera_frame(msg)
        with self._lock:
            if self.loc is None:
                return
            res = self.loc.localize(rgb, camera, name=f"{stamp}", stamp=stamp * 1e-9)
        base_from_cam = self._base_from_camera(frame, stamp)
        out, pwc, map_from_base = cv.result_to_msgs(res, base_from_cam, self.p("map_frame"), stamp, self.map_id)
        latency = (time.monotonic() - t_recv) * 1e3
        out.total_latency_ms = float(latency)
        self.pub_result.publish(out)
        if pwc is not None:
            self.pub_pose.publish(pwc)
            if self.p("publish_tf"):
                self._update_tf(map_from_base, stamp)
        self.processed += 1
        self.latencies.append(latency)
        self.last_result = res
        self.state = res.status
        if self.pub_debug is not None:
            with self._lock:
                self.pub_debug.publish(self._debug_image(rgb, camera, res, stamp, frame))

    def _update_tf(self, map_from_base: Pose, stamp: int) -> None:
        odom, base, mp = self.p("odom_frame"), self.p("base_frame"), self.p("map_frame")
        if odom and odom in self.tf_buffer.frames():
            deadline = time.monotonic() + self.p("tf_wait")
            while True:
                try:
                    odom_from_base = self.tf_buffer.lookup(odom, base, stamp)
                    break
                except TransformLookupError as e:
                    if time.monotonic() > deadline:
                        self.get_logger().warning(f"odom->base at the image time: {e}; skipping TF update",
                                                  throttle_duration_sec=5.0)
                        return
                    time.sleep(0.01)
            self.tf_current = (map_from_base * odom_from_base.inverse(), mp, odom)
        else:
            self.tf_current = (map_from_base, mp, base)
        self._republish_tf()

    def _republish_tf(self) -> None:
        cur = self.tf_current
        if cur is None:
            return
        stamp = self.get_clock().now().nanoseconds + int(self.p("tf_future_dating") * 1e9)
        self.tf_pub.send([cv.pose_to_transform(cur[0], cur[1], cur[2], stamp)])

    def _debug_image(self, rgb: np.ndarray, camera, res: LocalizationResult, stamp: int, frame: str):
        """The query with the PnP inlier matches and their reprojection residuals (imp_core's overlay)."""
        from imp_core.localization.visualize import draw_localization

        return cv.rgb_to_image(draw_localization(rgb, camera, res), "rgb8", frame, stamp)

    # ------------------------------------------------------------ diagnostics
    def stats(self) -> Dict[str, Any]:
        times = list(self.recv_times)
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 and times[-1] > times[0] else 0.0
        lat = np.asarray(self.latencies) if self.latencies else np.zeros(1)
        return {"state": self.state, "input_rate_hz": rate, "received": self.received, "processed": self.processed,
                "dropped": self.dropped, "input_errors": self.input_errors,
                "latency_p50_ms": float(np.percentile(lat, 50)), "latency_p95_ms": float(np.percentile(lat, 95)),
                "last_error": self.last_error}

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        s = self.stats()
        level, message = DiagnosticStatus.OK, f"state {s['state']}"
        if s["state"] != STATUS_OK:
            level = DiagnosticStatus.WARN
        if s["latency_p50_ms"] > self.p("latency_warn_ms"):
            level, message = DiagnosticStatus.WARN, message + f", latency {s['latency_p50_ms']:.0f} ms"
        if self.last_error and time.monotonic() - self.last_error_time < 10.0:
            level, message = DiagnosticStatus.ERROR, message + f", input error: {self.last_error}"
        st = DiagnosticStatus(level=level, name=f"{self.get_name()}: localization", message=message,
                              hardware_id=f"map {self.map_id}")
        st.values = [KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in s.items()]
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(arr)


def main(args=None) -> int:
    return common.run(LocalizerNode, executor_threads=1, args=args, name="localizer")


if __name__ == "__main__":
    raise SystemExit(main())
