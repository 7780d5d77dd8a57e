"""Matcher training data from photographs (homography pairs), several dumps per run, export and shipped weights."""
from __future__ import annotations

import json
import shutil

import cv2
import h5py
import numpy as np
import pytest
import torch

from imp_core.matching.base import create_matcher
from imp_core.matching.imp import checkpoint as ckpt
from imp_core.matching.imp.checkpoint import load_model
from imp_core.training.calibrate import calibrate_pool_threshold, pooling_masses
from imp_core.training.dump import dump_synthetic
from imp_core.training.homography import dump_homography, find_photos, homography_pairs
from imp_core.training.recipe import export_weights, model_card
from imp_core.training.trainer import train

SIFT = {"name": "sift", "max_keypoints": 256, "device": "cpu"}


def train_conf(steps: int, every: int, n_layers: int) -> dict:
    """A tiny training run: ``steps`` steps, validating and checkpointing every ``every``, a ``n_layers`` model."""
    return {"steps": steps, "batch_size": 2, "n_keypoints": 128, "max_inliers": 64, "val_every": every,
            "ckpt_every": every, "log_every": 1, "model": {"n_layers": n_layers, "num_heads": 1,
                                                         "keypoint_encoder": [16, 32], "sinkhorn_grad_iterations": 3}}


@pytest.fixture(scope="module")
def photos(tiny_world, tmp_path_factory):
    """Two 'photographs' (rendered street images upscaled) in a folder, plus files that must be skipped."""
    root = tmp_path_factory.mktemp("photos")
    for i, name in enumerate(tiny_world.db_names[:2]):
        img = cv2.resize(tiny_world.image(name), None, fx=2, fy=2)
        cv2.imwrite(str(root / f"p{i}.jpg"), img[:, :, ::-1])
    cv2.imwrite(str(root / "screenshot.png"), np.zeros((600, 800, 3), np.uint8))
    cv2.imwrite(str(root / "tiny.png"), np.zeros((50, 50, 3), np.uint8))
    return root


@pytest.fixture(scope="module")
def hom_dump(photos, tmp_path_factory):
    path = tmp_path_factory.mktemp("hdump") / "h.h5"
    res = dump_homography([str(photos)], path, {"features": SIFT, "pairs_per_photo": 4, "size": (320, 240)},
                          progress=False)
    assert res["photos"] == 2, res
    assert res["pairs"] >= 4, res
    return path


def test_find_photos_keeps_one_resolution_per_wallpaper(tmp_path):
    d = tmp_path / "Autumn" / "contents" / "images"
    d.mkdir(parents=True)
    for wh in ("640x480", "1920x1080", "1080x1920"):
        w, h = (int(v) for v in wh.split("x"))
        cv2.imwrite(str(d / f"{wh}.jpg"), np.full((h, w, 3), 128, np.uint8))
    assert [p.name for p in find_photos([str(tmp_path)])] == ["1920x1080.jpg"]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_photos([str(tmp_path / "nowhere")])


def test_homography_ground_truth_is_exact(photos, hom_dump):
    pairs = {p["name1"]: p for p in homography_pairs(find_photos([str(photos)]), {
        "size": (320, 240), "photo_max_side": 1280, "pairs_per_photo": 4, "seed": 0, "max_rotation_deg": 35.0,
        "scale_range": (0.6, 1.5), "perspective": 0.25, "night_fraction": 0.4})}
    with h5py.File(hom_dump) as h5:
        assert len(h5["pairs"]) >= 4
        for g in h5["pairs"].values():
            p = pairs[g.attrs["name1"]]
            H = np.asarray(g["H_0to1"])
            assert np.allclose(H, p["H_0to1"])
            k0 = np.asarray(h5["features"][g.attrs["name0"]]["keypoints"])
            k1 = np.asarray(h5["features"][g.attrs["name1"]]["keypoints"])
            m = np.asarray(g["matches"])
            x = np.c_[k0[m[:, 0]], np.ones(len(m))] @ H.T
            err = np.linalg.norm(x[:, :2] / x[:, 2:] - k1[m[:, 1]], axis=1)
            assert err.max() < 3.0  # inlier_px
            assert len(np.unique(m[:, 0])) == len(m) == len(np.unique(m[:, 1]))
    # the warped images really show the same texture: the photo pixel of a matched keypoint agrees
    name1 = next(iter(pairs))
    assert pairs[name1]["image0"].shape == (240, 320, 3)


