"""Instance overlays (imp_core.localization.visualize): fixed distinct colours per instance, blending only the
recognized pixels, the compact label map a result keeps and its expansion back to the image."""
from __future__ import annotations

import numpy as np
import pytest

from imp_core.localization.visualize import (
    LABEL_MAP_MAX_SIDE,
    compact_labels,
    draw_instances,
    expand_labels,
    instance_colors,
    instance_regions,
)
from imp_core.types import Camera, LocalizationResult


def test_colours_are_fixed_distinct_and_black_for_no_instance():
    c = instance_colors(np.arange(0, 200))
    assert (c[0] == 0).all()
    assert c.dtype == np.uint8
    assert (instance_colors([7, 3]) == c[[7, 3]]).all()  # the same id, the same colour, whatever else is drawn
    d = np.abs(c[1:, None].astype(int) - c[None, 1:].astype(int)).sum(-1)
    close = (d < 20) & ~np.eye(199, dtype=bool)
    assert close.sum() / 2 < 0.005 * 199 * 198 / 2  # 199 ids: hardly any two look alike
    assert (np.abs(c[1:-1].astype(int) - c[2:].astype(int)).sum(-1) > 60).all()  # neighbouring ids never do


def test_compact_then_expand_keeps_regions():
    lab = np.zeros((480, 640), np.int32)
    lab[100:300, 50:250] = 12
    lab[200:400, 400:600] = 70000  # above uint16: saturates
    small = compact_labels(lab)
    assert small.dtype == np.uint16
    assert max(small.shape) == LABEL_MAP_MAX_SIDE
    assert small.shape == (192, 256)
    big = expand_labels(small, 640, 480)
    assert big.shape == (480, 640)
    assert set(np.unique(big)) == {0, 12, 65535}
    assert (big == 12).sum() == pytest.approx(200 * 200, rel=0.03)
    assert compact_labels(None) is None
    area, box = instance_regions(big, [12, 5])
    assert area[0] == pytest.approx(200 * 200 / (480 * 640), rel=0.03)
    assert box == (0, (0, 0, 0, 0))
    assert abs(area[1][0] - 50) <= 3
    assert abs(area[1][2] - 200) <= 5


def test_overlay_blends_instances_only_and_draws_inliers():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    lab = np.zeros((120, 160), np.int32)
    lab[60:120, 0:70] = 4
    lab[60:120, 90:160] = 9
    cam = Camera("PINHOLE", 160, 120, [100.0, 100.0, 80.0, 60.0])
    res = LocalizationResult(instances=[(9, 0.8), (4, 0.6)], label_map=compact_labels(lab))
    before = img.copy()
    out = draw_instances(img, res.label_map, cam, res, alpha=0.5)
    assert out.shape == img.shape
    assert out.dtype == np.uint8
    assert (img == before).all()  # drawn on a copy
    inner4 = (slice(70, 110), slice(10, 55))
    want = np.clip(0.5 * img[inner4].astype(float) + 0.5 * instance_colors([4])[0] + 0.5, 0, 255).astype(np.uint8)
    text = np.zeros(lab.shape, bool)
    text[75:100, 15:55] = True  # where the id "#4" is written
    m = ~text[inner4]
    assert (np.abs(out[inner4][m].astype(int) - want[m].astype(int)) <= 1).all()
    # no instance: the query's pixels (below the status line, away from outlines)
    assert (out[40:55, 20:140] == img[40:55, 20:140]).all()
    with pytest.raises(ValueError, match="alpha"):
        draw_instances(img, lab, cam, res, alpha=1.5)
    with pytest.raises(ValueError, match="label map"):
        draw_instances(img, lab[None], cam, res)
