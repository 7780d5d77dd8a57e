"""``localizer`` lifecycle node: camera stream -> imp_core ``Localizer`` -> pose, result, TF, diagnostics.

configure loads the map and models (``Localizer``), activate subscribes, deactivate unsubscribes, cleanup frees
everything. Only the latest frame is processed (a frame replaced before processing counts as dropped). The base
pose in ``map`` is the camera pose composed with base->camera from TF; TF map->odom uses odom->base at the image
time (map->base when no odom frame is known), republished at ``tf_rate``; ``publish_tf: false`` leaves TF to an EKF.
"""
from __future__ import annotations

import queue
import sys
import threading
import time
from collections import deque
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.task import Future

from imp_core.covariance import covariance_in_frame
from imp_core.localization.localizer import Localizer, localizer_conf
from imp_core.localization.visualize import draw_instances, draw_localization
from imp_core.types import STATUS_OK, STATUS_RELOCALIZING, LocalizationResult, Pose
from imp_ros import common
from imp_ros import conversions as cv
from imp_ros.multicam import camera_namespace
from imp_ros.share import package_file
from imp_ros.tf_buffer import TfBroadcaster, TfBuffer, TfListener, TransformLookupError


def localizer_overrides(params: Mapping[str, Any]) -> List[Any]:
    """The node's parameters as dotted overrides of its ``config`` file (``imp_core.config``), in the order they
    apply: map, features, matcher, coarse, recognition_model, device, threads, then the ``overrides`` list. Empty
    strings (threads: -1) keep the file's values; ``coarse: tracking,retrieval`` lists the stages by name, each
    keeping the file's settings (its top_k, min_inliers)."""
    p = {name: spec.default for name, spec in LocalizerNode.PARAMS.items()}
    p.update(params)
    over: List[Any] = []
    if p["map"]:
        over.append(("map", str(p["map"])))
    if p["features"]:
        over.append(("features.name", p["features"]))
    if p["matcher"]:
        over.append(("matcher.name", p["matcher"]))
    if p["coarse"]:
        over.append(("coarse", [{"name": c.strip()} for c in str(p["coarse"]).split(",") if c.strip()]))
    if p["recognition_model"]:  # LBR: instance-guided coarse search (imp_core picks the preset)
        over.append(("recognition.model", str(p["recognition_model"])))
    over.append(("device", p["device"]))
    if int(p["threads"]) >= 0:
        over.append(("threads", int(p["threads"])))
    return over + [o for o in p["overrides"] if str(o).strip()]


def build_localizer_conf(params: Mapping[str, Any]) -> Dict[str, Any]:
    """The localizer conf of a node with these parameter values (the rest at their defaults), by the same
    ``imp_core.localization.localizer_conf`` as ``imp localize``: no ROS needed."""

    config = params.get("config") or ""
    path = package_file(config, "parameter 'config'") if config else None
    return localizer_conf(path, localizer_overrides(params))


def _device(v: Any) -> Optional[str]:
    return None if str(v).split(":")[0] in ("auto", "cpu", "cuda", "mps") else "expected auto, cpu, cuda[:N] or mps"


def _topic(v: Any) -> Optional[str]:
    from rclpy.exceptions import InvalidTopicNameException
    from rclpy.validate_topic_name import validate_topic_name

    try:
        validate_topic_name(str(v))
    except InvalidTopicNameException as e:
        return f"not a valid topic name ({str(e).splitlines()[0]})"
    return None


