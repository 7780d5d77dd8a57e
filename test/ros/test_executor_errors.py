"""How a node's executor thread (``imp_ros.common``) meets errors: an entity destroyed under its wait (rclpy's
InvalidHandle) is spun past; an exception from a callback ends the spin and the process exits 1 saying why (before,
both ended the thread, and the node stopped serving and exited 0 without a word)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from rosutil import ROOT, held_open_race, wait_until

pytestmark = [pytest.mark.ros]


@pytest.fixture
def own_context():
    """A context of its own (the session's test node keeps the default one)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("imp_executor_errors", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    yield node, ex
    ex.shutdown(timeout_sec=5.0)
    node.destroy_node()
    rclpy.try_shutdown(context=ctx)


def _spin(ex, **kw):
    from imp_ros.common import _spin_quietly

    errors: list = []
    t = threading.Thread(target=_spin_quietly, args=(ex, errors), kwargs=kw, daemon=True)
    t.start()
    return t, errors


def test_executor_spins_past_an_entity_destroyed_under_its_wait(own_context):
    node, ex = own_context
    ticks = []
    node.create_timer(0.01, lambda: ticks.append(1))
    t, errors = _spin(ex)
    wait_until(lambda: len(ticks) >= 3, 10, "the timer to tick")
    sub = held_open_race(node, "/imp_test/executor_race")
    time.sleep(0.3)  # well under the 2 s streak that would count as a broken node; the executor waits every 10 ms
    node.destroy_subscription(sub)
    n = len(ticks)
    wait_until(lambda: len(ticks) >= n + 3, 10, "the timer to tick again after the race")
    assert t.is_alive()
    assert errors == []
    ex.shutdown(timeout_sec=5.0)
    t.join(timeout=10)
    assert not t.is_alive()
    assert errors == []


def test_an_entity_that_stays_broken_ends_the_spin_as_an_error(own_context):
    node, ex = own_context
    held_open_race(node, "/imp_test/executor_broken")
    t, errors = _spin(ex, streak_s=0.5)
    t.join(timeout=10)
    assert not t.is_alive()
    assert len(errors) == 1
    assert "destruction was requested" in str(errors[0])


def test_a_callback_error_ends_the_spin_and_the_process_exits_1_saying_why(own_context, tmp_path):
    node, ex = own_context

    def boom():
        raise ValueError("boom from a timer")

    node.create_timer(0.01, boom)
    t, errors = _spin(ex)
    t.join(timeout=10)
    assert not t.is_alive()
    assert [type(e) for e in errors] == [ValueError]

    script = tmp_path / "boom_node.py"
    script.write_text(textwrap.dedent("""
        import sys
        from rclpy.node import Node
        from imp_ros import common

        class Boom(Node):
            def __init__(self):
                super().__init__("imp_boom")
                self.create_timer(0.05, self.boom)

            def boom(self):
                raise ValueError("boom from a timer")

        sys.exit(common.run(Boom, executor_threads=1, name="boom"))
    """))
    p = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 1, p.stdout + p.stderr
    assert "[boom] error: the executor stopped: ValueError: boom from a timer" in p.stderr, p.stderr
