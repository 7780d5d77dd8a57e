"""A recognizer for every map: `imp map build --recognition` / `imp recognition train --map`, the model card, and
the localizer picking the map's recognizer up without extra config."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from imp_core.types import pose_error


def imp(argv):
    from imp_core.cli import main

    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def rec_map(tiny_map, tmp_path_factory):
    """A copy of the session's tiny map (training writes into the map directory) with a 20 s recognizer."""
    map_dir = tmp_path_factory.mktemp("recmap") / "map"
    shutil.copytree(tiny_map, map_dir)
    assert imp(["recognition", "train", "--map", map_dir, "--budget-min", "0.33", "--threads", "1"]) == 0
    return map_dir


def test_recognizer_files_and_card(rec_map, capsys):
    from imp_core.recognition.instances import InstanceIndex
    from imp_core.recognition.map_recognizer import default_num_instances, read_model_card
    from imp_core.recognition.network import load_model

    rec = rec_map / "recognition"
    for f in ("model.pt", "model_card.json", "MODEL_CARD.md", "train_log.jsonl", "train_loss.png"):
        assert (rec / f).is_file(), f
    card = read_model_card(rec_map)
    meta = json.loads((rec_map / "map.json").read_text())
    assert card["map"]["map_id"] == meta["map_id"]
    index = InstanceIndex.load(rec_map / "instances.json")
    assert card["instances"]["num_instances"] == index.num_instances == default_num_instances(
        meta["num_images"], meta["num_points3D"])
    assert card["instances"]["mode"] == "xy"  # synthetic worlds are z-up
    t = card["training"]
    assert t["steps"] > 5
    assert t["budget_min"] == pytest.approx(0.33)
    assert 0.33 * 60 * 0.9 <= t["seconds"] <= 0.33 * 60 + 30  # the budget is what stops training
    assert load_model(rec / "model.pt").num_classes == index.num_instances + 1
    assert card["fit"]["images"] > 0
    assert 0.5 <= card["fit"]["top1"] <= 1
    assert card["used_by_localizer"]
    assert imp(["recognition", "info", "--map", rec_map]) == 0
    out = capsys.readouterr().out
    assert "instances" in out
    assert "used by the localizer: yes" in out


def test_localizer_uses_the_maps_recognizer(rec_map, tiny_world):
    from imp_core.localization import Localizer
    from imp_core.recognition.coarse import InstanceCoarseStage

    loc = Localizer({"map": str(rec_map)})
    try:
        assert any(isinstance(s, InstanceCoarseStage) for s in loc.stages)
        assert loc.conf["matcher"]["name"] == "label_nn"
        q = tiny_world.queries("day")[2]
        res = loc.localize(tiny_world.image(q.name), q.camera)
        assert res.success
        assert res.instances
        dt, dr = pose_error(res.pose, q.gt_pose)
        assert dt < 0.5
        assert dr < 5
        assert "recognition" in res.timings
    finally:
        loc.close()
    # a conf that says otherwise wins: no recognition, or explicit coarse stages
    for conf in ({"recognition": None}, {"coarse": [{"name": "retrieval"}]}):
        loc = Localizer({"map": str(rec_map), **conf})
        try:
            assert not any(isinstance(s, InstanceCoarseStage) for s in loc.stages)
        finally:
            loc.close()


def test_stale_recognizer_is_not_used(rec_map, tmp_path, caplog):
    """Descriptors from another model than the one stored: the localizer falls back to retrieval with a warning."""
    from imp_core.recognition.map_recognizer import map_recognizer_conf

    bad = tmp_path / "map"
    shutil.copytree(rec_map, bad)
    with np.load(bad / "recognition_global.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["model"] = np.array("0123456789abcdef")
    np.savez(bad / "recognition_global.npz", **arrays)
    assert map_recognizer_conf(rec_map) is not None
    with caplog.at_level("WARNING"):
        assert map_recognizer_conf(bad) is None
    assert "imp recognition train --map" in caplog.text


def test_undertrained_recognizer_is_not_used(rec_map, tmp_path, caplog):
    """A recognizer whose top instance is wrong on most of its own images would send the search to look-alike
    places: the localizer keeps retrieval and says how to fix it."""
    from imp_core.localization import Localizer
    from imp_core.recognition.coarse import InstanceCoarseStage
    from imp_core.recognition.map_recognizer import map_recognizer_conf

    weak = tmp_path / "map"
    shutil.copytree(rec_map, weak)
    card_path = weak / "recognition" / "model_card.json"
    card = json.loads(card_path.read_text())
    card["fit"]["top1"] = 0.1
    card_path.write_text(json.dumps(card))
    with caplog.at_level("WARNING"):
        assert map_recognizer_conf(weak) is None
    assert "undertrained" in caplog.text
    assert "--budget-min" in caplog.text
    loc = Localizer({"map": str(weak)})
    try:
        assert not any(isinstance(s, InstanceCoarseStage) for s in loc.stages)
    finally:
        loc.close()


def test_bad_budget_is_an_error(rec_map):
    from imp_core.training.recognition.pipeline import build_recognizer

    with pytest.raises(ValueError, match="budget"):
        build_recognizer(rec_map, budget_min=0)


def test_map_build_recognition_cli(tiny_world, tmp_path):
    """`imp map build --recognition` on the default pipeline's smallest world (SIFT for speed)."""
    out = tmp_path / "map"
    assert imp(["map", "build", "--dataset", tiny_world.root, "--out", out, "--features", "sift", "--matcher", "nn",
                "--max-keypoints", "1024", "--recognition", "--budget-min", "0.1"]) == 0
    assert (out / "recognition" / "model.pt").is_file()
    assert (out / "recognition" / "MODEL_CARD.md").is_file()
    assert (out / "recognition_global.npz").is_file()


def test_budget_without_recognition_is_refused(tiny_world, tmp_path):
    with pytest.raises(SystemExit, match="--recognition"):
        imp(["map", "build", "--dataset", tiny_world.root, "--out", tmp_path / "m", "--budget-min", "1"])


@pytest.mark.slow
def test_map_build_recognition_on_real_photos(shared_data, tmp_path):
    """The 10 Sacre-Coeur photos (evaluation data: only run, nothing tuned on it): SfM map + recognizer, and the
    localizer picks it up."""
    from imp_core.localization import Localizer
    from imp_core.recognition.coarse import InstanceCoarseStage
    from imp_core.recognition.map_recognizer import read_model_card

    photos = shared_data / "sacre_coeur_mapping"
    if not photos.is_dir():
        pytest.skip(f"{photos} not available")
    out = tmp_path / "map"
    assert imp(["map", "build", "--images", photos, "--out", out, "--features", "sift", "--matcher", "nn",
                "--recognition", "--budget-min", "0.5"]) == 0
    card = read_model_card(out)
    assert card["instances"]["mode"] == "xyz"
    assert card["instances"]["num_instances"] >= 4
    loc = Localizer({"map": str(out)})
    try:
        assert any(isinstance(s, InstanceCoarseStage) for s in loc.stages)
    finally:
        loc.close()
