"""Shared node plumbing: QoS from parameters, parameter declaration from dicts, and a main() runner."""
from __future__ import annotations

import sys
from typing import Any, Callable, Dict

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
    qos_profile_system_default,
)

# Well-known topic names shared by the nodes (all overridable by parameters).
IMAGE_TOPIC = "/camera/image_raw"
CAMERA_INFO_TOPIC = "/camera/camera_info"
POSE_TOPIC = "/imp/localization/pose"
RESULT_TOPIC = "/imp/localization/result"
FRAMES_TOPIC = "/imp/replay/frames"
GT_POSE_TOPIC = "/imp/replay/ground_truth"
DONE_TOPIC = "/imp/replay/done"
EVALUATOR_READY_TOPIC = "/imp/evaluator/ready"


def qos_from_param(value: Any, depth: int = 1, name: str = "qos") -> QoSProfile:
    """'sensor_data' | 'reliable' | 'best_effort' | 'system_default', or the community ints 0/1/2."""
    v = str(value).strip().lower()
    v = {"0": "system_default", "1": "reliable", "2": "best_effort"}.get(v, v)
    if v == "sensor_data":
        q = QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST)
        q.reliability = qos_profile_sensor_data.reliability
        q.durability = qos_profile_sensor_data.durability
        return q
    if v == "reliable":
        return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
    if v == "best_effort":
        return QoSProfile(depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT,
                          durability=DurabilityPolicy.VOLATILE)
    if v == "system_default":
        q = QoSProfile(depth=depth)
        q.reliability = qos_profile_system_default.reliability
        return q
    raise ValueError(
        f"parameter {name!r}: unknown QoS {value!r} (sensor_data, reliable, best_effort, system_default or 0/1/2)"
    )


def latched_qos() -> QoSProfile:
    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def declare(node, params: Dict[str, Any]) -> None:
    """Declare every parameter with its default (nested dicts become dotted names)."""
    for k, v in params.items():
        node.declare_parameter(k, v)


def param(node, name: str):
    return node.get_parameter(name).value


def _spin_quietly(ex) -> None:
    from rclpy.executors import ExternalShutdownException

    try:
        ex.spin()
    except (ExternalShutdownException, KeyboardInterrupt):
        pass


def run(make_node: Callable[[], Any], executor_threads: int = 4, args=None, name: str = "node") -> int:
    """rclpy.init, build the node, spin a MultiThreadedExecutor until SIGINT/SIGTERM or the node says it is
    finished; then close the node (stop workers and timers) before the context goes away."""
    import signal
    import threading

    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    rclpy.init(args=sys.argv if args is None else args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    code = 0
    try:
        node = make_node()
        # rclpy's MultiThreadedExecutor busy-polls while a mutually exclusive group is busy and then starves the
        # node's own worker thread of the GIL (measured with py-spy: half the samples); nodes whose heavy work
        # runs on their own thread use the single-threaded executor.
        ex = MultiThreadedExecutor(num_threads=executor_threads) if executor_threads > 1 else SingleThreadedExecutor()
        ex.add_node(node)
        # spin() keeps one wait loop alive (a spin_once loop rebuilds it per callback, which starves image
        # subscriptions while a worker thread holds the GIL); this thread only watches for the stop conditions
        spinner = threading.Thread(target=_spin_quietly, args=(ex,), name="executor", daemon=True)
        spinner.start()
        while rclpy.ok() and not stop.is_set() and not getattr(node, "finished", False) and spinner.is_alive():
            stop.wait(0.1)
        ex.shutdown(timeout_sec=2.0)
        spinner.join(timeout=2.0)
        code = int(getattr(node, "exit_code", 0))
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as e:  # a bad parameter or file: one clear line, non-zero exit
        print(f"[{name}] error: {type(e).__name__}: {e}", file=sys.stderr)
        code = 2
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code