class LocalizerNode(LifecycleNode):
    P = common.Param
    PARAMS = {
        "autostart": P(False, "configure and activate at start (no lifecycle manager needed)"),
        "map": P("", "map directory built by `imp map build` (loaded at configure)", check=common.existing_dir),
        "config": P("", "imp_core localizer config YAML/JSON; relative paths resolve in the package share "
                        "directory (config/localizer_synthetic.yaml), then the current directory",
                    check=common.package_config),
        "features": P("", "local features override (sift, aliked, disk, superpoint, xfeat); empty: the map's"),
        "matcher": P("", "matcher override (nn, lightglue, imp, eimp, label_nn); empty: the config's or the map's"),
        "coarse": P("", "comma-separated coarse stages (tracking, retrieval, instance), each with the config's "
                        "settings for it; empty: the config's"),
        "overrides": P([""], "localizer conf overrides KEY=VALUE applied after `config` and the parameters above, "
                             "dotted, value as YAML (e.g. coarse.retrieval.top_k=10, matcher.name=lightglue); "
                             "the same keys as `imp localize --set`"),
        "recognition_model": P("", "LBR recognition checkpoint: instance-guided search", check=common.existing_path),
        "device": P("auto", "auto, cpu, cuda[:N] or mps", check=_device),
        "threads": P(-1, "torch/OpenCV CPU threads of the localizer (its conf key `threads`); 0: auto, half the "
                         "cores (1 on 2 cores: more threads oversubscribe a CPU shared with other busy processes); "
                         "-1: the config's value (auto unless it sets one)", range=(-1, 1024)),
        "image_topic": P(common.IMAGE_TOPIC, "camera image topic (Image, or CompressedImage at <topic>/compressed)",
                         check=_topic),
        "camera_info_topic": P(common.CAMERA_INFO_TOPIC, "CameraInfo topic", check=_topic),
        "image_topics": P([""], "several cameras (e.g. /left/image_raw, /rear/image_raw): one image topic each, "
                                "CameraInfo on <ns>/camera_info, extrinsics from TF by the image frame_id; "
                                "empty: image_topic + camera_info_topic"),
        "compressed": P(False, "subscribe to <image_topic>/compressed"),
        "image_qos": P("sensor_data", "QoS of the image and CameraInfo subscriptions", choices=common.QOS_CHOICES),
        "pose_topic": P(common.POSE_TOPIC, "PoseWithCovarianceStamped output (base frame in map)", check=_topic),
        "result_topic": P(common.RESULT_TOPIC, "imp_msgs/LocalizationResult output", check=_topic),
        "publish_debug_image": P(False, "publish the query with PnP inliers and residuals"),
        "debug_image_topic": P("/imp/localization/debug_image", "debug image topic", check=_topic),
        "instances_topic": P("~/instances", "imp_msgs/RecognizedInstances of each frame the map's recognizer ran on "
                                            "(only when the localizer has one)", check=_topic),
        "publish_overlay": P(False, "publish the query with the recognized instances' colours blended over it plus "
                                    "the PnP inliers, for each frame the recognizer ran on"),
        "overlay_topic": P("~/overlay", "instance overlay image topic", check=_topic),
        "map_frame": P("map", "TF frame of the map", check=common.not_empty),
        "odom_frame": P("odom", "odometry frame (TF map->odom); empty: publish map->base"),
        "base_frame": P("base_link", "vehicle base frame", check=common.not_empty),
        "camera_frame": P("", "camera optical frame; empty: the image header's frame_id"),
        "publish_tf": P(True, "publish TF map->odom (false when an EKF owns it)"),
        "tf_rate": P(20.0, "TF republish rate in Hz (0: only on new poses); applied at activate", range=(0.0, 1000.0)),
        "tf_future_dating": P(0.1, "seconds the republished TF is dated ahead of the node clock", range=(0.0, 10.0)),
        "tf_wait": P(0.2, "seconds to wait for a TF at the image time", range=(0.0, 10.0)),
        "info_wait": P(0.1, "seconds to wait for the CameraInfo with the image's stamp", range=(0.0, 10.0)),
        "diagnostics_rate": P(1.0, "/diagnostics rate in Hz; applied at start", range=(0.01, 100.0)),
        "latency_warn_ms": P(1000.0, "median latency above which diagnostics warn", range=(0.0, 1e6)),
    }
    del P

    def __init__(self, node_name: str = "localizer", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.param_errors: Dict[str, str] = {}
        self.param_errors.update(common.declare(self, self.PARAMS, tolerant=True, on_accept=self._params_accepted))
        self.loc = None
        self.map_id = ""
        self.config_error = ""
        self.finished = False
        self.exit_code = 0
        self._last_camera_frame = ""
        self._reset_state()
        self._lock = threading.Lock()  # the Localizer is used by one thread at a time
        self._frame_cv = threading.Condition()
        self._pending: Optional[Tuple[Any, float]] = None
        self._worker: Optional[threading.Thread] = None
        self._running = False
        self._jobs: "queue.Queue" = queue.Queue()
        self._srv_thread: Optional[threading.Thread] = None
        self._serving = False
        self._subs: list = []
        self._tf_timers: list = []  # activate's timers (not `_timers`: rclpy.Node keeps all its timers there)
        self._entities: list = []
        self.tf_buffer = None
        self.tf_current = None
        from diagnostic_msgs.msg import DiagnosticArray

        # /diagnostics in every state: a failed configure is reported there (ERROR with the reason)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics",
                                              QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        rate = self.p("diagnostics_rate")
        self._diag_timer = self.create_timer(1.0 / rate, self._publish_diagnostics,
                                             callback_group=MutuallyExclusiveCallbackGroup())

    def start(self) -> None:
        """After construction (``common.run`` calls it where a signal can interrupt it, with the node held so that
        ``close`` releases whatever was built): ``autostart`` configures (map, models) and activates."""
        if self.p("autostart"):
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()
        else:
            self.get_logger().info("ready: lifecycle state unconfigured (configure through ~/change_state)")

    def p(self, name: str):
        return common.param(self, name)

    def _params_accepted(self, names) -> None:
        for n in names:
            self.param_errors.pop(n, None)

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
        self.infos: Dict[Tuple[str, int], Any] = {}  # (frame_id, stamp) -> CameraInfo; stamp -1 = latest
        self._last_fix = None
        self.tf_current = None

    def lifecycle_state(self) -> str:
        try:
            return str(self._state_machine.current_state[1])
        except Exception:
            return "unknown"

    # ------------------------------------------------------------ lifecycle
    def _fail(self, what: str, err: Exception) -> None:
        """A failed transition: say why (log + /diagnostics ERROR) and release what it took (a failed configure
        or cleanup: everything; a failed activate: the subscriptions, timers and worker)."""
        reason = f"{type(err).__name__}: {err}" if not isinstance(err, ValueError) else str(err)
        self.get_logger().error(f"{what} failed: {reason}")
        try:
            self._deactivate() if what == "activate" else self._teardown()
        except Exception as e:  # releasing must not hide the reason
            self.get_logger().error(f"releasing after the failed {what}: {type(e).__name__}: {e}")
        self.config_error = f"{what} failed: {reason}"
        self._publish_diagnostics()

    def _step(self, what: str, step) -> bool:
        """Run a transition's work; False when it raised (reported and released by ``_fail``)."""
        try:
            step()
        except Exception as e:
            self._fail(what, e)
            return False
        return True

    def on_configure(self, state) -> TransitionCallbackReturn:
        if not self._step("configure", self._configure):
            return TransitionCallbackReturn.FAILURE
        self.config_error = ""
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from imp_msgs.msg import LocalizationResult as ResultMsg
        from imp_msgs.srv import LocalizeImage
        from sensor_msgs.msg import Image
        from std_srvs.srv import Trigger

        errors = dict(self.param_errors)
        for name, spec in self.PARAMS.items():  # values set at run time were checked; this catches start-up ones
            err = common.check_value(name, spec, self.p(name))
            if err:
                errors.setdefault(name, err)
        if errors:
            raise ValueError("; ".join(errors.values()))
        if not self.p("map"):
            raise ValueError("parameter 'map' is empty: give a map directory built by `imp map`")

        conf = build_localizer_conf({name: self.p(name) for name in self.PARAMS})
        t0 = time.perf_counter()
        loc = Localizer(conf)
        with self._lock:
            self.loc = loc
        self.map_id = str(getattr(self.loc.map, "map_id", ""))
        self.get_logger().info(
            f"configured: map {self.p('map')} (id {self.map_id}, {len(self.loc.map.names)} images) in "
            f"{time.perf_counter() - t0:.1f} s; device {self.p('device')}; matcher {self.loc.describe_matcher()}"
        )
        if self.loc.matcher_note:
            self.get_logger().warning(self.loc.matcher_note)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        ents = self._entities  # each entity is recorded as soon as it exists: a failure half-way releases it
        self.pub_pose = self.create_publisher(PoseWithCovarianceStamped, self.p("pose_topic"), reliable)
        ents.append(self.pub_pose)
        self.pub_result = self.create_publisher(ResultMsg, self.p("result_topic"), reliable)
        ents.append(self.pub_result)
        self.pub_debug = None
        if self.p("publish_debug_image"):
            self.pub_debug = self.create_publisher(Image, self.p("debug_image_topic"), reliable)
            ents.append(self.pub_debug)
        self.pub_instances = self.pub_overlay = None
        if any(st.conf["name"] == "instance" for st in self.loc.stages):  # a recognizer: say what it recognized
            from imp_msgs.msg import RecognizedInstances

            self.pub_instances = self.create_publisher(RecognizedInstances, self.p("instances_topic"), reliable)
            ents.append(self.pub_instances)
            if self.p("publish_overlay"):
                self.pub_overlay = self.create_publisher(Image, self.p("overlay_topic"), reliable)
                ents.append(self.pub_overlay)
        self.tf_buffer = TfBuffer(cache_s=30.0)
        self.tf_listener = TfListener(self, self.tf_buffer, callback_group=ReentrantCallbackGroup())
        ents.extend(self.tf_listener._subs)
        self.tf_pub = TfBroadcaster(self)
        if self.tf_pub._pub is not None:
            ents.append(self.tf_pub._pub)
        ents.append(self.create_service(Trigger, "~/relocalize", self._on_relocalize,
                                        callback_group=MutuallyExclusiveCallbackGroup()))
        # the service's work runs on its own thread: the executor keeps serving TF, diagnostics and images
        ents.append(self.create_service(LocalizeImage, "~/localize", self._on_localize_srv,
                                        callback_group=ReentrantCallbackGroup()))
        self.undistort = cv.Undistorter()
        self.undistort_srv = cv.Undistorter()  # the service runs on another thread
        self._serving = True
        self._srv_thread = threading.Thread(target=self._serve, name="imp-localize-srv", daemon=True)
        self._srv_thread.start()

    def on_activate(self, state) -> TransitionCallbackReturn:
        ok = self._step("activate", self._activate)
        return super().on_activate(state) if ok else TransitionCallbackReturn.FAILURE

    def _activate(self) -> None:
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        group = MutuallyExclusiveCallbackGroup()
        img_topic = self.p("image_topic")
        image_qos = common.qos_from_param(self.p("image_qos"), depth=1, name="image_qos")
        cams = [(t, f"{camera_namespace(t)}/camera_info") for t in self.p("image_topics") if t.strip()] or [
            (img_topic, self.p("camera_info_topic"))]
        info_qos = common.qos_from_param(self.p("image_qos"), depth=5, name="image_qos")
        for img_topic, info_topic in cams:  # one CameraInfo per camera, paired by frame_id and stamp
            if self.p("compressed"):
                self._subs.append(self.create_subscription(CompressedImage, img_topic + "/compressed",
                                                           self._on_image, image_qos, callback_group=group))
            else:
                self._subs.append(self.create_subscription(Image, img_topic, self._on_image, image_qos,
                                                           callback_group=group))
            self._subs.append(self.create_subscription(CameraInfo, info_topic, self._on_info,
                                                       info_qos, callback_group=group))
        img_topic = ", ".join(t for t, _ in cams)
        self._subs.append(self.create_subscription(PoseWithCovarianceStamped, "/initialpose", self._on_initialpose,
                                                   QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE),
                                                   callback_group=group))
        timer_group = MutuallyExclusiveCallbackGroup()
        if self.p("publish_tf") and self.p("tf_rate") > 0:
            self._tf_timers.append(self.create_timer(1.0 / self.p("tf_rate"), self._republish_tf,
                                                  callback_group=timer_group))
        self._running = True
        self._worker = threading.Thread(target=self._work, name="imp-localizer", daemon=True)
        self._worker.start()
        self.get_logger().info(f"active: listening on {img_topic}{'/compressed' if self.p('compressed') else ''}")

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        ok = self._step("deactivate", self._deactivate)
        return super().on_deactivate(state) if ok else TransitionCallbackReturn.FAILURE

    def _deactivate(self) -> None:
        self._stop_worker()
        for t in self._tf_timers:
            self.destroy_timer(t)
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs, self._tf_timers = [], []

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        ok = self._step("cleanup", self._teardown)
        return TransitionCallbackReturn.SUCCESS if ok else TransitionCallbackReturn.FAILURE

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        """From unconfigured, inactive or active: release everything, then the process exits (0)."""
        try:
            self._teardown()
        except Exception as e:
            self.get_logger().error(f"shutdown: {type(e).__name__}: {e}")
        self.get_logger().info(f"shutdown from {state.label}: exiting")
        self.finished = True
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state) -> TransitionCallbackReturn:
        self.get_logger().error(f"error processing from {state.label}: releasing everything (-> unconfigured)")
        try:
            self._teardown()
        except Exception:
            pass
        return TransitionCallbackReturn.SUCCESS

    def _stop_worker(self) -> None:
        self._running = False
        with self._frame_cv:
            self._pending = None
            self._frame_cv.notify_all()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=60.0)
        self._worker = None

    def _stop_service(self) -> None:
        self._serving = False
        if self._srv_thread is not None and self._srv_thread is not threading.current_thread():
            self._srv_thread.join(timeout=60.0)
        self._srv_thread = None

    def _teardown(self) -> None:
        """Everything configure and activate took: threads first, then timers, subscriptions, the rest."""
        self._deactivate()
        self._stop_service()
        self._free()

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
        torch = sys.modules.get("torch")  # not imported: nothing of ours is on a GPU (and importing it takes seconds)
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def close(self) -> None:
        """Process exit (SIGINT/SIGTERM, after the executor stopped): release from whatever state."""
        self._teardown()
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None

    # ------------------------------------------------------------ inputs
    def _on_info(self, msg) -> None:
        with self._frame_cv:
            fid = msg.header.frame_id
            self.infos[(fid, cv.stamp_to_ns(msg.header.stamp))] = msg
            self.infos[(fid, -1)] = self.infos[("", -1)] = msg
            if len(self.infos) > 60:
                for k in sorted((k for k in self.infos if k[1] >= 0), key=lambda k: k[1])[:-40]:
                    del self.infos[k]
            self._frame_cv.notify_all()

    def _info_for(self, stamp: int, frame_id: str = ""):
        """The CameraInfo of the image's camera (frame_id) and stamp (waiting up to ``info_wait``), else that
        camera's latest, else the latest of any camera. Cameras sharing a stamp keep their own intrinsics."""
        key = (frame_id, stamp)
        with self._frame_cv:
            self._frame_cv.wait_for(lambda: key in self.infos or not self._running, self.p("info_wait"))
            return self.infos.get(key) or self.infos.get((frame_id, -1)) or self.infos.get(("", -1))

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
        """A prior for tracking: the base pose, in ``map`` or in any frame TF connects to ``map`` (e.g. odom).
        Non-finite values and frames without a transform are refused with the reason."""
        frame = msg.header.frame_id.lstrip("/") or self.p("map_frame")
        try:
            vals = [msg.pose.pose.position.x, msg.pose.pose.position.y, msg.pose.pose.position.z,
                    msg.pose.pose.orientation.x, msg.pose.pose.orientation.y, msg.pose.pose.orientation.z,
                    msg.pose.pose.orientation.w]
            if not np.isfinite(vals).all():
                raise ValueError(f"pose is not finite ({vals})")
            cov = cv.covariance_from_msg(msg.pose.covariance)
            if not np.isfinite(cov).all():
                raise ValueError("covariance is not finite")
            frame_from_base = cv.msg_to_pose(msg.pose.pose)
            if frame != self.p("map_frame"):
                stamp = cv.stamp_to_ns(msg.header.stamp) or None
                try:
                    map_from_frame = self.tf_buffer.lookup(self.p("map_frame"), frame, stamp)
                except TransformLookupError:
                    try:
                        map_from_frame = self.tf_buffer.lookup(self.p("map_frame"), frame, None)
                    except TransformLookupError as e:
                        raise ValueError(f"frame {frame!r} has no TF to {self.p('map_frame')!r} ({e}); give the "
                                         f"pose in {self.p('map_frame')!r} or publish {self.p('map_frame')}->{frame}")
                frame_from_base = map_from_frame * frame_from_base
                cov = covariance_in_frame(cov, map_from_frame)
            map_from_base = frame_from_base
            base_from_cam = self._base_from_camera(self._camera_frame(None), None, wait=False)  # latest extrinsics
            cam_from_world = (map_from_base * base_from_cam).inverse()
        except Exception as e:
            self.get_logger().error(f"/initialpose (frame {frame!r}) rejected: {e}")
            return
        with self._lock:
            if self.loc is not None:
                self.loc.set_prior(cam_from_world, cov)
        self.get_logger().info(f"prior set from /initialpose (frame {frame!r}) at map "
                               f"{np.round(map_from_base.t, 2).tolist()}")

    def _on_relocalize(self, request, response):
        with self._lock:
            if self.loc is None:
                response.success, response.message = False, "localizer is not configured"
                return response
            self.loc.reset()
            self._last_fix = None
        self.state = STATUS_RELOCALIZING
        response.success, response.message = True, "tracking forgotten: next frame runs global relocalization"
        return response

    async def _on_localize_srv(self, request, response):
        """~/localize: the work runs on the service thread; this coroutine only waits for it, so the executor
        keeps serving TF, diagnostics and image callbacks meanwhile (no MultiThreadedExecutor needed)."""
        if not self._serving:
            response.success, response.message = False, "localizer is not configured"
            return response
        if self.executor is None:  # not spun by an executor: answer in place
            return self._localize_request(request, response)
        fut = Future(executor=self.executor)
        fut.add_done_callback(lambda _f: None)  # wakes the executor when the thread sets the result
        self._jobs.put((request, response, fut))
        return await fut

    def _serve(self) -> None:
        while self._serving:
            try:
                request, response, fut = self._jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                fut.set_result(self._localize_request(request, response))
            except Exception as e:
                response.success, response.message = False, f"{type(e).__name__}: {e}"
                fut.set_result(response)
        while not self._jobs.empty():  # answer what is left instead of leaving callers hanging
            request, response, fut = self._jobs.get_nowait()
            response.success, response.message = False, "localizer is shutting down"
            fut.set_result(response)

    def _localize_request(self, request, response):
        stamp = cv.stamp_to_ns(request.image.header.stamp)
        try:
            rgb, camera = self.undistort_srv(cv.image_to_rgb(request.image), request.camera_info)
            prior = None
            frame = self._camera_frame(request.image)
            if request.use_prior:
                prior = (cv.msg_to_pose(request.prior.pose.pose) * self._base_from_camera(frame, stamp)).inverse()
            with self._lock:
                if self.loc is None:
                    raise RuntimeError("localizer is not configured")
                res = self.loc.localize(rgb, camera, prior=prior, name="service")
            msg, _, _ = cv.result_to_msgs(res, self._base_from_camera(frame, stamp), self.p("map_frame"), stamp,
                                          self.map_id)
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

    def _base_from_camera(self, camera_frame: str, stamp: Optional[int], wait: bool = True) -> Pose:
        """base->camera from TF at ``stamp`` (waiting up to ``tf_wait`` when ``wait``; callbacks on the executor
        never wait), else the latest, else identity with a warning."""
        base = self.p("base_frame")
        if camera_frame == base:
            return Pose()
        try:
            return self.tf_buffer.lookup(base, camera_frame, stamp, self.p("tf_wait") if wait else 0.0)
        except TransformLookupError as e:
            try:
                return self.tf_buffer.lookup(base, camera_frame, None)
            except TransformLookupError:
                self.get_logger().warning(f"no TF {base}->{camera_frame} ({e}); using the camera as the base",
                                          throttle_duration_sec=10.0)
                return Pose()

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
        info = self._info_for(stamp, msg.header.frame_id)
        try:
            rgb = cv.compressed_to_rgb(msg) if hasattr(msg, "format") else cv.image_to_rgb(msg)
            if info is None:
                raise cv.ConversionError(f"no CameraInfo received on {self.p('camera_info_topic')} yet")
            rgb, camera = self.undistort(rgb, info)
        except cv.ConversionError as e:
            self._input_error(msg, stamp, e)
            return
        frame = self._camera_frame(msg)
        base_from_cam = self._base_from_camera(frame, stamp)
        last = self._last_fix  # (camera frame, map_from_base) of the last pose
        # another camera of the rig: its tracking prior is the last base pose seen through its own extrinsics
        prior = (last[1] * base_from_cam).inverse() if last is not None and last[0] != frame else None
        with self._lock:
            if self.loc is None:
                return
            res = self.loc.localize(rgb, camera, prior=prior, name=f"{stamp}", stamp=stamp * 1e-9)
        out, pwc, map_from_base = cv.result_to_msgs(res, base_from_cam, self.p("map_frame"), stamp, self.map_id)
        self._last_fix = (frame, map_from_base) if map_from_base is not None else None
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
        if res.label_map is not None:
            self._publish_recognition(rgb, camera, res, stamp, frame)

    def _update_tf(self, map_from_base: Pose, stamp: int) -> None:
        odom, base, mp = self.p("odom_frame"), self.p("base_frame"), self.p("map_frame")
        if odom and odom in self.tf_buffer.frames():
            try:
                odom_from_base = self.tf_buffer.lookup(odom, base, stamp, self.p("tf_wait"))
            except TransformLookupError as e:
                self.get_logger().warning(f"odom->base at the image time: {e}; skipping TF update",
                                          throttle_duration_sec=5.0)
                return
            self.tf_current = (map_from_base * odom_from_base.inverse(), mp, odom)
        else:
            self.tf_current = (map_from_base, mp, base)
        self._republish_tf()

    def _republish_tf(self) -> None:
        cur = self.tf_current
        now = self.get_clock().now().nanoseconds  # the node clock: /clock when use_sim_time is set
        if cur is None or now == 0:  # sim time before the first /clock message: nothing sensible to stamp
            return
        stamp = now + int(self.p("tf_future_dating") * 1e9)
        self.tf_pub.send([cv.pose_to_transform(cur[0], cur[1], cur[2], stamp)])

    def _debug_image(self, rgb: np.ndarray, camera, res: LocalizationResult, stamp: int, frame: str):
        """The query with the PnP inlier matches and their reprojection residuals (imp_core's overlay)."""

        return cv.rgb_to_image(draw_localization(rgb, camera, res), "rgb8", frame, stamp)

    def _publish_recognition(self, rgb: np.ndarray, camera, res: LocalizationResult, stamp: int, frame: str) -> None:
        """A frame the recognizer ran on: its instances (and the overlay when asked), built only for subscribers."""
        if self.pub_instances is not None and self.pub_instances.get_subscription_count() > 0:
            self.pub_instances.publish(cv.instances_to_msg(res, rgb.shape[1], rgb.shape[0], frame, stamp))
        if self.pub_overlay is not None and self.pub_overlay.get_subscription_count() > 0:
            overlay = draw_instances(rgb, res.label_map, camera, res)
            self.pub_overlay.publish(cv.rgb_to_image(overlay, "rgb8", frame, stamp))

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
        lc = self.lifecycle_state()
        s["lifecycle"] = lc
        level, message = DiagnosticStatus.OK, f"state {s['state']}"
        if s["state"] != STATUS_OK:
            level = DiagnosticStatus.WARN
        if lc != "active":
            level, message = DiagnosticStatus.WARN, f"lifecycle state {lc}"
        if s["latency_p50_ms"] > self.p("latency_warn_ms"):
            level, message = DiagnosticStatus.WARN, message + f", latency {s['latency_p50_ms']:.0f} ms"
        if self.last_error and time.monotonic() - self.last_error_time < 10.0:
            level, message = DiagnosticStatus.ERROR, message + f", input error: {self.last_error}"
        if self.config_error:
            level, message = DiagnosticStatus.ERROR, f"lifecycle state {lc}: {self.config_error}"
        st = DiagnosticStatus(level=level, name=f"{self.get_name()}: localization", message=message,
                              hardware_id=f"map {self.map_id}")
        st.values = [KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in s.items()]
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = self.get_clock().now().to_msg()
        try:
            self.pub_diag.publish(arr)
        except Exception:  # the publisher went away with the node (process exit)
            pass


def main(args=None) -> int:
    return common.run(LocalizerNode, executor_threads=1, args=args, name="localizer")


if __name__ == "__main__":
    raise SystemExit(main())
