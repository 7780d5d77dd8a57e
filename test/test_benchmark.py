"""`imp benchmark` on fixtures laid out exactly like the downloads: map, localization, submission, resume."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from imp_core.cli import main
from imp_core.datasets import DatasetError
from imp_core.localization.batch import read_log
from imp_core.localization.benchmark import run_benchmark
from imp_core.world.export import export_aachen

CONF = "map:\n  features: {name: sift, max_keypoints: 2048}\n  matcher: {name: nn, ratio_threshold: 0.9}\n"


@pytest.fixture(scope="module")
def map_args(tmp_path_factory):
    path = tmp_path_factory.mktemp("conf") / "sift.yaml"
    path.write_text(CONF)
    return ["--config", str(path), "--device", "cpu", "--quiet"]


def _submission(path):
    lines = [ln.split() for ln in path.read_text().splitlines()]
    assert lines, path.read_text()[:300]
    assert all(len(t) == 8 for t in lines), path.read_text()[:300]
    for t in lines:
        q = np.array(t[1:5], float)
        assert abs(np.linalg.norm(q) - 1) < 1e-6
    return {t[0]: t for t in lines}


@pytest.fixture(scope="module")
def rig(robotcar_rig):
    """RobotCar Seasons rendered with the left/rear/right rig, in the real layout (test/conftest.py)."""
    return robotcar_rig


def test_robotcar_benchmark_submission_table_and_resume(rig, map_args, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert main(["benchmark", "robotcar", "--data", str(rig.root), "--out", str(out), *map_args]) == 0
    printed = capsys.readouterr().out
    sub = _submission(out / "RobotCar-Seasons-v2_imp.txt")
    # official names: camera/timestamp.jpg without the condition; only the test list is submitted
    test_names = {n.split("/", 1)[1] for n in rig.test}
    assert set(sub) <= test_names
    assert len(sub) >= len(test_names) - 1
    assert all(re.fullmatch(r"rear/\d{16}\.jpg", n) for n in sub)
    summary = json.loads((out / "summary.json").read_text())
    train = summary["sets"]["train"]
    assert train["queries"] == len(rig.train)
    assert "accuracy" in train
    for cond in ("overcast-summer", "sun"):
        assert cond in train["accuracy"], printed
        assert re.search(rf"imp\s+{cond}\s+3\s+\d", printed), printed
    assert train["accuracy"]["all"]["recall"][2] >= 0.8, printed  # (5 m, 10 deg)
    assert (out / "train" / "error_cdf.png").stat().st_size > 0
    assert "accuracy" not in summary["sets"]["test"]  # no public ground truth for the test list
    # the submitted test poses are right too (the fixture knows them)
    from imp_core.types import Pose, pose_error

    errs = [pose_error(Pose.from_qvec(np.array(t[1:5], float), np.array(t[5:8], float)),
                       rig.query_poses[f"{cond}/{name}"])
            for name, t in sub.items() for cond in ("overcast-summer", "sun") if f"{cond}/{name}" in rig.query_poses]
    assert len(errs) == len(sub)
    assert np.median([e[0] for e in errs]) < 0.25

    # an interrupted run (2 records written, the third torn mid-line) continues where it stopped
    log = out / "train_log.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:2]) + lines[2][:25])
    from imp_core.localization.localizer import Localizer

    calls = []
    orig = Localizer.localize
    monkeypatch.setattr(Localizer, "localize", lambda self, *a, **k: calls.append(k.get("name")) or orig(self, *a, **k))
    summary2 = run_benchmark("robotcar", rig.root, out, map_conf={"features": {"name": "sift"}}, progress=False)
    names_train = [r["name"] for r in read_log(log).values()]
    assert calls == names_train[2:]
    assert len(names_train) == len(rig.train)  # test list and 2 train queries skipped
    assert log.read_text().splitlines(keepends=True)[:2] == lines[:2]
    assert summary2["sets"]["train"]["localized"] == summary["sets"]["train"]["localized"]
    # another configuration does not silently mix into these results
    with pytest.raises(DatasetError, match="another run.*--restart"):
        run_benchmark("robotcar", rig.root, out, loc_conf={"coarse": [{"name": "retrieval", "top_k": 2}]},
                      progress=False)


@pytest.mark.parametrize("images_at_root", [True, False])
def test_aachen_benchmark_both_layouts(tiny_world, map_args, tmp_path, capsys, images_at_root):
    data = export_aachen(tiny_world, tmp_path / "Aachen-Day-Night-v1.1", images_at_root=images_at_root)
    out = tmp_path / "out"
    assert main(["benchmark", "aachen", "--data", str(data), "--out", str(out), *map_args]) == 0
    printed = capsys.readouterr().out
    sub = _submission(out / "Aachen-v1.1_imp.txt")
    assert set(sub) <= {Path(n).stem + ".jpg" for n in tiny_world.query_names()}
    assert all(re.fullmatch(r"seq\d+_\d{4}\.jpg", n) for n in sub)
    assert len(sub) >= 6  # basenames
    day = json.loads((out / "summary.json").read_text())["sets"]["queries"]["accuracy"]["day"]
    assert day["count"] == 8, printed
    assert day["recall"][1] >= 0.75, printed
    meta = json.loads((out / "map" / "map.json").read_text())
    assert meta["num_images"] >= 14
    assert meta["mode"] == "triangulation"
    assert re.search(r"imp\s+day\s+8\s+\d+\s+\d", printed), printed  # the fixture's ground truth is scored
    # a second run reuses the map and every per-query result
    assert main(["benchmark", "aachen", "--data", str(data), "--out", str(out), *map_args]) == 0
    assert "reusing map" in capsys.readouterr().out


def test_synthetic_benchmark_reuses_a_map(tiny_world, tiny_map, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["benchmark", "synthetic", "--data", str(tiny_world.root), "--map", str(tiny_map), "--out", str(out),
                 "--condition", "day", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "reusing map" in printed, printed
    assert re.search(r"imp\s+day\s+8\s+8\s+100.0", printed), printed
    assert len(_submission(out / "synthetic_imp.txt")) == 8


def test_benchmark_wrong_kind_and_missing_images(rig, tmp_path, capsys):
    assert main(["benchmark", "aachen", "--data", str(rig.root), "--out", str(tmp_path / "o")]) == 2
    assert "holds a robotcar dataset, not aachen" in capsys.readouterr().err
    assert main(["benchmark", "robotcar", "--data", str(rig.root), "--out", str(tmp_path / "o"), "--condition",
                 "night"]) == 2
    assert "no queries of condition(s) ['night']" in capsys.readouterr().err
    import shutil

    data = tmp_path / "rc"
    shutil.copytree(rig.root, data)
    shutil.rmtree(data / "images" / "sun")
    assert main(["benchmark", "robotcar", "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    # the test list names camera/timestamp only: the missing condition folder shows as an image not found
    assert "robotcar_v2_test.txt" in err, err
    assert f"is not under any {data / 'images'}/<condition>/rear/" in err, err
    gone = data / "images" / rig.train[0]  # an image of the train list (with its condition in the list) is missing
    gone.unlink()
    assert main(["benchmark", "robotcar", "--data", str(data), "--out", str(tmp_path / "o"), "--split", "train"]) == 2
    err = capsys.readouterr().err
    assert "4 of 6 train query images are missing" in err, err
    assert str(gone) in err, err  # 3 were under sun/
