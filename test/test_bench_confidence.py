"""benchmarks/bench_confidence.py without localizing: a model fitted on some worlds' records (--fit --save) is
tabulated on other records (--model FILE), as the shipped model's evaluation on held-out worlds does."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest


def records(rng, n, pair="xfeat+nn"):
    """Right poses with many inliers, a high inlier ratio and a small rotation std; wrong ones the opposite; the
    two overlap (no model separates every record)."""
    out = []
    for i in range(n):
        right = i % 2 == 0
        out.append({"pair": pair, "name": f"query/night/q{i:03d}.png", "condition": "night",
                    "kind": "retrieval" if right else "far references",
                    "t_err": 0.05 if right else 20.0, "r_err": 0.2 if right else 12.0, "depth": 15.0,
                    "num_inliers": float(rng.integers(60, 400) if right else rng.integers(20, 120)),
                    "inlier_ratio": float(np.clip(rng.normal(0.5 if right else 0.2, 0.12), 0.01, 1)),
                    "coverage": float(rng.uniform(0.3, 0.7)),
                    "rotation_std_deg": float(np.exp(rng.normal(-1.5 if right else -0.3, 0.5)))})
    return out


def run(bench, monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["bench_confidence.py", *map(str, args)])
    assert bench.main() == 0


def test_a_model_fitted_on_some_records_is_tabulated_on_others(load_benchmark, tmp_path, monkeypatch, capsys):
    from imp_core.config import ConfigError
    from imp_core.localization import Localizer
    from imp_core.localization.confidence import confidence_model

    bench = load_benchmark("bench_confidence")
    rng = np.random.default_rng(0)
    train, held = tmp_path / "train.json", tmp_path / "held.json"
    held_records = records(rng, 100)
    train.write_text(json.dumps(records(rng, 200)))
    held.write_text(json.dumps(held_records))
    run(bench, monkeypatch, "--records", train, "--fit", "--save", tmp_path / "model.json", "--out", tmp_path / "a")
    model = confidence_model(str(tmp_path / "model.json"))  # loads as the localizer's acceptance.confidence_model
    assert model["weights"][1] > 0 > model["weights"][3]  # a higher inlier ratio, a lower rotation std: right
    assert model == bench.fit(json.loads(train.read_text()), model["features"])
    capsys.readouterr()
    run(bench, monkeypatch, "--records", held, "--model", tmp_path / "model.json", "--out", tmp_path / "b")
    printed = capsys.readouterr().out
    threshold = Localizer.default_conf["acceptance"]["min_confidence"]  # the table's default: the localizer's
    expected = bench.table(held_records, threshold, model)
    assert printed.strip() == expected and (tmp_path / "b" / "table.txt").read_text().strip() == expected
    run(bench, monkeypatch, "--records", held, "--out", tmp_path / "c")  # the shipped model by default
    assert capsys.readouterr().out.strip() == bench.table(held_records, threshold, confidence_model("default"))
    with pytest.raises(ConfigError, match="acceptance.confidence_model: .*nope.json"):
        run(bench, monkeypatch, "--records", held, "--model", tmp_path / "nope.json", "--out", tmp_path / "d")


def test_table_gives_the_confidence_of_right_poses(load_benchmark):
    """The column a candidate matcher is judged by: min / p10 / median confidence of the poses within (0.25 m, 2 deg)
    (with >= 20 inliers), per pair, condition and kind; '-' where there is none."""
    from imp_core.localization.confidence import confidence_model, confidence_score

    bench = load_benchmark("bench_confidence")
    recs = records(np.random.default_rng(1), 60)
    model = confidence_model("default")
    right = sorted(confidence_score(r, model) for r in recs if r["kind"] == "retrieval")
    lines = bench.table(recs, 0.5, model).splitlines()
    row = next(line for line in lines if "retrieval" in line)
    assert row.endswith(f"{right[0]:.3f} / {np.percentile(right, 10):.3f} / {np.median(right):.3f}"), row
    assert next(line for line in lines if "far references" in line).endswith(" -")


def test_collect_records_the_pose_the_search_ends_with(load_benchmark, tiny_world, tiny_map, tmp_path):
    """``collect`` localizes as the localizer does (its gates and its second look, on by default): the recorded
    status is OK exactly when the recorded pose passes both gates; on the tiny world's night queries the second look
    gives some of the reported poses (the tiny street has no references 20 m away: no negatives). With the second
    look off and another threshold (the defaults before 2026-12-05) the search and the status follow those."""
    from imp_core.localization import Localizer

    bench = load_benchmark("bench_confidence")
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "sift_nn").symlink_to(tiny_map)

    def check(recs, threshold):
        assert {r["name"] for r in recs} == set(tiny_world.query_names("night"))
        assert {"retrieval", "retrieval, unknown focal"} <= {r["kind"] for r in recs}
        for r in recs:
            if r["kind"].startswith("retrieval") and "r_err" in r:
                passes = r["num_inliers"] >= 20 and r["confidence"] >= threshold
                assert (r["status"] == "OK") == passes, r
            assert "r_err" not in r or isinstance(r["second_look"], bool)

    recs = bench.collect(tiny_world.root, maps, "sift+nn", 4, conditions=["night"])
    check(recs, Localizer.default_conf["acceptance"]["min_confidence"])
    assert any(r["status"] == "OK" and r["second_look"] for r in recs)
    plain = bench.collect(tiny_world.root, maps, "sift+nn", 4, conditions=["night"], second_look=False,
                          min_confidence=0.5)
    check(plain, 0.5)
    assert not any(r.get("second_look") for r in plain)
