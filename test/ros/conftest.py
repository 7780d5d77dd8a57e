"""Fixtures for the ROS tests: an isolated DDS domain, an in-process test node, the tiny world with a SIFT map,
and helpers that run imp nodes as real separate processes (always stopped, also on failure)."""
from __future__ import annotations

import os
import random
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# One domain per test run (10-90), chosen before rclpy creates any participant.
DOMAIN_ID = random.Random(os.getpid() ^ int(time.time())).randint(10, 90)
os.environ["ROS_DOMAIN_ID"] = str(DOMAIN_ID)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(ROOT / "config" / "fastdds_shm.xml")
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def wait_until(pred, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


class TestNode:
    """An rclpy node spun in a background thread, with message collectors."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import MultiThreadedExecutor

        rclpy.init()
        self.node = rclpy.create_node("imp_test")
        self.ex = MultiThreadedExecutor(num_threads=2)
        self.ex.add_node(self.node)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._spin, daemon=True)
        self._t.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.ex.spin_once(timeout_sec=0.05)

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
        self.node.destroy_node()
        rclpy.shutdown()


@pytest.fixture(scope="session")
def ros():
    n = TestNode()
    yield n
    n.close()


@pytest.fixture(scope="session")
def ros_world(tmp_path_factory, request):
    """The tiny synthetic world (the lead's ``tiny_world`` fixture when it exists)."""
    try:
        w = request.getfixturevalue("tiny_world")
        return Path(getattr(w, "root", w))
    except pytest.FixtureLookupError:
        from imp_core.datasets.synthetic import make_world

        return Path(make_world(tmp_path_factory.mktemp("ros_world") / "world", "tiny", progress=False))


@pytest.fixture(scope="session")
def ros_map(ros_world, tmp_path_factory):
    """A SIFT map of the tiny world (fast on CPU)."""
    from imp_core.datasets.synthetic import SyntheticWorld
    from imp_core.mapping import build_map

    out = tmp_path_factory.mktemp("ros_map") / "map"
    conf = {"features": {"name": "sift", "max_keypoints": 1024}, "matcher": {"name": "nn"}, "device": "cpu"}
    return build_map(SyntheticWorld(ros_world), out, conf, progress=False)


def graph_of(*nodes):
    """A graph spec dict for imp_ros.graph from (name, executable, parameters[, extra keys]) tuples."""
    return {"graph": {"fastdds_profile": str(ROOT / "config" / "fastdds_shm.xml"),
                      "nodes": [{"name": n[0], "executable": n[1], "parameters": n[2], **(n[3] if len(n) > 3 else {})}
                                for n in nodes]}}


class _Log:
    """Collects node output (printed only when a test fails, by pytest's capture)."""

    def write(self, s):
        sys.stdout.write(s)

    def flush(self):
        sys.stdout.flush()


@pytest.fixture
def run_graph():
    """Start graphs; every process is stopped at the end of the test whatever happens."""
    from imp_ros.graph import Graph, load_graph

    started = []

    def start(spec_dict, log_dir=None):
        g = Graph(load_graph(spec_dict), domain_id=DOMAIN_ID, log=_Log(), log_dir=log_dir).start()
        started.append(g)
        return g

    yield start
    for g in started:
        g.stop(grace=10.0)