def test_homography_dump_resumes(photos, tmp_path):
    conf = {"features": SIFT, "pairs_per_photo": 3, "size": (320, 240)}
    path = tmp_path / "h.h5"
    first = dump_homography([str(photos)], path, {**conf, "max_photos": 1}, progress=False)
    full = dump_homography([str(photos)], path, conf, progress=False)
    assert first["pairs_tried"] == 3
    assert full["pairs_tried"] == 3  # only the second photo's pairs are new
    again = dump_homography([str(photos)], path, conf, progress=False)
    assert again["pairs_tried"] == 0
    assert again["pairs"] == full["pairs"]
    with pytest.raises(ValueError, match="cannot resume"):
        dump_homography([str(photos)], path, {**conf, "features": {**SIFT, "max_keypoints": 128}}, progress=False)


def test_homography_dump_refuses_to_resume_over_changed_photos(photos, tmp_path):
    """Pairs are keyed by photo position: a photo that sorts in front of the others (a package update adding a
    wallpaper) would shift every key, so resuming then is refused, naming the photo; photos added at the end resume
    (only their pairs are new)."""
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    conf = {"features": SIFT, "pairs_per_photo": 2, "size": (320, 240)}
    path = tmp_path / "h.h5"
    first = dump_homography([str(folder)], path, conf, progress=False)
    assert first["photos"] == 2
    with h5py.File(path) as h5:
        assert json.loads(h5.attrs["inputs"]) == ["p0.jpg", "p1.jpg"]
    shutil.copy(folder / "p0.jpg", folder / "a0.jpg")
    with pytest.raises(ValueError, match="input 0 was 'p0.jpg' but is now 'a0.jpg'"):
        dump_homography([str(folder)], path, conf, progress=False)
    with h5py.File(path) as h5:  # refused before writing anything
        assert len(h5["pairs"]) == first["pairs"] and json.loads(h5.attrs["inputs"]) == ["p0.jpg", "p1.jpg"]
    (folder / "a0.jpg").rename(folder / "z0.jpg")
    more = dump_homography([str(folder)], path, conf, progress=False)
    assert more["pairs_tried"] == 2 and more["photos"] == 3
    (folder / "z0.jpg").unlink()
    with pytest.raises(ValueError, match="input 2 was 'z0.jpg' but is now 'nothing'"):
        dump_homography([str(folder)], path, conf, progress=False)
    # a dump written before the inputs were recorded resumes only while its source line (photo count) holds
    old = tmp_path / "old.h5"
    dump_homography([str(folder)], old, conf, progress=False)
    with h5py.File(old, "a") as h5:
        del h5.attrs["inputs"]
    assert dump_homography([str(folder)], old, conf, progress=False)["pairs_tried"] == 0
    with h5py.File(old, "a") as h5:
        del h5.attrs["inputs"]
    shutil.copy(folder / "p0.jpg", folder / "z1.jpg")
    with pytest.raises(ValueError, match="written from 'homography:2 photos', now the inputs give 'homography:3"):
        dump_homography([str(folder)], old, conf, progress=False)


def test_train_on_several_dumps_export_and_card(tiny_world, hom_dump, tmp_path):
    syn = tmp_path / "syn.h5"
    dump_synthetic(tiny_world, syn, {"features": SIFT, "max_pairs": 40})
    conf = train_conf(steps=6, every=3, n_layers=2)
    run = tmp_path / "run"
    res = train([syn, hom_dump], run, conf, progress=False)
    assert res["step"] == 6
    assert json.loads((run / "conf.json").read_text())["data"] == [str(syn), str(hom_dump)]
    out = export_weights(run, tmp_path / "imp_sift.pth")
    assert "optimizer" not in torch.load(out["file"], weights_only=True)
    model, _ = load_model(out["file"], "eimp")
    assert model.conf["num_heads"] == 1
    assert model.conf["keypoint_encoder"] == [16, 32]
    assert model.n_layers == 2
    assert model.descriptor_dim == 128
    p = {"features": SIFT, "stages": [], "data": {"synthetic": {"preset": "tiny", "seeds": [0]},
                                                   "homography": {"roots": ["x"], "packages": ["y"]}}}
    card = model_card("imp_sift", p, run, out, {"synthetic": [syn], "homography": [hom_dump]}, tmp_path / "docs")
    text = card.read_text()
    assert "precision" in text
    assert "syn.h5" in text
    assert (tmp_path / "docs" / "imp_sift_curves.png").is_file()
    # a dump of other features is refused
    other = tmp_path / "other.h5"
    dump_synthetic(tiny_world, other, {"features": {"name": "xfeat", "max_keypoints": 64, "device": "cpu"},
                                       "max_pairs": 3})
    with pytest.raises(ValueError, match="train on one kind"):
        train([syn, other], tmp_path / "run2", conf, progress=False)


