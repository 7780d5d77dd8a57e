"""Shared node plumbing: QoS from parameters, parameter declaration from dicts, and a main() runner."""
from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
    qos_profile_system_default,
)

from imp_ros.share import package_file

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


QOS_CHOICES = ("sensor_data", "reliable", "best_effort", "system_default", "0", "1", "2")


@dataclass(frozen=True)
class Param:
    """A node parameter: default, description, and what values are valid (``range`` inclusive; ``check`` returns
    an error text or None). Declared with a ParameterDescriptor and validated whenever it is set."""

    default: Any
    description: str
    range: Optional[Tuple[float, float]] = None
    choices: Optional[Tuple[str, ...]] = None
    check: Optional[Callable[[Any], Optional[str]]] = None
    read_only: bool = False


def not_empty(v: Any) -> Optional[str]:
    return None if str(v).strip() else "must not be empty"


def existing_dir(v: Any) -> Optional[str]:
    return None if not v or Path(str(v)).expanduser().is_dir() else f"directory {v} does not exist"


def existing_path(v: Any) -> Optional[str]:
    return None if not v or Path(str(v)).expanduser().exists() else f"{v} does not exist"


def package_config(v: Any) -> Optional[str]:
    if not v:
        return None

    try:
        package_file(str(v), "config")
    except FileNotFoundError as e:
        return str(e)
    return None


def descriptor(name: str, spec: Param):
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    extra = []
    if spec.choices:
        extra.append("one of: " + ", ".join(spec.choices))
    d = ParameterDescriptor(name=name, description=spec.description, read_only=spec.read_only,
                            additional_constraints="; ".join(extra))
    if spec.range is not None and not isinstance(spec.default, bool):
        lo, hi = spec.range
        if isinstance(spec.default, int):
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
        elif isinstance(spec.default, float):
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    return d


def check_value(name: str, spec: Param, value: Any) -> Optional[str]:
    """Why ``value`` is not valid for parameter ``name`` (None when it is)."""
    if spec.range is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = spec.range
        if not (lo <= value <= hi) or value != value:
            return f"parameter {name!r} = {value!r} is out of range [{lo:g}, {hi:g}]"
    if spec.choices is not None and str(value).strip().lower() not in spec.choices:
        return f"parameter {name!r} = {value!r} is not one of {', '.join(spec.choices)}"
    if spec.check is not None:
        err = spec.check(value)
        if err:
            return f"parameter {name!r} = {value!r}: {err}"
    return None


def declare(node, params: Dict[str, Any], tolerant: bool = False,
            on_accept: Optional[Callable[[list], None]] = None) -> Dict[str, str]:
    """Declare every parameter with a descriptor (description, range) and validate every later set with an
    on-set-parameters callback (a bad value is rejected with its reason). Plain values (no ``Param``) are declared
    as before. A bad value from the command line / params file raises ValueError naming it; with ``tolerant``
    (lifecycle nodes: the process stays up and configure reports it) the default is kept and the errors are
    returned {name: reason}."""
    from rcl_interfaces.msg import SetParametersResult
    from rclpy.exceptions import ParameterException

    specs = {k: v for k, v in params.items() if isinstance(v, Param)}

    def on_set(changes):
        for prm in changes:
            spec = specs.get(prm.name)
            if spec is None:
                continue
            err = check_value(prm.name, spec, prm.value)
            if err:
                if declared:
                    node.get_logger().warning(f"parameter change rejected: {err}")
                return SetParametersResult(successful=False, reason=err)
        if on_accept is not None:
            on_accept([prm.name for prm in changes])
        return SetParametersResult(successful=True)

    declared = False
    node.add_on_set_parameters_callback(on_set)
    errors: Dict[str, str] = {}
    overrides = getattr(node, "_parameter_overrides", {}) or {}
    for k, v in params.items():
        if not isinstance(v, Param):
            node.declare_parameter(k, v)
            continue
        try:
            node.declare_parameter(k, v.default, descriptor(k, v))
        except ParameterException as e:
            given = overrides[k].value if k in overrides else None
            msg = check_value(k, v, given) or f"parameter {k!r} = {given!r} rejected: {e}"
            if not tolerant:
                raise ValueError(msg) from None
            errors[k] = msg
            node.get_logger().error(f"{msg}; keeping the default {v.default!r}")
            node.declare_parameter(k, v.default, descriptor(k, v), ignore_override=True)
    declared = True
    return errors


def param(node, name: str):
    return node.get_parameter(name).value


def _destroyed_under_wait(e: BaseException) -> bool:
    """rclpy's error for an entity destroyed while the executor was using it (its wait set, a take)."""
    return "destruction was requested" in str(e) or "InvalidHandle" in type(e).__name__


