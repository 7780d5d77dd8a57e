"""The TF buffer every imp node uses (tree of frames, time interpolation), and a /tf broadcaster.

It is ours rather than ``tf2_ros.Buffer`` because the ROS 2 wheels on PyPI have no tf2_ros, and one buffer keeps the
nodes behaving the same under a ROS distribution and under pip; only the broadcaster uses tf2_ros when it exists.

``TfBuffer`` keeps per child frame its parent and a time-sorted history of ``parent_from_child`` transforms
(static ones without time). ``lookup(target, source, stamp_ns)`` returns ``target_from_source`` through the
common ancestor, interpolating each edge (linear translation, slerp rotation) and refusing extrapolation
beyond ``tolerance_ns``. ``TfListener``/``TfBroadcaster`` wire it to /tf and /tf_static (tf2_msgs/TFMessage,
our wire-compatible build when the ROS distribution is absent).
"""
from __future__ import annotations

import bisect
import threading
import time
from typing import Dict, List, Optional

import numpy as np

from imp_core.errors import ImpError
from imp_core.types import Pose, qvec_to_rotmat, rotmat_to_qvec
from imp_ros.conversions import stamp_to_ns, transform_to_pose


class TransformLookupError(ImpError, LookupError):
    """A transform that is unknown or outside the buffered time range."""




def _slerp(q0: np.ndarray, q1: np.ndarray, a: float) -> np.ndarray:
    d = float(np.dot(q0, q1))
    if d < 0:
        q1, d = -q1, -d
    if d > 0.9995:
        q = q0 + a * (q1 - q0)
        return q / np.linalg.norm(q)
    th = np.arccos(d)
    return (np.sin((1 - a) * th) * q0 + np.sin(a * th) * q1) / np.sin(th)


def interpolate(p0: Pose, p1: Pose, a: float) -> Pose:
    q = _slerp(rotmat_to_qvec(p0.R), rotmat_to_qvec(p1.R), a)
    return Pose(qvec_to_rotmat(q), (1 - a) * p0.t + a * p1.t)