def test_warm_start_from_a_narrower_model_through_an_input_projection(tiny_world, tmp_path):
    """128-d SIFT trained at width 32 from a 32-d model's weights (as imp_aliked starts from imp_xfeat): every tensor
    but the new input projection is copied, the projection starts as the descriptors' principal directions with unit
    mean output norm, and the exported file reloads with its input dimension read off the tensors."""
    base_conf = {"variant": "imp", "descriptor_dim": 32, "n_layers": 2, "num_heads": 1, "keypoint_encoder": [16]}
    base = ckpt.IMPModel(base_conf)
    ckpt.save_checkpoint(tmp_path / "base.pth", base)
    syn = tmp_path / "syn.h5"
    dump_synthetic(tiny_world, syn, {"features": SIFT, "max_pairs": 20})
    conf = train_conf(steps=2, every=2, n_layers=2)
    conf["model"].update(descriptor_dim=32, keypoint_encoder=[16])
    conf.update(warm_start=str(tmp_path / "base.pth"), lr=0.0, warm_start_descriptors=500)
    run = tmp_path / "run"
    train([syn], run, conf, progress=False)
    row = json.loads((run / "log.jsonl").read_text().splitlines()[0])
    assert row["fresh"] == ["input_proj.bias", "input_proj.weight"] and row["skipped"] == []
    model, _ = load_model(run / "last.pth", "imp")
    assert model.input_dim == 128 and model.descriptor_dim == 32
    for k, v in base.state_dict().items():  # lr 0: the copied tensors are unchanged
        assert torch.equal(model.state_dict()[k], v), k
    w = model.input_proj.weight[:, :, 0].detach()
    rows = w / w.norm(dim=1, keepdim=True)
    assert torch.allclose(rows @ rows.T, torch.eye(32), atol=1e-4)  # orthogonal directions
    parts = []
    with h5py.File(syn, "r") as f:
        f["features"].visititems(lambda name, obj: parts.append(np.asarray(obj))
                                 if name.endswith("descriptors") else None)
    desc = torch.from_numpy(np.concatenate(parts))
    assert 0.8 < float((desc @ w.T).norm(dim=1).mean()) < 1.2
    m = create_matcher({"name": "eimp", "weights": str(run / "last.pth"), "device": "cpu"})
    assert m.descriptor_dim == 128
    out = export_weights(run, tmp_path / "imp_sift.pth")
    p = {"features": SIFT, "stages": [], "train": {"warm_start": "weights/base.pth"},
         "data": {"synthetic": {"preset": "tiny", "seeds": [0]}, "homography": {"roots": ["x"], "packages": ["y"]}}}
    card = model_card("imp_sift", p, run, out, {"synthetic": [syn], "homography": []}, tmp_path / "docs").read_text()
    assert "Started from `weights/base.pth` (warm start: " in card and str(tmp_path) not in card
    with pytest.raises(ValueError, match="expects 128"):
        model.encode({"descriptors0": torch.zeros(1, 4, 32), "descriptors1": torch.zeros(1, 4, 32),
                      "keypoints0": torch.zeros(1, 4, 2), "keypoints1": torch.zeros(1, 4, 2),
                      "scores0": torch.zeros(1, 4), "scores1": torch.zeros(1, 4),
                      "image_size0": torch.ones(1, 2), "image_size1": torch.ones(1, 2)})