def _spin_quietly(ex, errors: list, streak_s: float = 2.0) -> None:
    """``ex.spin()`` until the executor or the context is shut down. An entity destroyed under the executor's wait
    raises InvalidHandle out of spin(); the executor itself is intact (the next wait is built without it), so it
    spins on: before, the thread ended there and the node stopped serving without a word. Anything else a callback
    raises ends the spin and lands in ``errors`` (``run`` then says so and exits non-zero). The same InvalidHandle
    again and again for ``streak_s`` seconds (an entity that stays broken) counts as such an error too."""
    from rclpy.executors import ExternalShutdownException

    first = last = None
    while True:
        try:
            ex.spin()
            return
        except (ExternalShutdownException, KeyboardInterrupt):
            return
        except Exception as e:
            now = time.monotonic()
            if not _destroyed_under_wait(e):
                errors.append(e)
                return
            if last is None or now - last > 0.5:  # a new streak
                first = now
            last = now
            if now - first > streak_s:
                errors.append(e)
                return


SHUTDOWN_WATCHDOG_S = 60.0


def _hard_exit(name: str) -> None:
    """Shutdown did not finish: say so with every thread's stack, and end the process (exit 1) instead of
    hanging a launch or a vehicle's supervisor."""
    import faulthandler
    import os

    print(f"[{name}] error: shutdown did not finish in {SHUTDOWN_WATCHDOG_S:.0f} s; thread stacks follow",
          file=sys.stderr, flush=True)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()
    os._exit(1)


def run(make_node: Callable[[], Any], executor_threads: int = 4, args=None, name: str = "node") -> int:
    """rclpy.init, build the node, spin until SIGINT/SIGTERM or the node says it is ``finished`` (e.g. after the
    lifecycle shutdown transition; a signal while the node is built and started, e.g. an autostart configure
    loading models, interrupts that); then close the node (stop and join its threads, timers) before the node and
    the context go away, so no thread is inside rclpy at interpreter exit. Exit code: the node's ``exit_code``."""
    import signal
    import threading

    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()
    starting = threading.Event()  # set while the node is built and started (on this, the main thread)

    def on_signal(*_):
        stop.set()
        if starting.is_set():  # start-up (map load, models, warm-up) may take long: interrupt it now, like Ctrl-C
            starting.clear()
            raise KeyboardInterrupt

    def install_handlers():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)

    try:  # pycolmap's glog installs a SIGTERM crash handler when first imported: import it before ours
        import pycolmap  # noqa: F401
    except ImportError:
        pass
    install_handlers()
    try:  # `kill -USR1 <pid>` prints every thread's stack (a process that does not exit can be diagnosed)
        import faulthandler

        faulthandler.register(signal.SIGUSR1, all_threads=True)
    except (AttributeError, ValueError, RuntimeError):
        pass
    rclpy.init(args=sys.argv if args is None else args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    ex = None
    spinner = None
    spin_errors: list = []
    code = 0
    try:
        starting.set()
        try:
            node = make_node()
            start = getattr(node, "start", None)  # e.g. the localizer's autostart: configure, then activate
            if start is not None:
                start()
        finally:
            starting.clear()
        # rclpy's MultiThreadedExecutor busy-polls while a mutually exclusive group is busy and then starves the
        # node's own worker thread of the GIL (measured with py-spy: half the samples); nodes whose heavy work
        # runs on their own thread use the single-threaded executor.
        ex = MultiThreadedExecutor(num_threads=executor_threads) if executor_threads > 1 else SingleThreadedExecutor()
        ex.add_node(node)
        # spin() keeps one wait loop alive (a spin_once loop rebuilds it per callback, which starves image
        # subscriptions while a worker thread holds the GIL); this thread only watches for the stop conditions
        spinner = threading.Thread(target=_spin_quietly, args=(ex, spin_errors), name="executor", daemon=True)
        spinner.start()
        while rclpy.ok() and not stop.is_set() and not getattr(node, "finished", False) and spinner.is_alive():
            stop.wait(0.1)
            install_handlers()  # again: a library imported later (at configure) may have replaced them
        if spin_errors:  # a callback raised: the node cannot go on serving; say what and exit non-zero
            e = spin_errors[0]
            print(f"[{name}] error: the executor stopped: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
            code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        if ex is None:
            print(f"[{name}] interrupted during start-up", file=sys.stderr, flush=True)
    except Exception as e:  # a bad parameter or file: one clear line, non-zero exit
        print(f"[{name}] error: {type(e).__name__}: {e}", file=sys.stderr)
        code = 2
    finally:
        watchdog = threading.Timer(SHUTDOWN_WATCHDOG_S, _hard_exit, args=(name,))
        watchdog.daemon = True
        watchdog.start()
        # the executor stops first (it finishes the callback in progress), so nothing the node destroys next can
        # be under it; then the node joins its own threads and frees its entities; then the context goes
        if ex is not None:
            ex.shutdown(timeout_sec=10.0)
        if spinner is not None:
            spinner.join(timeout=10.0)
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as e:
                    print(f"[{name}] error while closing: {type(e).__name__}: {e}", file=sys.stderr)
                    code = code or 1
            code = code or int(getattr(node, "exit_code", 0))
            try:
                node.destroy_node()
            except Exception:
                pass
        rclpy.try_shutdown()
        watchdog.cancel()
    return code
