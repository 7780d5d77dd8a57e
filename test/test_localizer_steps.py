"""The localizer's parts: the Tracker's state rules, stage sub-timings in the result, feature confs over the map's."""
from __future__ import annotations

import numpy as np
import pytest

from imp_core.localization import Localizer
from imp_core.localization.tracking import Tracker
from imp_core.types import STATUS_LOST, STATUS_RELOCALIZING, Pose

TRACKING = Localizer.default_conf["tracking"]


def test_tracker_lost_frames_and_stamp_gaps():
    t = Tracker(TRACKING)
    p = Pose.from_qvec([1, 0, 0, 0], [1.0, 2.0, 3.0])
    assert t.prior is None
    assert t.missed() == STATUS_LOST  # no track yet: lost
    t.reset()
    t.fixed(p, np.eye(6))
    assert t.prior is p
    assert t.tracking
    assert t.lost == 0
    for _ in range(TRACKING["max_lost_frames"]):
        assert t.missed() == STATUS_RELOCALIZING
        assert t.prior is p  # the prior is kept for a few frames
    assert t.missed() == STATUS_LOST
    assert t.prior is None
    assert not t.tracking
    # stamps: a gap above max_gap_s or a stamp going backwards drops the prior; small steps keep it
    t.fixed(p, None)
    t.new_frame(10.0)
    t.new_frame(10.0 + TRACKING["max_gap_s"] / 2)
    assert t.prior is p
    t.new_frame(9.0)
    assert t.prior is None
    assert not t.tracking
    t.set_prior(p)
    t.new_frame(9.5)
    t.new_frame(None)  # unknown stamps never drop it
    assert t.prior is p
    t.new_frame(9.5 + TRACKING["max_gap_s"] + 0.1)
    assert t.prior is None
    # a jump away from the prior
    near = Pose.from_qvec([1, 0, 0, 0], [1.0, 2.0, 3.0 + TRACKING["max_jump_m"] / 2])
    far = Pose.from_qvec([1, 0, 0, 0], [1.0, 2.0, 3.0 + TRACKING["max_jump_m"] * 2])
    assert t.near(near, p)
    assert not t.near(far, p)


def test_stage_sub_timings_are_reported(tiny_map, tiny_world):
    """A stage's own sub-timings were merged with setdefault, so one named like a key the localizer had set was
    dropped; now each is reported, under '<stage>.<key>' where the localizer uses the key itself."""
    from imp_core.stages import COARSE_STAGES, CoarseStage

    @COARSE_STAGES.register("timed_test_stage")
    class Timed(CoarseStage):
        def prepare(self, ctx):
            ctx.timings["net"] = 7.0
            ctx.timings["retrieval"] = 5.0  # e.g. an own fallback search, not the retrieval stage below

        def propose(self, ctx):
            return []

    loc = Localizer({"map": str(tiny_map), "coarse": [{"name": "timed_test_stage"}, {"name": "retrieval"}]})
    try:
        q = tiny_world.queries("day")[0]
        res = loc.localize(tiny_world.image(q.name), q.camera)
        assert res.timings["net"] == 7.0
        assert res.timings["timed_test_stage.retrieval"] == 5.0
        assert res.timings["timed_test_stage"] >= 0
        assert 0 < res.timings["retrieval"] != 5.0
        assert res.success  # the retrieval stage localized the frame after the empty one
    finally:
        loc.close()


def test_feature_conf_updates_the_maps(tiny_map):
    from imp_core.mapping.format import MapError

    loc = Localizer({"map": str(tiny_map), "features": {"max_keypoints": 512}, "coarse": [{"name": "retrieval"}]})
    try:
        assert loc.extractor.conf["name"] == "sift"
        assert loc.extractor.conf["max_keypoints"] == 512
    finally:
        loc.close()
    with pytest.raises(MapError, match="holds 'sift' features but the localizer is configured with 'disk'"):
        Localizer({"map": str(tiny_map), "features": {"name": "disk"}})