def ship_sift_weights(shipped_dir, num_heads: int) -> None:
    """A small IMP for SIFT saved as imp would ship it (``weights/imp_sift.pth``) in ``shipped_dir``."""
    from imp_core.matching.imp.model import IMPModel

    model = IMPModel({"variant": "imp", "descriptor_dim": 128, "n_layers": 2, "num_heads": num_heads})
    ckpt.save_checkpoint(shipped_dir / "imp_sift.pth", model, conf=json.dumps(model.conf))


def test_imp_matcher_uses_shipped_weights_for_the_features(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="no eimp weights for 'sift' features"):
        create_matcher({"name": "eimp", "features": "sift"})
    monkeypatch.setattr(ckpt, "SHIPPED_DIR", tmp_path)
    ship_sift_weights(tmp_path, num_heads=2)
    m = create_matcher({"name": "eimp", "features": "sift"})
    assert m.weights == str(tmp_path / "imp_sift.pth")
    assert m.model.conf["num_heads"] == 2
    # GM has its own file (gm_<features>.pth): IMP weights are not GM weights
    with pytest.raises(ValueError, match=r"no gm weights for 'sift' features \(imp ships gm weights for no features"):
        create_matcher({"name": "gm", "features": "sift"})
    gm = ckpt.IMPModel({"variant": "gm", "descriptor_dim": 128, "n_layers": 4, "num_heads": 1})
    ckpt.save_checkpoint(tmp_path / "gm_sift.pth", gm, conf=json.dumps(gm.conf))
    m = create_matcher({"name": "gm", "features": "sift"})
    assert m.weights == str(tmp_path / "gm_sift.pth") and not any(m.model.sharing)
    assert ckpt.shipped_features("gm") == ckpt.shipped_features("imp") == ["sift"]


def test_gm_warm_starts_from_imp_weights_by_unsharing_attention(tiny_world, tmp_path):
    """The GM ablation from IMP weights (preset gm_xfeat): a GM layer where IMP reuses attention gets the query/key
    projections of the layer whose probabilities IMP reused (same kind, one iteration earlier) and IMP's own value
    projection and merge; every other tensor is copied by name. With equal inputs to the two layers, GM's layer
    then computes exactly the attention IMP reused."""
    from imp_core.training.warm_start import unshare

    conf = {"descriptor_dim": 32, "n_layers": 4, "num_heads": 1, "keypoint_encoder": [16]}
    imp = ckpt.IMPModel({**conf, "variant": "imp"})  # iteration 3 (layers 6 self, 7 cross) shares attention
    assert imp.sharing == [False] * 6 + [True, True]
    ckpt.save_checkpoint(tmp_path / "imp.pth", imp)
    syn = tmp_path / "syn.h5"
    dump_synthetic(tiny_world, syn, {"features": SIFT, "max_pairs": 20})
    tconf = train_conf(steps=2, every=2, n_layers=4)
    tconf["model"].update(descriptor_dim=32, keypoint_encoder=[16])
    tconf.update(variant="gm", warm_start=str(tmp_path / "imp.pth"), lr=0.0, warm_start_descriptors=500)
    run = tmp_path / "run"
    train([syn], run, tconf, progress=False)
    row = json.loads((run / "log.jsonl").read_text().splitlines()[0])
    assert row["unshared"] and row["fresh"] == ["input_proj.bias", "input_proj.weight"] and row["skipped"] == []
    gm, _ = load_model(run / "last.pth", "gm")
    g, i = gm.state_dict(), imp.state_dict()
    for layer in (6, 7):
        for p in ("weight", "bias"):
            for j in (0, 1):
                reused = i[f"gnn.layers.{layer - 2}.attn.proj.{j}.{p}"]
                assert torch.equal(g[f"gnn.layers.{layer}.attn.proj.{j}.{p}"], reused)
            assert torch.equal(g[f"gnn.layers.{layer}.attn.proj.2.{p}"], i[f"gnn.layers.{layer}.proj.{p}"])
            assert torch.equal(g[f"gnn.layers.{layer}.attn.merge.{p}"], i[f"gnn.layers.{layer}.merge.{p}"])
    for k, v in i.items():
        if k in g:
            assert torch.equal(g[k], v), k
    # equal inputs: GM's self layer of iteration 3 attends exactly as IMP's of iteration 2 (whose probabilities
    # IMP's iteration 3 reuses)
    x = torch.randn(1, 32, 10)
    _, p_imp = imp.gnn.layers[4](x, x, None, None, None, True)
    out_gm, p_gm = gm.gnn.layers[6](x, x, None, None, None, True)
    assert torch.allclose(p_imp, p_gm)
    out_imp, _ = imp.gnn.layers[6](x, x, None, None, p_imp, False)  # and its message and update are IMP's
    assert torch.allclose(out_gm, out_imp, atol=1e-6)
    with pytest.raises(ValueError, match="cannot unshare layer 6"):
        unshare({k: v for k, v in i.items() if not k.startswith("gnn.layers.4.attn.proj.0")})
    out = export_weights(run, tmp_path / "gm_sift.pth")
    p = {"features": SIFT, "stages": [], "train": {"warm_start": "weights/imp.pth"},
         "data": {"synthetic": {"preset": "tiny", "seeds": [0]}, "homography": {"roots": ["x"], "packages": ["y"]}}}
    card = model_card("gm_sift", p, run, out, {"synthetic": [syn], "homography": []}, tmp_path / "docs").read_text()
    assert "and merge, `warm_start.unshare`)" in card and "| start (warm) | 0 |" in card


