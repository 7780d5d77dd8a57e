"""Evaluation: metrics on known perturbations, result/TUM round trips, tables, plots and the eval command."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from imp_core.eval.formats import FormatError, read_results, read_tum, write_results, write_tum
from imp_core.eval.metrics import THRESHOLDS, evaluate, query_errors
from imp_core.eval.plots import plot_error_cdf, plot_trajectories
from imp_core.eval.report import format_table, write_summary
from imp_core.types import Pose

ROOT = Path(__file__).resolve().parents[1]


def rot_z(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def shifted(p: Pose, d_center=(0, 0, 0), d_rot_deg: float = 0.0) -> Pose:
    """The same camera moved by d_center (world) and turned by d_rot_deg about its optical axis."""
    R = rot_z(d_rot_deg) @ p.R
    return Pose.from_center(R, p.center + np.asarray(d_center, float))


def gt_poses(n=6):
    rng = np.random.default_rng(1)
    return {f"q{i}.jpg": Pose.from_center(rot_z(rng.uniform(-180, 180)), rng.normal(size=3) * 20) for i in range(n)}


def test_thresholds_and_known_perturbations():
    assert THRESHOLDS == ((0.25, 2.0), (0.5, 5.0), (5.0, 10.0))
    gt = gt_poses(4)
    names = list(gt)
    est = {names[0]: gt[names[0]],  # exact
           names[1]: shifted(gt[names[1]], (0.3, 0, 0)),  # 0.3 m: fails (0.25, 2), passes (0.5, 5)
           names[2]: shifted(gt[names[2]], d_rot_deg=3.0)}  # 3 deg: fails (0.25, 2), passes (0.5, 5)
    errs = {e.name: e for e in query_errors(est, gt)}
    assert errs[names[1]].t_err == pytest.approx(0.3)
    assert errs[names[1]].r_err == pytest.approx(0, abs=1e-5)
    assert errs[names[2]].r_err == pytest.approx(3.0)
    assert errs[names[2]].t_err == pytest.approx(0, abs=1e-9)
    assert not errs[names[3]].localized
    assert np.isinf(errs[names[3]].t_err)
    s = evaluate(est, gt)["all"]
    assert s["count"] == 4
    assert s["localized"] == 3
    assert s["recall"] == [0.25, 0.75, 0.75]  # the missing query counts as not localized
    assert s["median_t"] == pytest.approx(0.0, abs=1e-9)  # medians over localized queries: 0, 0, 0.3


def test_per_condition_split():
    gt = gt_poses(6)
    names = list(gt)
    cond = {n: ("day" if i < 4 else "night") for i, n in enumerate(names)}
    est = {n: gt[n] for n in names[:4]}
    est[names[4]] = shifted(gt[names[4]], (6.0, 0, 0))  # a night query 6 m off: fails every threshold
    res = evaluate(est, gt, cond)
    assert set(res) == {"day", "night", "all"}
    assert res["day"]["recall"] == [1.0, 1.0, 1.0]
    assert res["night"]["recall"] == [0.0, 0.0, 0.0]
    assert res["night"]["localized"] == 1
    assert res["night"]["median_t"] == pytest.approx(6.0)
    assert res["all"]["recall"][0] == pytest.approx(4 / 6)


def test_results_file_round_trip_and_quaternion_order(tmp_path):
    p = Pose.from_center(rot_z(90), [1.0, 2.0, 3.0])
    path = write_results(tmp_path / "res.txt", {"rear/1.jpg": p})
    tok = path.read_text().split()
    assert tok[0] == "rear/1.jpg"
    # scalar first: a 90 deg turn about z is (w, x, y, z) = (0.7071, 0, 0, 0.7071)
    assert np.allclose([float(v) for v in tok[1:5]], [np.sqrt(0.5), 0, 0, np.sqrt(0.5)])
    assert np.allclose([float(v) for v in tok[5:]], p.t)  # translation of cam_from_world, not the centre
    back = read_results(path)["rear/1.jpg"]
    assert np.allclose(back.R, p.R)
    assert np.allclose(back.t, p.t)
    (tmp_path / "bad.txt").write_text("a.jpg 1 0 0 0\n")
    with pytest.raises(FormatError, match=r"bad.txt:1"):
        read_results(tmp_path / "bad.txt")


def test_tum_round_trip(tmp_path):
    gt = gt_poses(5)
    poses = list(gt.values())
    stamps = 1000.0 + 0.1 * np.arange(5)
    path = write_tum(tmp_path / "traj.tum", stamps, poses)
    first = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")][0].split()
    assert np.allclose([float(v) for v in first[1:4]], poses[0].center, atol=1e-6)  # position = camera centre
    qw = float(first[7])
    assert qw == pytest.approx(abs(poses[0].inverse().qvec[0]), abs=1e-6)  # scalar last, camera-to-world
    s, back = read_tum(path)
    assert np.allclose(s, stamps)
    for a, b in zip(back, poses):
        assert np.allclose(a.R, b.R, atol=1e-7)
        assert np.allclose(a.t, b.t, atol=1e-6)
    path.write_text("1.0 0 0 0 0 0 0 1\n2.0 0 0 0 0 0 1\n")
    with pytest.raises(FormatError, match=r"traj.tum:2"):
        read_tum(path)


def test_table_json_and_plots(tmp_path):
    gt = gt_poses(6)
    names = list(gt)
    cond = {n: ("day" if i % 2 else "night") for i, n in enumerate(names)}
    est_a = {n: shifted(gt[n], (0.1 * i, 0, 0)) for i, n in enumerate(names)}
    est_b = {n: gt[n] for n in names[:2]}
    results = {"imp": evaluate(est_a, gt, cond), "sift": evaluate(est_b, gt, cond)}
    table = format_table(results)
    lines = table.splitlines()
    assert "0.25m,2deg" in lines[0]
    assert len(lines) == 2 + 2 * 3
    assert any(ln.startswith("sift") and " night " in ln for ln in lines)
    js = json.loads(write_summary(tmp_path / "s.json", results).read_text())
    assert js["results"]["sift"]["night"]["median_t"] is not None
    assert js["results"]["sift"]["all"]["count"] == 6
    only_missing = evaluate({}, gt)
    assert json.loads(write_summary(tmp_path / "m.json", {"x": only_missing}).read_text())[
        "results"]["x"]["all"]["median_t"] is None
    p1 = plot_trajectories(tmp_path / "traj.png", gt, est_a, cond)
    p2 = plot_error_cdf(tmp_path / "cdf.png", {"imp": query_errors(est_a, gt, cond),
                                              "sift": query_errors(est_b, gt, cond)})
    for p in (p1, p2):
        img = cv2.imread(str(p))
        assert img is not None
        assert img.shape[0] > 300
        assert img.std() > 5


def test_eval_command_on_the_world(tiny_world, tmp_path, capsys):
    from imp_core.eval import commands

    qs = tiny_world.queries()
    est = {q.name: shifted(q.gt_pose, (0.3, 0, 0)) if q.condition == "night" else q.gt_pose for q in qs[:-1]}
    res = write_results(tmp_path / "method.txt", est)
    parser = argparse.ArgumentParser(prog="imp")
    commands.register(parser.add_subparsers())
    args = parser.parse_args(["eval", "--results", str(res), "--dataset", str(tiny_world.root),
                              "--plots", str(tmp_path / "plots"), "--json", str(tmp_path / "sum.json")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "method" in out
    assert "night" in out
    summary = json.loads((tmp_path / "sum.json").read_text())["results"]["method"]
    assert summary["day"]["recall"] == [1.0, 1.0, 1.0]
    assert summary["night"]["recall"] == [0.0, 7 / 8, 7 / 8]  # 0.3 m off, and the last query missing
    assert (tmp_path / "plots/trajectory_method.png").is_file()
    assert (tmp_path / "plots/error_cdf.png").is_file()


def _strict(text: str):
    """json.loads that refuses Infinity / NaN, as jq, JavaScript and most JSON parsers do."""
    def refuse(token):
        raise ValueError(f"not JSON: {token}")
    return json.loads(text, parse_constant=refuse)


def test_result_files_are_strict_json():
    """Non-finite numbers (an unlocalized query's error, a median of nothing, a rotation std without covariance)
    are written as null; numpy values as numbers; the committed benchmark results parse strictly (before, five of
    them held ``Infinity``)."""
    from imp_core.eval.report import dumps_strict, json_safe
    from imp_core.localization.batch import result_record
    from imp_core.types import LocalizationResult

    obj = {"a": float("inf"), "b": [np.float32(2.5), -np.inf, np.nan], "c": np.array([[1.0, np.inf]]),
           "d": (np.int64(3), "x", None)}
    assert json_safe(obj) == {"a": None, "b": [2.5, None, None], "c": [[1.0, None]], "d": [3, "x", None]}
    assert _strict(dumps_strict(obj, indent=1))["c"] == [[1.0, None]]
    assert _strict(dumps_strict({"p": ROOT}, default=str)) == {"p": str(ROOT)}
    assert _strict(dumps_strict({"v": object()}, default=lambda o: float("nan"))) == {"v": None}
    rec = result_record("q.png", LocalizationResult(quality={"rotation_std_deg": float("inf"), "coverage": 0.5,
                                                             "residual_px": float("nan")}))
    assert _strict(json.dumps(rec))["quality"] == {"rotation_std_deg": None, "coverage": 0.5, "residual_px": None}
    files = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    assert len(files) > 20
    for path in files:
        try:
            _strict(path.read_text())
        except ValueError as e:
            raise AssertionError(f"{path.name}: {e}") from None
