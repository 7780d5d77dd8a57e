"""benchmarks/bench_localization.py --confs: one conf in tracking mode gives recall per condition, the per-stage
split, CPU time, Hz and the load average (smoke test on the tiny world's SIFT map; the numbers are the benchmark's
business, not a test's)."""
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
