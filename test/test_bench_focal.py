"""The focal-length development set (benchmarks/bench_focal.py): its queries are what it says they are, and the
Sacre-Coeur map-drift diagnostic (test_sacre_coeur.map_focal_drift) measures what it says."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_focal")


def test_dev_queries_have_the_drawn_focal_and_see_the_street(bench, tiny_world, tmp_path):
    from imp_core.imageio import read_image
    from imp_core.types import Pose
    from imp_core.world.render import Renderer
    from imp_core.world.scene import build_scene

    qs = bench.make_queries(tiny_world, tmp_path, num=3, seed=1, progress=False)
    assert len(qs) == 3
    renderer = Renderer(build_scene(tiny_world.conf, int(tiny_world.meta["seed"])))
    for q in qs:
        w, h, f = q["width"], q["height"], q["focal"]
        assert 0.4 <= q["rho"] <= 3.0 and f == pytest.approx(q["rho"] * 1.2 * max(w, h))
        assert read_image(tmp_path / "images" / q["name"]).shape[:2] == (h, w)
        # the recorded pose and focal reproduce the view: the facade fills most of it
        K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
        z, _ = renderer.depth_and_mask(K, w, h, Pose(np.array(q["R"]), np.array(q["t"])))
        assert (z > 0).mean() > 0.5
    # read back, not rendered again
    assert bench.make_queries(tiny_world, tmp_path, num=3, seed=1, progress=False) == qs


def test_summary_counts_focal_errors(bench):
    rows = [{"rho": 2.0, "focal_err": 0.01, "rot_err_deg": 0.5, "ms": 10.0},
            {"rho": 2.5, "focal_err": -0.08, "rot_err_deg": 3.0, "ms": 20.0},
            {"rho": 0.5, "focal_err": 0.03, "rot_err_deg": 0.2, "ms": 30.0},
            {"rho": 1.0, "ms": 40.0}]  # not posed
    s = bench.summarize(rows)
    assert (s["queries"], s["posed"], s["within_5pct"], s["within_2pct"]) == (4, 3, 2, 1)
    assert s["long_lens_within_5pct"] == "1/2" and s["rot_within_2deg"] == 2
    assert s["max_abs_focal_err"] == pytest.approx(0.08)


def test_map_focal_drift_uses_cameras_with_a_similar_lens():
    sys.path.insert(0, str(ROOT / "test"))
    from test_sacre_coeur import map_focal_drift

    def lmap(focals):
        return SimpleNamespace(names=list(focals), has=lambda n: n in focals,
                               camera=lambda n: SimpleNamespace(focal=(focals[n], focals[n])))

    full = lmap({"q": 3000.0, "a": 2900.0, "b": 2100.0, "c": 900.0})
    sub = lmap({"a": 2900.0 * 0.96, "b": 2100.0 * 0.97, "c": 900.0 * 1.01})
    # a (2900) and b (2100) are within 1.5x of q's 3000; c (900) is not
    assert map_focal_drift(sub, full, "q") == pytest.approx(-0.035)
    assert np.isnan(map_focal_drift(lmap({"c": 900.0}), full, "q"))
