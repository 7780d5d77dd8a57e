"""Smoke test of benchmarks/bench_matchers.py: tiny sizes, one pair, random-init small IMP/EIMP models."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROWS = ["nn", "lighterglue", "gm", "imp", "eimp", "eimp+stop"]
IMP_KEYS = {"iterations", "tokens_kept", "tokens_kept_pct", "early_stop_share", "pooled_share"}
ROW_KEYS = {"device", "keypoints", "matcher", "pairs", "ms", "wall_ms", "peak_mib", "matches", "calls"}


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_matchers")


def check_result(out: Path, tag: str, result: dict, sizes) -> dict:
    data = json.loads((out / f"bench_matchers_{tag}.json").read_text())
    assert data["ratios"] == json.loads(json.dumps(result["ratios"]))
    assert set(data) >= {"meta", "rows", "ratios", "checks"}
    assert (out / f"bench_matchers_{tag}.md").read_text().startswith("# Matchers on xfeat")
    assert (out / f"bench_matchers_{tag}.png").stat().st_size > 1000
    rows = {(r["keypoints"], r["matcher"]): r for r in data["rows"]}
    assert set(rows) == {(n, m) for n in sizes for m in ROWS}
    for (n, m), r in rows.items():
        assert ROW_KEYS <= set(r), m
        assert r["ms"] > 0
        assert r["wall_ms"] > 0
        assert r["peak_mib"] >= 0
        if m in ("gm", "imp", "eimp", "eimp+stop"):
            assert IMP_KEYS <= set(r), m
            assert 1 <= r["iterations"] <= 9
            assert 0 < r["tokens_kept_pct"] <= 100
            assert 0 <= r["early_stop_share"] <= 1
            # the CPU split: layers and heads always run; no more time in the steps than in the call
            assert r["split_ms"]["layers"] > 0 and r["split_ms"]["heads"] > 0, r["split_ms"]
            assert sum(r["split_ms"].values()) <= 1.05 * max(c["ms"] for c in r["calls"]) + 1.0
        if m == "lighterglue":
            assert 1 <= r["layers"] <= 6
    for n in sizes:
        assert {"eimp/gm", "eimp+stop/gm", "eimp/lighterglue", "eimp+stop/lighterglue"} <= set(data["ratios"][str(n)])
    assert data["meta"]["weights"]["gm"] == "random"
    assert data["meta"]["imp_architecture"]["descriptor_dim"] == 64
    return data


def test_bench_matchers_synthetic_pair(bench, tmp_path):
    result = bench.main(["--inputs", "synthetic", "--sizes", "96", "--random-init", "--threads", "1",
                         "--out", str(tmp_path), "--tag", "smoke"])
    data = check_result(tmp_path, "smoke", result, [96])
    assert [p["kind"] for p in data["meta"]["pairs"]] == ["synthetic"]
    assert data["meta"]["pairs"][0]["intrinsics"]


def test_bench_matchers_photo_pair(bench, tmp_path, shared_data):
    result = bench.main(["--inputs", "photos", "--photos-dir", str(shared_data), "--photo-focal", "900",
                         "--sizes", "128", "--image-size", "480", "--random-init", "--threads", "1",
                         "--out", str(tmp_path)])
    data = check_result(tmp_path, "xfeat_cpu", result, [128])
    assert data["meta"]["keypoints"]["128"]["keypoints_min"] >= 0.9 * 128
    assert data["meta"]["pairs"][0]["name"] == "DSC_0410.JPG ~ DSC_0411.JPG"


def test_bench_matchers_rejects_missing_weights(bench, tmp_path):
    with pytest.raises(SystemExit, match="do not exist"):
        bench.main(["--inputs", "synthetic", "--weights", str(tmp_path / "nope.pth"), "--out", str(tmp_path)])
