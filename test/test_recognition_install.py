"""Installing a trained recognizer on another map of its place (what the demo does with the shipped model of the
default world), and the instance layout that ranks an instance's references in the instance-guided search."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest


def test_layout_prefers_the_place_showing_all_recognized_instances():
    from imp_core.recognition.instances import InstanceIndex
    from imp_core.recognition.masks import layout_histogram

    # the query shows facade 1 (large) next to facade 2; "lookalike" shows facade 1's twin context: 1 and 3
    lab = np.zeros((60, 80), np.int32)
    lab[:, :50] = 1
    lab[:, 50:70] = 2
    q = layout_histogram(lab, np.ones(lab.shape, np.float32), 4)
    assert q[0] == 0
    assert np.isclose(np.linalg.norm(q), 1)
    assert q[1] > q[2] > 0 == q[3]
    idx = InstanceIndex(3, {"right": {1: 3000, 2: 1100}, "lookalike": {1: 3000, 3: 1200}, "far": {2: 500},
                            "none": {}})
    lay = idx.layouts(["lookalike", "right", "far", "none", "unknown"])
    assert lay.shape == (5, 4)
    assert np.allclose(np.linalg.norm(lay[:3], axis=1), 1)
    assert not lay[3:].any()
    score = lay @ q
    assert np.argmax(score) == 1
    assert score[1] > score[0] > score[2] > score[3] == 0
    # confidence weights the pixels: an unsure instance counts less
    conf = np.where(lab == 2, 0.1, 1.0).astype(np.float32)
    assert layout_histogram(lab, conf, 4)[2] < q[2]


@pytest.fixture(scope="module")
def trained_map(tiny_map, tmp_path_factory):
    """A copy of the tiny map with a 20 s recognizer (the model to install elsewhere)."""
    from imp_core.training.recognition.pipeline import build_recognizer

    d = tmp_path_factory.mktemp("trained") / "map"
    shutil.copytree(tiny_map, d)
    build_recognizer(d, budget_min=0.33, threads=1, progress=False)
    return d


def test_install_on_another_map_of_the_place(trained_map, tiny_map, tiny_world, tmp_path):
    from imp_core.localization import Localizer
    from imp_core.recognition.coarse import InstanceCoarseStage
    from imp_core.recognition.instances import InstanceIndex
    from imp_core.recognition.map_recognizer import install_recognizer, map_recognizer_conf, read_model_card
    from imp_core.types import pose_error

    other = tmp_path / "other"
    shutil.copytree(tiny_map, other)  # no recognizer
    assert map_recognizer_conf(other) is None
    model = trained_map / "recognition" / "model.pt"
    card = install_recognizer(other, model, progress=False)
    assert card == read_model_card(other)
    assert card["used_by_localizer"]
    assert card["fit"]["top1"] >= 0.5
    assert card["training"]["installed_from"] == str(model)
    assert card["training"]["steps"] == 0
    assert "installed from" in (other / "recognition" / "MODEL_CARD.md").read_text()
    # the same instances as the map the model was trained on (same centroids, same 3D points here)
    a, b = InstanceIndex.load(trained_map), InstanceIndex.load(other)
    assert a.num_instances == b.num_instances
    assert a.image_instances == b.image_instances
    assert map_recognizer_conf(other) == {"model": str(other / "recognition" / "model.pt")}
    loc = Localizer({"map": str(other)})
    try:
        assert any(isinstance(s, InstanceCoarseStage) for s in loc.stages)
        q = tiny_world.queries("day")[2]  # as test_recognition_map (a 20 s recognizer is weak at night)
        res = loc.localize(tiny_world.image(q.name), q.camera)
        assert res.success
        assert res.instances
        assert res.label_map is not None
        assert res.label_map.dtype == np.uint16
        assert pose_error(res.pose, q.gt_pose)[0] < 0.5
    finally:
        loc.close()


def test_install_refuses_a_model_without_instances(trained_map, tiny_map, tmp_path):
    import torch

    from imp_core.recognition.map_recognizer import install_recognizer

    blob = torch.load(str(trained_map / "recognition" / "model.pt"), map_location="cpu", weights_only=True)
    blob.pop("instances", None)
    bare = tmp_path / "bare.pt"
    torch.save(blob, str(bare))
    other = tmp_path / "other"
    shutil.copytree(tiny_map, other)
    with pytest.raises(ValueError, match="no instance definition"):
        install_recognizer(other, bare, progress=False)
    assert not (other / "recognition").exists()
    assert json.loads((other / "map.json").read_text())


def test_install_cli(trained_map, tiny_map, tmp_path, capsys):
    from imp_core.cli import main

    other = tmp_path / "other"
    shutil.copytree(tiny_map, other)
    model = trained_map / "recognition" / "model.pt"
    assert main(["recognition", "install", "--map", str(other), "--model", str(model)]) == 0
    assert "installed from" in capsys.readouterr().out
    assert main(["recognition", "info", "--map", str(other)]) == 0
    assert "used by the localizer: yes" in capsys.readouterr().out
