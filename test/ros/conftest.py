"""Fixtures for the ROS tests: an isolated DDS domain, an in-process test node, the tiny world with a SIFT map,
and a runner that starts imp nodes as real separate processes (always stopped, also on failure)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rosutil import RosTestNode, start_graph

_RACES = []


@pytest.fixture(scope="session")
def ros():
    n = RosTestNode()
    yield n
    _RACES.append(n.races)
    n.close()


def pytest_terminal_summary(terminalreporter):
    if _RACES and _RACES[0]:
        terminalreporter.write_line(f"ROS test node: {_RACES[0]} wait(s) met an entity the tests destroyed meanwhile "
                                    "(rclpy's InvalidHandle; the spin thread went on)")


@pytest.fixture(scope="session")
def ros_world(tmp_path_factory, request):
    """The tiny synthetic world (the lead's ``tiny_world`` fixture when it exists)."""
    try:
        w = request.getfixturevalue("tiny_world")
        return Path(getattr(w, "root", w))
    except pytest.FixtureLookupError:
        from imp_core.world.synthetic import make_world

        return Path(make_world(tmp_path_factory.mktemp("ros_world") / "world", "tiny", progress=False))


@pytest.fixture(scope="session")
def ros_map(ros_world, tmp_path_factory):
    """A SIFT map of the tiny world (fast on CPU)."""
    from imp_core.mapping import build_map
    from imp_core.world.synthetic import SyntheticWorld

    out = tmp_path_factory.mktemp("ros_map") / "map"
    conf = {"features": {"name": "sift", "max_keypoints": 1024}, "matcher": {"name": "nn"}, "device": "cpu"}
    return build_map(SyntheticWorld(ros_world), out, conf, progress=False)


class _Log:
    """Collects node output (printed only when a test fails, by pytest's capture)."""

    def write(self, s):
        sys.stdout.write(s)

    def flush(self):
        sys.stdout.flush()


@pytest.fixture
def run_graph():
    """Start graphs; every process is stopped at the end of the test whatever happens."""
    started = []

    def start(spec_dict, log_dir=None):
        g = start_graph(spec_dict, log=_Log(), log_dir=log_dir)
        started.append(g)
        return g

    yield start
    for g in started:
        g.stop(grace=10.0)
