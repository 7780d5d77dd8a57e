"""``evaluator`` node: pairs localization results with the replay's ground truth and keeps an accuracy table.

Results (``imp_msgs/LocalizationResult``) and frames (``imp_msgs/ReplayFrame``: name, condition, ground truth)
are paired by stamp (the result carries the image stamp). The table per condition (recall at the three
thresholds, median errors, per-stage latency) is logged while running; when the replay reports it is done (or on
shutdown) the node writes, under ``output_dir``: visuallocalization.net results, TUM trajectories (estimate and
ground truth), per-frame CSV, ``summary.json`` and plots (trajectory, error CDF).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from imp_core.types import Pose
from imp_ros import common
from imp_ros import conversions as cv
from imp_ros.report import accuracy_table, write_report


@dataclass
class FrameRecord:
    stamp_ns: int
    name: str = ""
    condition: str = ""
    gt: Optional[Pose] = None  # cam_from_world
    est: Optional[Pose] = None  # cam_from_world; None = not localized
    status: str = ""
    mode: str = ""
    num_inliers: int = 0
    latency_ms: float = float("nan")
    timings: Dict[str, float] = field(default_factory=dict)
    has_result: bool = False

    @property
    def key(self) -> str:
        return self.name or f"{self.stamp_ns}"


class EvaluatorNode(Node):
    P = common.Param
    PARAMS = {
        "output_dir": P("outputs/eval", "results, trajectories, plots and summary.json go here",
                        check=common.not_empty),
        "method": P("imp", "method name in the result file name results_<method>.txt",
                    check=lambda v: None if str(v) and "/" not in str(v) and str(v) not in (".", "..")
                    else "must be a plain name (no '/')"),
        "result_topic": P(common.RESULT_TOPIC, "localizer results"),
        "frames_topic": P(common.FRAMES_TOPIC, "replay frames (name, condition, ground truth)"),
        "done_topic": P(common.DONE_TOPIC, "the replay's latched done message"),
        "stamp_tolerance": P(0.001, "seconds between a result's and a frame's stamps to pair them", range=(0.0, 10.0)),
        "table_period": P(5.0, "seconds between accuracy tables in the log", range=(0.05, 1e5)),
        "result_wait": P(10.0, "seconds to wait for missing results after the replay is done", range=(0.0, 1e5)),
        "exit_on_done": P(True, "write the outputs and exit when the replay is done"),
        "write_plots": P(True, "write trajectory.png and error_cdf.png"),
        "ready_topic": P(common.EVALUATOR_READY_TOPIC, "latched ready message for the replay"),
    }
    del P

    def __init__(self) -> None:
        super().__init__("evaluator")
        common.declare(self, self.PARAMS)
        from imp_msgs.msg import LocalizationResult, ReplayFrame
        from std_msgs.msg import String

        self.out = Path(common.param(self, "output_dir"))
        self.records: Dict[int, FrameRecord] = {}
        self._orphans: Dict[int, object] = {}  # results that arrived before their frame
        self._lock = threading.Lock()
        self._changed = False
        self._done_at: Optional[float] = None
        self._written = False
        self.finished = False
        self.exit_code = 0
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(ReplayFrame, common.param(self, "frames_topic"), self._on_frame, reliable)
        self.create_subscription(LocalizationResult, common.param(self, "result_topic"), self._on_result, reliable)
        self.create_subscription(String, common.param(self, "done_topic"), self._on_done, common.latched_qos())
        self.create_timer(common.param(self, "table_period"), self._log_table)
        self.create_timer(0.2, self._check_done)
        self.pub_ready = self.create_publisher(String, common.param(self, "ready_topic"), common.latched_qos())
        self._ready_timer = self.create_timer(0.05, self._check_ready)
        self.get_logger().info(f"waiting for frames and results; outputs go to {self.out}")

    def _check_ready(self) -> None:
        """Announce readiness (latched) once the result publisher is discovered, so a replay waiting for the
        evaluator does not start before results can reach it."""
        if self.count_publishers(common.param(self, "result_topic")) >= 1:
            from std_msgs.msg import String

            self.pub_ready.publish(String(data=self.get_fully_qualified_name()))
            self.destroy_timer(self._ready_timer)
            self.get_logger().info("ready: the localizer's result publisher is discovered")

    # ------------------------------------------------------------ pairing
    def _find(self, stamp: int, table: Dict[int, object]) -> Optional[int]:
        if stamp in table:
            return stamp
        tol = int(common.param(self, "stamp_tolerance") * 1e9)
        best = min(table, key=lambda s: abs(s - stamp), default=None)
        return best if best is not None and abs(best - stamp) <= tol else None

    def _on_frame(self, msg) -> None:
        stamp = cv.stamp_to_ns(msg.header.stamp)
        gt = cv.msg_to_pose(msg.camera_pose).inverse() if msg.has_ground_truth else None
        with self._lock:
            rec = self.records.setdefault(stamp, FrameRecord(stamp))
            rec.name, rec.condition, rec.gt = msg.name, msg.condition, gt
            k = self._find(stamp, self._orphans)
            if k is not None:
                self._apply(rec, self._orphans.pop(k))
            self._changed = True

    def _on_result(self, msg) -> None:
        stamp = cv.stamp_to_ns(msg.header.stamp)
        with self._lock:
            k = self._find(stamp, self.records)
            if k is None:
                self._orphans[stamp] = msg
                return
            self._apply(self.records[k], msg)
            self._changed = True

    @staticmethod
    def _apply(rec: FrameRecord, msg) -> None:
        rec.has_result = True
        rec.status = msg.status_text.split(":")[0]
        rec.mode = msg.mode
        rec.num_inliers = int(msg.num_inliers)
        rec.latency_ms = float(msg.total_latency_ms)
        rec.timings = cv.timings_dict(msg)
        rec.est = cv.msg_to_pose(msg.camera_pose).inverse() if msg.status == 0 else None

    def _on_done(self, msg) -> None:
        if self._done_at is None:
            self._done_at = time.monotonic()
            self.get_logger().info(f"replay finished: {msg.data}")

    def _check_done(self) -> None:
        if self._done_at is None or self._written:
            return
        with self._lock:
            missing = [r for r in self.records.values() if not r.has_result]
        if missing and time.monotonic() - self._done_at < common.param(self, "result_wait"):
            return
        self.write_outputs()
        if common.param(self, "exit_on_done"):
            self.finished = True

    # ------------------------------------------------------------ reporting
    def snapshot(self) -> List[FrameRecord]:
        with self._lock:
            return sorted(self.records.values(), key=lambda r: r.stamp_ns)

    def _log_table(self) -> None:
        if not self._changed:
            return
        self._changed = False
        recs = self.snapshot()
        if recs:
            self.get_logger().info("\n" + accuracy_table(recs, common.param(self, "method")))

    def write_outputs(self) -> Optional[dict]:
        if self._written:
            return None
        self._written = True
        recs = self.snapshot()
        if not recs:
            self.get_logger().warning("no frames received: nothing to write")
            return None
        summary = write_report(recs, self.out, common.param(self, "method"), common.param(self, "write_plots"))
        self.get_logger().info(f"wrote results, trajectories, plots and summary.json to {self.out}\n"
                               + summary["table"])
        return summary

    def close(self) -> None:
        try:
            self.write_outputs()
        except Exception as e:
            self.get_logger().error(f"writing outputs to {self.out} failed: {e}")
            self.exit_code = 1


def main(args=None) -> int:
    return common.run(EvaluatorNode, executor_threads=1, args=args, name="evaluator")


if __name__ == "__main__":
    raise SystemExit(main())
