"""benchmarks/bench_localization.py: with --confs one conf in tracking mode gives recall per condition, the
per-stage split, CPU time, Hz and the load average; with pairs each condition also gets the covariance honesty
(NEES). Smoke tests on the tiny world's SIFT map; the numbers are the benchmark's business, not a test's."""
from __future__ import annotations

import json


def test_conf_row_and_table(tiny_world, tiny_map, tmp_path, load_benchmark):
    bench = load_benchmark("bench_localization")
    assert set(bench.CONFS) == {"demo", "stream", "realtime"}
    assert all(p.is_file() for p in bench.CONFS.values())
    conf = tmp_path / "loc.yaml"
    conf.write_text("localizer:\n  threads: 1\n  coarse:\n    - {name: tracking, num_references: 2, covisible: 0}\n"
                    "    - {name: retrieval, top_k: 2}\n")
    row = bench.run_conf({"name": "tiny", "conf": str(conf), "map": str(tiny_map), "world": str(tiny_world.root),
                          "limit": 3})
    assert row["frames"] == 6
    assert row["threads"] == 1
    assert set(row["accuracy"]) == {"day", "night"}
    assert len(row["accuracy"]["day"]["recall"]) == 3
    assert row["accuracy"]["day"]["recall"][2] > 0  # the tiny world's day frames localize
    for k in ("extraction", "matching", "pnp", "total"):
        assert row["latency_ms"][k]["p50"] >= 0
        assert row["latency_ms"][k]["p90"] >= row["latency_ms"][k]["p50"]
    assert row["hz_p50"] > 0
    assert len(row["load_avg_before"]) == 3
    assert row["cpu_ms"]["p50"] > 0
    table = bench.format_conf_table([row])
    assert "tiny" in table
    assert "night" in table
    assert "load" in table
    json.dumps(row)  # the JSON the benchmark writes


def test_pair_row_reports_covariance_consistency(tiny_world, tiny_map, tmp_path, load_benchmark):
    """Pairs mode: each condition's row says whether the reported covariance is honest (NEES of every localized
    pose); the table prints it and the figure gets the NEES CDF next to the error CDFs."""
    bench = load_benchmark("bench_localization")
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "sift_2048").symlink_to(tiny_map)  # run_pair's map of this pair: the tiny world's SIFT map
    row = bench.run_pair({"pair": "sift+nn", "world": str(tiny_world.root), "maps": str(maps), "top_k": 2,
                          "limit": 3})
    day = row["accuracy"]["day"]
    assert day["localized"] > 0
    cov = day["covariance"]
    assert cov["count"] == day["localized"] == len(day["nees_position"])
    assert all(v >= 0 for v in day["nees_position"])
    assert 0 <= cov["position_within_95"] <= 1 and cov["position_median"] >= 0
    table = bench.format_table([row])
    assert "NEES pos" in table and any(line.startswith("sift+nn") and "%" in line
                                       for line in table.splitlines()[-4:])
    bench.plot_cdf([row], tmp_path / "cdf.png")
    assert (tmp_path / "cdf.png").stat().st_size > 0
    json.dumps(row)
