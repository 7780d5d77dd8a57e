"""Tracking jump check with max_speed_mps: a stream processed slower than it comes skips frames, so the pose moves
further from the prior than max_jump_m; the allowance grows with the seconds since the prior's frame."""
from __future__ import annotations

import numpy as np

from imp_core.localization.localizer import Localizer
from imp_core.localization.tracking import Tracker
from imp_core.types import Pose


def _conf(**kw):
    return {**Localizer.default_conf["tracking"], **kw}


def test_allowance_grows_with_time_since_the_prior():
    assert Localizer.default_conf["tracking"]["max_speed_mps"] == 0.0  # off unless a conf asks for it
    far = Pose.from_center(np.eye(3), [4.8, 0.0, 0.0])  # 4 frames of 1.2 m
    for speed, expect in ((0.0, False), (15.0, True), (4.0, False)):  # 3 m + 4 m/s x 0.4 s = 4.6 m < 4.8 m
        tr = Tracker(_conf(max_speed_mps=speed, max_jump_m=3.0))
        tr.new_frame(10.0)
        tr.fixed(Pose(), None)
        tr.new_frame(10.4)
        assert tr.near(far, tr.prior) is expect, speed
    tr = Tracker(_conf(max_speed_mps=15.0))
    tr.new_frame(10.0)
    tr.fixed(Pose(), None)
    tr.new_frame(10.1)
    assert not tr.near(far, tr.prior)  # 3 + 1.5 m < 4.8 m
    assert not tr.near(far, Pose())  # a prior given for this frame only: no allowance
    tr.set_prior(Pose())  # e.g. /initialpose: no stamp, no allowance
    tr.new_frame(10.3)
    assert not tr.near(far, tr.prior)
    tr = Tracker(_conf(max_speed_mps=15.0))  # no stamps: no allowance
    tr.fixed(Pose(), None)
    assert not tr.near(far, tr.prior)