class TfBuffer:
    def __init__(self, cache_s: float = 10.0, tolerance_s: float = 0.05) -> None:
        self.cache_ns = int(cache_s * 1e9)
        self.tolerance_ns = int(tolerance_s * 1e9)
        self._lock = threading.Lock()
        self._parent: Dict[str, str] = {}
        self._static: Dict[str, Pose] = {}
        self._stamps: Dict[str, List[int]] = {}
        self._poses: Dict[str, List[Pose]] = {}

    def set_transform(self, parent: str, child: str, parent_from_child: Pose, stamp_ns: int,
                      static: bool = False) -> None:
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if not parent or not child or parent == child:
            raise ValueError(f"invalid transform frames parent={parent!r} child={child!r}")
        with self._lock:
            if self._parent.get(child, parent) != parent:  # re-parented: forget the old edge
                self._static.pop(child, None)
                self._stamps.pop(child, None)
                self._poses.pop(child, None)
            self._parent[child] = parent
            if static:
                self._static[child] = parent_from_child
                return
            st, ps = self._stamps.setdefault(child, []), self._poses.setdefault(child, [])
            i = bisect.bisect_right(st, stamp_ns)
            if i > 0 and st[i - 1] == stamp_ns:
                ps[i - 1] = parent_from_child
            else:
                st.insert(i, stamp_ns)
                ps.insert(i, parent_from_child)
            cut = bisect.bisect_left(st, st[-1] - self.cache_ns)
            if cut > 0:
                del st[:cut], ps[:cut]

    def frames(self) -> List[str]:
        with self._lock:
            return sorted(set(self._parent) | set(self._parent.values()))

    def _edge(self, child: str, stamp_ns: Optional[int]) -> Pose:
        if child in self._static:
            return self._static[child]
        st, ps = self._stamps[child], self._poses[child]
        if stamp_ns is None:  # latest
            return ps[-1]
        i = bisect.bisect_left(st, stamp_ns)
        if i < len(st) and st[i] == stamp_ns:
            return ps[i]
        if i == 0 or i == len(st):
            j = 0 if i == 0 else len(st) - 1
            if abs(st[j] - stamp_ns) <= self.tolerance_ns:
                return ps[j]
            raise TransformLookupError(
                f"transform {self._parent[child]}->{child} at t={stamp_ns * 1e-9:.3f}s is outside the buffered "
                f"range [{st[0] * 1e-9:.3f}, {st[-1] * 1e-9:.3f}]s"
            )
        a = (stamp_ns - st[i - 1]) / float(st[i] - st[i - 1])
        return interpolate(ps[i - 1], ps[i], a)

    def _chain(self, frame: str) -> List[str]:
        chain = [frame]
        while chain[-1] in self._parent:
            chain.append(self._parent[chain[-1]])
            if len(chain) > 100:
                raise TransformLookupError(f"TF loop detected at frame {frame!r}")
        return chain

    def lookup(self, target: str, source: str, stamp_ns: Optional[int] = None, timeout_s: float = 0.0) -> Pose:
        """``target_from_source`` at ``stamp_ns`` (None = latest of each edge), waiting up to ``timeout_s`` for it
        to arrive (as tf2's lookup_transform timeout); raises TransformLookupError."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self._lookup(target, source, stamp_ns)
            except TransformLookupError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                time.sleep(min(left, 0.01))

    def _lookup(self, target: str, source: str, stamp_ns: Optional[int]) -> Pose:
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return Pose()
        with self._lock:
            ct, cs = self._chain(target), self._chain(source)
            common = next((f for f in cs if f in ct), None)
            if common is None:
                raise TransformLookupError(
                    f"no TF path between {target!r} and {source!r} (known frames: {sorted(set(self._parent))})"
                )
            root_from_source = Pose()
            for f in cs[: cs.index(common)]:
                root_from_source = self._edge(f, stamp_ns) * root_from_source
            root_from_target = Pose()
            for f in ct[: ct.index(common)]:
                root_from_target = self._edge(f, stamp_ns) * root_from_target
        return root_from_target.inverse() * root_from_source

    def can_transform(self, target: str, source: str, stamp_ns: Optional[int] = None) -> bool:
        try:
            self.lookup(target, source, stamp_ns)
            return True
        except TransformLookupError:
            return False


def _tf_qos(static: bool):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    if static:
        return QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
    return QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


class TfListener:
    """Fills a TfBuffer from /tf and /tf_static."""

    def __init__(self, node, buffer: TfBuffer, callback_group=None) -> None:
        from tf2_msgs.msg import TFMessage

        self.buffer = buffer
        self._subs = [
            node.create_subscription(TFMessage, "/tf", lambda m: self._on(m, False), _tf_qos(False),
                                     callback_group=callback_group),
            node.create_subscription(TFMessage, "/tf_static", lambda m: self._on(m, True), _tf_qos(True),
                                     callback_group=callback_group),
        ]

    def _on(self, msg, static: bool) -> None:
        for t in msg.transforms:
            try:
                self.buffer.set_transform(t.header.frame_id, t.child_frame_id, transform_to_pose(t.transform),
                                          stamp_to_ns(t.header.stamp), static=static)
            except ValueError:
                continue


class TfBroadcaster:
    """Publishes TransformStamped lists on /tf (or /tf_static, latched): tf2_ros's broadcaster when the ROS
    distribution provides it, else our publisher of the wire-compatible tf2_msgs/TFMessage."""

    def __init__(self, node, static: bool = False) -> None:
        try:
            import tf2_ros

            self._tf2 = (tf2_ros.StaticTransformBroadcaster if static else tf2_ros.TransformBroadcaster)(node)
            self._pub = None
            return
        except ImportError:
            self._tf2 = None
        from tf2_msgs.msg import TFMessage

        self._cls = TFMessage
        self._pub = node.create_publisher(TFMessage, "/tf_static" if static else "/tf", _tf_qos(static))

    def send(self, transforms) -> None:
        if self._tf2 is not None:
            self._tf2.sendTransform(list(transforms))
        else:
            self._pub.publish(self._cls(transforms=list(transforms)))