def test_pool_threshold_calibration_rule():
    """The largest threshold (to 0.01) keeping 98 % of the matched tokens at every pooling iteration."""
    rng = np.random.default_rng(0)
    masses = {3: {"matched": np.linspace(0.30, 1.0, 1001), "unmatched": rng.uniform(0.0, 0.6, 500)},
              5: {"matched": np.linspace(0.25, 1.0, 1001), "unmatched": rng.uniform(0.0, 0.6, 500)}}
    cal = calibrate_pool_threshold(masses, max_lost=0.02)
    assert cal["pool_threshold"] == 0.26  # iteration 5 decides: q02 = 0.265
    assert cal["per_iteration"][5]["matched_below"] <= 0.02
    assert abs(cal["per_iteration"][3]["unmatched_below"] - np.mean(masses[3]["unmatched"] < 0.26)) < 1e-12
    with pytest.raises(ValueError, match="max_lost"):
        calibrate_pool_threshold(masses, max_lost=0.0)
    with pytest.raises(ValueError, match="no ground-truth matched"):
        calibrate_pool_threshold({3: {"matched": np.zeros(0), "unmatched": np.ones(3)}})


def test_export_stores_the_calibrated_pool_threshold(tiny_world, tmp_path):
    syn = tmp_path / "syn.h5"
    dump_synthetic(tiny_world, syn, {"features": SIFT, "max_pairs": 30})
    conf = train_conf(steps=2, every=2, n_layers=5)  # EIMP pools after iteration 3 (sharing, not the last)
    run = tmp_path / "run"
    train([syn], run, conf, progress=False)
    out = export_weights(run, tmp_path / "imp_sift.pth", which="last", calibration_dumps=[syn])
    cal = out["calibration"]
    assert set(cal["per_iteration"]) == {3}
    assert cal["per_iteration"][3]["matched"] > 0
    model, _ = load_model(out["file"], "eimp")
    assert model.conf["pool_threshold"] == cal["pool_threshold"]
    masses = pooling_masses(model, [syn])
    assert np.mean(masses[3]["matched"] < cal["pool_threshold"]) <= 0.02
    # a preset's fixed threshold is stored as given, with what it prunes on the same pairs
    out = export_weights(run, tmp_path / "fixed.pth", which="last", calibration_dumps=[syn], pool_threshold=0.07)
    assert out["calibration"]["fixed"] and out["calibration"]["pool_threshold"] == 0.07
    assert out["calibration"]["max_lost"] == pytest.approx(np.mean(masses[3]["matched"] < 0.07))
    assert load_model(out["file"], "eimp")[0].conf["pool_threshold"] == 0.07


