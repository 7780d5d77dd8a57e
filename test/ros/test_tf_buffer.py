"""The fallback TF buffer: chains, interpolation, static frames, extrapolation errors."""
from __future__ import annotations

import numpy as np
import pytest

from imp_core.types import Pose
from imp_ros.tf_buffer import TfBuffer, TransformLookupError, interpolate


def _yaw(deg, t):
    a = np.radians(deg)
    return Pose(np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]), t)


def test_chain_interpolation_and_errors():
    b = TfBuffer(cache_s=100.0, tolerance_s=0.01)
    b.set_transform("map", "odom", _yaw(10, [1, 2, 0]), 0, static=True)
    b.set_transform("odom", "base_link", _yaw(0, [0, 0, 0]), 1_000_000_000)
    b.set_transform("odom", "base_link", _yaw(90, [2, 0, 0]), 2_000_000_000)
    b.set_transform("base_link", "camera", _yaw(-90, [0.5, 0, 1]), 0, static=True)
    mid = b.lookup("odom", "base_link", 1_500_000_000)
    assert np.allclose(mid.t, [1, 0, 0])
    assert np.allclose(mid.matrix, _yaw(45, [1, 0, 0]).matrix)
    full = b.lookup("map", "camera", 2_000_000_000)
    assert np.allclose(full.matrix, (_yaw(10, [1, 2, 0]) * _yaw(90, [2, 0, 0]) * _yaw(-90, [0.5, 0, 1])).matrix)
    inv = b.lookup("camera", "map", 2_000_000_000)
    assert np.allclose(inv.matrix, full.inverse().matrix)
    assert np.allclose(b.lookup("odom", "base_link").matrix, _yaw(90, [2, 0, 0]).matrix)  # latest
    with pytest.raises(TransformLookupError, match="outside the buffered range"):
        b.lookup("odom", "base_link", 3_000_000_000)
    with pytest.raises(TransformLookupError, match="no TF path"):
        b.lookup("map", "elsewhere", 1_000_000_000)
    assert b.can_transform("camera", "odom", 1_200_000_000)
    assert not b.can_transform("x", "odom")


def test_interpolate_endpoints():
    a, c = _yaw(0, [0, 0, 0]), _yaw(120, [3, 0, 0])
    assert np.allclose(interpolate(a, c, 0).matrix, a.matrix)
    assert np.allclose(interpolate(a, c, 1).matrix, c.matrix)


def test_lookup_waits_up_to_its_timeout():
    """A transform that arrives while the lookup waits is returned; without a timeout the lookup fails at once."""
    import threading
    import time

    b = TfBuffer()
    b.set_transform("odom", "base_link", _yaw(0, [0, 0, 0]), 1_000_000_000)
    with pytest.raises(TransformLookupError, match="outside the buffered range"):
        b.lookup("odom", "base_link", 2_000_000_000)
    later = threading.Timer(0.1, b.set_transform, args=("odom", "base_link", _yaw(0, [1, 0, 0]), 2_000_000_000))
    later.start()
    t0 = time.monotonic()
    assert np.allclose(b.lookup("odom", "base_link", 2_000_000_000, timeout_s=10.0).t, [1, 0, 0])
    assert time.monotonic() - t0 < 5.0
    later.join()
    t0 = time.monotonic()
    with pytest.raises(TransformLookupError):
        b.lookup("odom", "base_link", 3_000_000_000, timeout_s=0.2)
    assert time.monotonic() - t0 >= 0.2
