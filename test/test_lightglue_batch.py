"""LightGlue / LighterGlue match_many: references of equal size share a forward pass where that changes no result
(no early stopping); every reference gets what it gets on its own."""
from __future__ import annotations

import numpy as np
import pytest

from imp_core.matching.base import create_matcher
from imp_core.types import Features


def _feats(rng, n, base=None, noise=0.05):
    d = rng.standard_normal((n, 64)).astype(np.float32)
    kp = rng.uniform(0, [640, 480], (n, 2)).astype(np.float32)
    if base is not None:  # a view of `base`: shifted keypoints, noisy descriptors for the first half
        h = min(n, len(base)) // 2
        d[:h] = base.descriptors[:h] + noise * rng.standard_normal((h, 64))
        kp[:h] = np.clip(base.keypoints[:h] + [12.0, -5.0], 0, [639, 479])
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return Features(kp, d, np.ones(n, np.float32), (640, 480), "xfeat")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    q = _feats(rng, 400)
    refs = [_feats(rng, 300, q), _feats(rng, 300, q), _feats(rng, 0), _feats(rng, 250, q), _feats(rng, 300, q, 0.2)]
    return q, refs


@pytest.mark.parametrize("conf", [{"depth_confidence": -1, "width_confidence": -1},  # batched as one
                                  {}])  # LighterGlue's defaults: point pruning, kornia runs the pairs one by one
def test_batched_references_match_as_on_their_own(data, conf):
    q, refs = data
    batched = create_matcher({"name": "lighterglue", "device": "cpu", "batch_size": 4, **conf})
    single = create_matcher({"name": "lighterglue", "device": "cpu", "batch_size": 1, **conf})
    assert batched.batch_size() == 4
    assert single.batch_size() == 1
    many = batched.match_many(q, refs)
    assert len(many) == len(refs)
    assert len(many[2]) == 0
    for k, r in enumerate(refs):
        one = single.match(q, r)
        assert np.array_equal(many[k].indices, one.indices), k
        np.testing.assert_allclose(many[k].scores, one.scores, atol=1e-5)
    assert many[0].info.get("batch") == 3.0  # the three 300-keypoint references went together
    assert len(many[0]) > 20


def test_early_stopping_is_not_batched_and_cpu_runs_one_by_one():
    m = create_matcher({"name": "lightglue", "device": "cpu", "features": "aliked", "batch_size": 4})
    assert m.conf["depth_confidence"] > 0
    assert m.batch_size() == 1
    assert create_matcher({"name": "lighterglue", "device": "cpu"}).batch_size() == 1  # auto on CPU


def test_descriptor_size_error_names_the_reference(data):
    q, refs = data
    bad = Features(refs[0].keypoints, np.zeros((300, 32), np.float32), refs[0].scores, (640, 480), "xfeat")
    with pytest.raises(ValueError, match="reference 1"):
        create_matcher({"name": "lighterglue", "device": "cpu"}).match_many(q, [refs[0], bad])
