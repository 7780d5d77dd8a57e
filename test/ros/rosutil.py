"""Helpers for the ROS tests: the per-run DDS domain and environment (set on import, before rclpy starts),
an in-process test node, waiting with timeouts, and graph specs for imp_ros.graph."""
from __future__ import annotations

import os
import random
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# One domain per test run (10-90), chosen before rclpy creates any participant.
DOMAIN_ID = random.Random(os.getpid() ^ int(time.time())).randint(10, 90)
os.environ["ROS_DOMAIN_ID"] = str(DOMAIN_ID)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(ROOT / "config" / "fastdds_shm.xml")
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
os.environ.setdefault("OMP_NUM_THREADS", "1")


_SPINNING: list = []  # the RosTestNodes of this process (a wait fails at once if one's spin thread ended)


def wait_until(pred, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for n in _SPINNING:
            n.alive()
        v = pred()
        if v:
            return v
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def held_open_race(node, topic: str):
    """A subscription on ``node`` whose QoS event handler is destroyed but still among the node's waitables: every
    wait set an executor builds for the node meets it and raises rclpy's own InvalidHandle ("destruction was
    requested"), i.e. the race of an entity destroyed under a wait, held open until ``node.destroy_subscription``."""
    from std_msgs.msg import String

    sub = node.create_subscription(String, topic, lambda m: None, 10)
    sub.event_handlers[0].destroy()
    return sub


class RosTestNode:
    """An rclpy node spun in a background thread, with message collectors."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import MultiThreadedExecutor

        rclpy.init()
        self.node = rclpy.create_node("imp_test")
        self.ex = MultiThreadedExecutor(num_threads=2)
        self.ex.add_node(self.node)
        self._stop = threading.Event()
        self.error: BaseException | None = None  # what ended the spin thread, if anything did
        self.races = 0  # waits that met an entity the test destroyed meanwhile (and went on)
        self._t = threading.Thread(target=self._spin, daemon=True)
        self._t.start()
        _SPINNING.append(self)

    def _spin(self) -> None:
        from imp_ros.common import _destroyed_under_wait

        try:
            while not self._stop.is_set():
                try:
                    self.ex.spin_once(timeout_sec=0.05)
                except Exception as e:
                    # rclpy builds the wait set from a copy of the node's entities: a subscription, publisher or
                    # client the test destroys meanwhile raises InvalidHandle there (its QoS event handler). The
                    # executor is intact (the next spin_once starts a new wait); only the test thread's own
                    # destruction raced it, so go on. Before, this ended the thread and every later test that
                    # needed the node timed out waiting for a response that had arrived.
                    if not _destroyed_under_wait(e):
                        raise
                    self.races += 1
        except BaseException as e:
            self.error = e
            raise

    def alive(self) -> None:
        """Raise if the spin thread ended (instead of letting a caller time out on what it would have received)."""
        if not self._t.is_alive() and not self._stop.is_set():
            raise RuntimeError(f"the test node's spin thread ended: {self.error!r}") from self.error

    def collect(self, msg_type, topic: str, qos=None):
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        box = []
        qos = qos or QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        sub = self.node.create_subscription(msg_type, topic, box.append, qos)
        return box, sub

    def call(self, srv_type, name: str, request, timeout: float = 15.0):
        cli = self.node.create_client(srv_type, name)
        try:
            if not cli.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {name} not available after {timeout} s")
            fut = cli.call_async(request)
            wait_until(fut.done, timeout, f"response of {name}")
            return fut.result()
        finally:
            self.node.destroy_client(cli)

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._t.join(timeout=5)
        if self in _SPINNING:
            _SPINNING.remove(self)
        self.node.destroy_node()
        rclpy.shutdown()


def graph_of(*nodes):
    """A graph spec dict for imp_ros.graph from (name, executable, parameters[, extra keys]) tuples."""
    return {"graph": {"fastdds_profile": str(ROOT / "config" / "fastdds_shm.xml"),
                      "nodes": [{"name": n[0], "executable": n[1], "parameters": n[2], **(n[3] if len(n) > 3 else {})}
                                for n in nodes]}}


class NullLog:
    """A Graph log that drops the node output (the test reads ``Graph.output`` instead)."""

    def write(self, s):
        pass

    def flush(self):
        pass


def start_graph(spec: dict, log=None, log_dir=None):
    """Start the processes of a graph spec dict (``graph_of``) in this run's DDS domain; the caller stops them."""
    from imp_ros.graph import Graph, load_graph

    return Graph(load_graph(spec), domain_id=DOMAIN_ID, log=log, log_dir=log_dir).start()


def wait_log(g, name: str, text: str, timeout: float = 60.0) -> str:
    """Wait until node ``name`` of graph ``g`` printed ``text`` (or exited); assert it printed it; its output."""
    wait_until(lambda: any(text in ln for ln in g.output[name]) or g.procs[name].poll() is not None, timeout,
               f"{text!r} in the {name} log")
    out = "".join(g.output[name])
    assert text in out, out
    return out