def test_preset_restart_stage_fine_tunes_and_exports_the_weight_average(tiny_world, tmp_path, monkeypatch):
    """A preset's last stage with ``restart`` and ``average_every`` (imp_xfeat's stage 4): entered from the stage
    before, it starts a fresh optimizer; interrupted and run again, it resumes without restarting; the export is the
    mean of its snapshots, with the preset's fixed pooling threshold, and the card says so."""
    from imp_core.training import recipe

    syn = tmp_path / "syn.h5"
    dump_synthetic(tiny_world, syn, {"features": SIFT, "max_pairs": 30})
    p = {"features": SIFT, "data": {"synthetic": {"preset": "tiny", "seeds": [0]},
                                    "homography": {"roots": ["x"], "packages": ["y"]}},
         "train": {**train_conf(steps=0, every=1, n_layers=5), "variant": "imp"}, "output": "w/imp_sift.pth",
         "pool_threshold": 0.11,
         "stages": [{"data": ["synthetic"], "steps": 2},
                    {"data": ["synthetic"], "restart": True, "steps": 5,
                     "train": {"average_every": 1, "average_from": 2, "lr": 1e-3}}]}
    monkeypatch.setattr(recipe, "preset", lambda name: p)
    monkeypatch.setattr(recipe, "build_data", lambda p, workdir, progress=True: {"synthetic": [syn],
                                                                                 "homography": []})
    recipe.run_preset("x", tmp_path / "work", steps=3, export=False, progress=False, repo_root=tmp_path)
    run = tmp_path / "work" / "runs" / "x"
    ck = torch.load(run / "last.pth", weights_only=True)
    assert ck["iteration"] == 3 and ck["averaged"] == 1
    assert {int(v["step"]) for v in ck["optimizer"]["state"].values()} == {1}  # fresh at step 2
    res = recipe.run_preset("x", tmp_path / "work", progress=False, repo_root=tmp_path)
    ck = torch.load(run / "last.pth", weights_only=True)
    assert {int(v["step"]) for v in ck["optimizer"]["state"].values()} == {3}  # resumed, not restarted at 3
    assert [r["step"] for r in res["log"] if r.get("restart")] == [2]
    assert res["exported"]["averaged"] == 3
    shipped = torch.load(tmp_path / "w" / "imp_sift.pth", weights_only=True)
    for k, v in ck["average"].items():
        assert torch.equal(shipped["model"][k], v), k
    assert load_model(tmp_path / "w" / "imp_sift.pth", "eimp")[0].conf["pool_threshold"] == 0.11
    card = open(res["card"]).read()
    assert "mean of 3 snapshots (exported)" in card and "set by the preset" in card
    assert '"pool_threshold": 0.11' in card  # the file's, not the run's model conf


def test_localizer_matcher_falls_back_where_eimp_has_no_weights(tmp_path, monkeypatch):
    """config/localizer_synthetic.yaml's `matcher: {name: eimp, fallback: map}`: EIMP where imp ships weights for the
    map's features, else the map's own matcher with a note saying why; without `fallback` nothing is replaced."""
    from imp_core.localization.localizer import choose_matcher

    monkeypatch.setattr(ckpt, "SHIPPED_DIR", tmp_path)
    meta = {"features": {"name": "sift"}, "matcher": {"name": "nn", "max_distance": 0.9, "device": "cuda"}}
    mconf, note = choose_matcher({"name": "eimp", "fallback": "map"}, meta, "cpu")
    assert mconf == {"name": "nn", "max_distance": 0.9, "device": "cpu"}
    assert "no eimp weights for 'sift' features" in note and "using 'nn' instead" in note
    mconf, note = choose_matcher({"name": "eimp"}, meta, "cpu")  # no fallback: create_matcher will say why
    assert mconf == {"name": "eimp", "device": "cpu"} and note == ""
    mconf, note = choose_matcher({"name": "lighterglue", "fallback": "label_nn"}, meta)  # LighterGlue is XFeat's
    assert mconf["name"] == "label_nn" and "works with features ['xfeat']" in note
    ship_sift_weights(tmp_path, num_heads=1)
    mconf, note = choose_matcher({"name": "eimp", "fallback": "map"}, meta, "cpu")
    assert mconf == {"name": "eimp", "device": "cpu"} and note == ""
    m = create_matcher({**mconf, "features": "sift"})
    assert m.describe() == f"eimp (weights {tmp_path / 'imp_sift.pth'})"


