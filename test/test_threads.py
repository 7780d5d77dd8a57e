"""The localizer chooses its CPU threads (conf 'threads', ROS parameter 'threads') instead of inheriting torch's
one-per-core default."""
from __future__ import annotations

import pytest
import torch

from imp_core import threads


@pytest.mark.parametrize("cores,expect", [(1, 1), (2, 1), (3, 1), (4, 2), (8, 4), (64, 4)])
def test_auto_is_half_the_cores(monkeypatch, cores, expect):
    monkeypatch.setattr(threads, "available_cores", lambda: cores)
    for auto in (0, None, "auto"):
        assert threads.resolve_threads(auto) == expect
    assert threads.resolve_threads(3) == 3


@pytest.mark.parametrize("bad", [-1, 1.5, "two", True])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(ValueError, match="threads"):
        threads.resolve_threads(bad)


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_localizer_sets_its_threads(tiny_map, keep_threads, monkeypatch):
    from imp_core.localization import Localizer

    torch.set_num_threads(2)
    loc = Localizer({"map": str(tiny_map), "threads": 1, "device": "cpu"})
    assert loc.threads == 1
    assert torch.get_num_threads() == 1
    loc.close()
    monkeypatch.setattr(threads, "available_cores", lambda: 6)
    loc = Localizer({"map": str(tiny_map), "device": "cpu"})  # default: auto
    assert loc.conf["threads"] == 0
    assert loc.threads == 3
    assert torch.get_num_threads() == 3
    loc.close()
    with pytest.raises(ValueError, match="threads"):
        Localizer({"map": str(tiny_map), "threads": -2, "device": "cpu"})