def test_synthetic_config_runs_eimp_with_the_shipped_xfeat_weights():
    """The shipped file is what config/localizer_synthetic.yaml (demo, ROS node) runs on an XFeat map; a SIFT map
    falls back to its own matcher with a note naming the features that have weights."""
    from pathlib import Path

    from imp_core.config import read_conf
    from imp_core.localization.localizer import choose_matcher

    conf = read_conf(Path(__file__).resolve().parents[1] / "config" / "localizer_synthetic.yaml", "localizer")
    mconf, note = choose_matcher(conf["matcher"], {"features": {"name": "xfeat"}, "matcher": {"name": "nn"}}, "cpu")
    assert mconf == {"name": "eimp", "device": "cpu"} and note == ""
    m = create_matcher({**mconf, "features": "xfeat"})
    assert Path(m.weights).name == "imp_xfeat.pth" and m.descriptor_dim == 64
    assert m.model.conf["pool_threshold"] == 0.15  # the preset's, stored at export (docs/models/imp_xfeat.md)
    mconf, note = choose_matcher(conf["matcher"], {"features": {"name": "sift"}, "matcher": {"name": "nn"}}, "cpu")
    assert mconf["name"] == "nn" and f"imp ships eimp weights for {ckpt.shipped_features('eimp')}" in note
    assert "xfeat" in ckpt.shipped_features()
    # the GM ablation ships for XFeat too (docs/models/gm_xfeat.md): GM finds its own file, every layer unshared
    gm = create_matcher({"name": "gm", "features": "xfeat", "device": "cpu"})
    assert Path(gm.weights).name == "gm_xfeat.pth" and not any(gm.model.sharing) and gm.model.n_layers == 9
    # ... and for ALIKED (docs/models/gm_aliked.md), with IMP-ALIKED's 128 -> 64 input projection
    gm = create_matcher({"name": "gm", "features": "aliked", "device": "cpu"})
    assert Path(gm.weights).name == "gm_aliked.pth" and not any(gm.model.sharing)
    assert gm.model.conf["input_dim"] == 128 and gm.model.conf["descriptor_dim"] == 64
    assert ckpt.shipped_features("gm") == ["aliked", "xfeat"]


def test_shipped_aliked_weights_localize_an_aliked_map(tiny_world, tmp_path):
    """imp_aliked.pth (ALIKED's 128-d descriptors through an input projection into the 64-wide model, warm-started
    from imp_xfeat.pth): the localizer picks it for an ALIKED map by the map's feature name, and EIMP localizes the
    tiny world's day and night queries as well as mutual NN does against the same map."""
    from pathlib import Path

    import pycolmap

    from imp_core.eval.metrics import query_errors
    from imp_core.localization import Localizer
    from imp_core.localization.batch import localize_queries
    from imp_core.mapping import build_map

    pycolmap.logging.minloglevel = 2
    m = create_matcher({"name": "eimp", "features": "aliked", "device": "cpu"})
    assert Path(m.weights).name == "imp_aliked.pth" and m.descriptor_dim == 128
    assert m.model.descriptor_dim == 64 and m.model.input_proj is not None
    conf = {"features": {"name": "aliked", "max_keypoints": 1024}, "matcher": {"name": "nn"},
            "global": {"name": "vlad", "num_clusters": 16}}
    map_dir = build_map(tiny_world, tmp_path / "map", conf, progress=False)
    queries = tiny_world.queries()
    ok = {}
    for name in ("eimp", "nn"):
        loc = Localizer({"map": str(map_dir), "matcher": {"name": name},
                         "coarse": [{"name": "retrieval", "top_k": 2}]})
        if name == "eimp":
            assert Path(loc.matcher.weights).name == "imp_aliked.pth"
        res = localize_queries(loc, queries, tracking=False, progress=False)
        errs = query_errors({n: r.pose for n, r in res.items()}, {q.name: q.gt_pose for q in queries},
                            {q.name: q.condition for q in queries})
        ok[name] = sum(e.t_err <= 0.25 and e.r_err <= 2.0 for e in errs)
    assert ok["eimp"] >= ok["nn"] and ok["eimp"] >= len(queries) - 2, ok
