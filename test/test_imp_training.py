"""IMP training pipeline on the synthetic world: ground truth, MegaDepth layout, sampler, losses, trainer."""
from __future__ import annotations

import argparse
import itertools
import json
import os

import cv2
import h5py
import numpy as np
import pytest
import torch

from imp_core.matching.base import create_matcher
from imp_core.training.correspondences import IGNORE, UNMATCHED, View, correspondences
from imp_core.training.dump import dump_synthetic, read_dump_info
from imp_core.training.losses import pose_loss, total_loss
from imp_core.training.megadepth import dump_megadepth
from imp_core.training.sampler import PairDataset
from imp_core.training.trainer import train

FEATS = {"features": {"name": "sift", "max_keypoints": 384, "device": "cpu"}}


@pytest.fixture(scope="module")
def dump(tiny_world, tmp_path_factory):
    path = tmp_path_factory.mktemp("imp_dump") / "syn.h5"
    res = dump_synthetic(tiny_world, path, {**FEATS, "max_pairs": 120})
    assert res["pairs"] >= 40, res
    return path


def test_ground_truth_is_geometric(tiny_world, dump):
    with h5py.File(dump) as h5:
        g = h5["pairs"]["0"]
        n0, n1 = g.attrs["name0"], g.attrs["name1"]
        m, l0, l1 = np.asarray(g["matches"]), np.asarray(g["labels0"]), np.asarray(g["labels1"])
        k0, k1 = np.asarray(h5["features"][n0]["keypoints"]), np.asarray(h5["features"][n1]["keypoints"])
    assert len(np.unique(m[:, 0])) == len(m) == len(np.unique(m[:, 1]))  # one-to-one
    assert np.array_equal(l0[m[:, 0]], m[:, 1])
    assert np.array_equal(l1[m[:, 1]], m[:, 0])
    assert set(np.unique(l0[l0 < 0])) <= {UNMATCHED, IGNORE}
    assert (l0 == UNMATCHED).any()
    # GT matches satisfy the epipolar constraint of the true relative pose (independent check)
    p0, p1, cam = tiny_world.pose(n0), tiny_world.pose(n1), tiny_world.camera(n0)
    rel = p1 * p0.inverse()
    tx = np.array([[0, -rel.t[2], rel.t[1]], [rel.t[2], 0, -rel.t[0]], [-rel.t[1], rel.t[0], 0]])
    Kinv = np.linalg.inv(cam.K)
    x0 = np.c_[k0[m[:, 0]], np.ones(len(m))] @ Kinv.T
    x1 = np.c_[k1[m[:, 1]], np.ones(len(m))] @ Kinv.T
    lines = x0 @ (tx @ rel.R).T  # epipolar lines in image 1
    d = np.abs((x1 * lines).sum(1)) / np.linalg.norm(lines[:, :2], axis=1) * cam.focal[0]
    assert np.median(d) < 2.0
    assert np.mean(d < 5.0) > 0.95
    # a shifted keypoint set loses most of its matches (5 px gate; some survive by chance in dense areas)
    v0 = View(k0, tiny_world.depth(n0), cam.K, p0)
    v1 = View(k1 + 20.0, tiny_world.depth(n1), cam.K, p1)
    assert len(correspondences(v0, v1)[0]) < 0.35 * len(m)


def test_megadepth_layout_dump(tiny_world, tmp_path):
    root = tmp_path / "MegaDepth"
    names = tiny_world.db_names[0:8:2]  # one side of the street (db images alternate left / right)
    img_paths, depth_paths, Ks, poses = [], [], [], []
    for i, n in enumerate(names):
        ip = f"Undistorted_SfM/0000/images/{i:04d}.jpg"
        dp = f"phoenix/S6/zl548/MegaDepth_v1/0000/dense0/depths/{i:04d}.h5"
        (root / ip).parent.mkdir(parents=True, exist_ok=True)
        (root / dp).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / ip), cv2.cvtColor(tiny_world.image(n), cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        with h5py.File(root / dp, "w") as f:
            f.create_dataset("depth", data=tiny_world.depth(n))
        img_paths.append(ip)
        depth_paths.append(dp)
        Ks.append(tiny_world.camera(n).K)
        poses.append(tiny_world.pose(n).matrix)
    ov = np.full((4, 4), 0.5)
    ov[0, 3] = ov[3, 0] = 0.0  # not a pair
    (root / "scene_info").mkdir()
    np.savez(root / "scene_info" / "0000.npz", image_paths=np.array(img_paths), depth_paths=np.array(depth_paths),
             intrinsics=np.stack(Ks), poses=np.stack(poses), overlap_matrix=ov)
    res = dump_megadepth(root, tmp_path / "mega.h5", conf=FEATS, pairs_per_scene=None)
    assert res["pairs_tried"] == 5, res
    assert res["pairs"] >= 3, res
    assert read_dump_info(tmp_path / "mega.h5")["source"].startswith("megadepth:")
    # D2-Net object arrays (None for images without depth) are read without running pickled code ...
    np.savez(root / "scene_info" / "0001.npz", image_paths=np.array(img_paths[:3] + [None], dtype=object),
             depth_paths=np.array(depth_paths[:3] + [None], dtype=object), intrinsics=np.stack(Ks),
             poses=np.stack(poses), overlap_matrix=ov)
    res = dump_megadepth(root, tmp_path / "mega2.h5", scenes=["0001"], conf=FEATS, pairs_per_scene=None)
    assert res["pairs_tried"] == 3, res
    # ... and a file whose pickle would call a function is refused, naming the file

    class Evil:  # os.system: print would do, but Ray (test_distributed, same process) replaces builtins.print
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    np.savez(root / "scene_info" / "0002.npz", image_paths=np.array([Evil()], dtype=object))
    with pytest.raises(ValueError, match=r"refusing to unpickle (posix|nt)\.system"):
        dump_megadepth(root, tmp_path / "mega3.h5", scenes=["0002"], conf=FEATS)


def test_sampler(dump):
    ds = PairDataset(dump, n_keypoints=256, min_inliers=32, max_inliers=64, seed=1)
    counts = []
    for i in range(8):
        s = ds[i]
        assert s["keypoints0"].shape == (256, 2)
        assert s["descriptors1"].shape == (256, 128)
        g0, g1 = s["gt0"], s["gt1"]
        m = torch.nonzero(g0 >= 0).flatten()
        assert torch.equal(g1[g0[m]], m)  # consistent both ways
        counts.append(len(m))
    assert min(counts) >= 21
    assert max(counts) <= 64
    assert len(set(counts)) > 1


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_sampler_in_worker_processes(dump, context):
    """A DataLoader with workers (what a GPU run uses) gets the same pairs as the main process, also after the main
    process read from the file: each process opens its own HDF5 handle, and a spawned worker receives the dataset
    without one (an h5py handle cannot be pickled)."""
    ds = PairDataset(dump, n_keypoints=128, min_inliers=16, max_inliers=32, seed=2, fixed=True)
    ref = [ds[i] for i in range(4)]  # opens the file in this process first
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context=context)
    got = list(itertools.islice(loader, 2))
    for j, b in enumerate(got):
        for k in ("keypoints0", "descriptors1", "gt0", "gt1"):
            assert torch.equal(b[k], torch.stack([ref[2 * j][k], ref[2 * j + 1][k]])), k


def _nll_per_pair(prob, gt0, gt1, eps=1e-8):
    """The matching loss written out pair by pair (the definition ``matching_nll`` vectorizes)."""
    logp = torch.log(prob.clamp(min=eps))
    out = []
    for i in range(prob.shape[0]):
        g0, g1 = gt0[i], gt1[i]
        terms = []
        if (g0 >= 0).any():
            terms.append(-logp[i, :-1][g0 >= 0, g0[g0 >= 0]].mean())
        inc = [-logp[i, :-1, -1][g0 == UNMATCHED].mean()] if (g0 == UNMATCHED).any() else []
        inc += [-logp[i, -1, :-1][g1 == UNMATCHED].mean()] if (g1 == UNMATCHED).any() else []
        if inc:
            terms.append(torch.stack(inc).sum() / 2)
        out.append(torch.stack(terms).sum() if terms else logp.new_zeros(()))
    return torch.stack(out).mean()


def test_matching_loss_and_its_gradient_per_pair():
    """The vectorized loss (gathered entries, no per-pair slicing of the batch) equals the per-pair definition,
    value and gradient, with pairs that have no matches, no unmatched rows, or nothing at all."""
    from imp_core.training.losses import matching_nll

    gen = torch.Generator().manual_seed(0)
    for trial in range(6):
        logits = torch.randn(4, 31, 26, dtype=torch.double, generator=gen, requires_grad=True)
        gt0 = torch.randint(-2, 25, (4, 30), generator=gen)
        gt1 = torch.randint(-2, 30, (4, 25), generator=gen)
        gt0[0], gt1[0] = IGNORE, IGNORE  # a pair with nothing: a zero loss that still counts in the mean
        gt0[1] = torch.where(gt0[1] == UNMATCHED, IGNORE, gt0[1])
        gt0[2] = UNMATCHED
        want = _nll_per_pair(logits.softmax(-1).float(), gt0, gt1)  # the loss runs in float32
        got = matching_nll(logits.softmax(-1), gt0, gt1)
        assert torch.allclose(got, want, rtol=1e-6)
        g_want, = torch.autograd.grad(want, logits)
        g_got, = torch.autograd.grad(matching_nll(logits.softmax(-1), gt0, gt1), logits)
        assert torch.allclose(g_got, g_want, rtol=1e-5, atol=1e-9)


def test_cpu_batched_matrix_vector_gradient():
    """``layers.bmv``'s CPU loop has its own backward (autograd's own for the loop zero-filled a whole batch per
    element): the gradients are those of the batched product, also for transposed views as the Sinkhorn uses."""
    from imp_core.matching.imp.layers import bmv, bmv_batched

    gen = torch.Generator().manual_seed(0)
    mats = torch.rand(3, 7, 5, dtype=torch.double, generator=gen, requires_grad=True)
    vecs = torch.rand(3, 5, dtype=torch.double, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(bmv, (mats, vecs))
    for m in (mats, mats.transpose(1, 2)):
        v = vecs if m.shape[-1] == 5 else torch.rand(3, 7, dtype=torch.double, generator=gen, requires_grad=True)
        a = torch.autograd.grad(bmv(m, v).square().sum(), (mats, v))
        b = torch.autograd.grad(bmv_batched(m, v).square().sum(), (mats, v))
        assert all(torch.allclose(x, y) for x, y in zip(a, b))
    with torch.no_grad():  # inference keeps the plain loop
        assert torch.allclose(bmv(mats, vecs), bmv_batched(mats, vecs))


def test_pose_loss_prefers_true_assignment(dump):
    s = PairDataset(dump, n_keypoints=128, min_inliers=60, max_inliers=60, seed=0)[0]
    batch = {k: v[None] for k, v in s.items()}
    n = 128
    gt = torch.full((1, n + 1, n + 1), 1e-4)
    m = torch.nonzero(batch["gt0"][0] >= 0).flatten()
    gt[0, m, batch["gt0"][0, m]] = 1.0
    rnd = torch.rand(1, n + 1, n + 1, generator=torch.Generator().manual_seed(0), requires_grad=True)
    good, bad = pose_loss(gt, batch), pose_loss(rnd, batch)
    assert float(good.detach()) < 0.1 * float(bad.detach())
    bad.backward()
    assert torch.isfinite(rnd.grad).all()
    assert rnd.grad.abs().sum() > 0
    out = total_loss([gt, rnd], batch, pose_weight=1.0)
    assert set(out) == {"match", "pose", "loss"}
    assert torch.isfinite(out["loss"])


def test_training_improves_matching_and_resumes(dump, tmp_path):
    conf = {"steps": 50, "batch_size": 4, "n_keypoints": 128, "min_inliers": 32, "max_inliers": 96, "lr": 1e-3,
            "model": {"n_layers": 2}, "val_every": 50, "ckpt_every": 25, "log_every": 5, "val_fraction": 0.15,
            "match_threshold": 0.1, "device": "cpu"}
    res = train(dump, tmp_path / "run", conf, progress=False)
    log = res["log"]
    vals = [r for r in log if "precision" in r]
    losses = [r["loss"] for r in log if "loss" in r]
    assert vals[0]["step"] == 0
    assert vals[-1]["step"] == 50
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses
    assert vals[-1]["val_loss"] < 0.85 * vals[0]["val_loss"]
    # held-out pairs: the trained model beats the untrained one (same sampled keypoints, threshold 0.1)
    assert vals[-1]["precision"] > vals[0]["precision"] + 0.1, vals
    assert vals[-1]["recall"] > 2 * vals[0]["recall"], vals
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0
    # the checkpoint is in the released layout: the imp matcher loads it strictly
    m = create_matcher({"name": "imp", "weights": str(tmp_path / "run" / "last.pth"), "device": "cpu"})
    assert m.model.n_layers == 2
    assert m.descriptor_dim == 128
    # resume continues from step 50 (pose loss switched on for the extra steps)
    res2 = train(dump, tmp_path / "run", {**conf, "steps": 54, "pose_weight": 0.5, "log_every": 2}, resume=True,
                 progress=False)
    assert res2["step"] == 54
    extra = [r for r in res2["log"] if r["step"] > 50 and "pose" in r]
    assert extra
    assert all(np.isfinite(r["pose"]) for r in extra)
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 54


def test_resumed_run_trains_on_the_batches_an_uninterrupted_run_would(dump, tmp_path):
    """A run stopped mid-epoch and resumed ends with the weights of one that never stopped: the resumed epoch goes
    on with the batches not yet seen (before: it started the epoch again, so a run resumed every session kept
    training on the epoch's first batches), in the second epoch, with and without per-dump weights, and from a
    checkpoint written before checkpoints recorded the position in the epoch."""
    for weights in (None, [1.0]):
        conf = {"steps": 14, "batch_size": 8, "n_keypoints": 96, "min_inliers": 16, "max_inliers": 48, "lr": 1e-3,
                "model": {"n_layers": 1}, "val_every": 100, "ckpt_every": 5, "log_every": 5, "val_fraction": 0.15,
                "device": "cpu", "dump_weights": weights}
        whole = train(dump, tmp_path / f"whole{weights}", conf, progress=False)
        assert whole["step"] == 14
        train(dump, tmp_path / f"parts{weights}", {**conf, "steps": 10}, progress=False)
        last = tmp_path / f"parts{weights}" / "last.pth"
        ck = torch.load(last, weights_only=True)
        assert ck["epoch"] >= 1 and ck["epoch_step"] > 0, (ck["epoch"], ck["epoch_step"])
        if weights:  # an older checkpoint: the position follows from the epoch's length
            del ck["epoch_step"]
            torch.save(ck, last)
        train(dump, tmp_path / f"parts{weights}", conf, resume=True, progress=False)
        a = torch.load(tmp_path / f"whole{weights}" / "last.pth", weights_only=True)
        b = torch.load(tmp_path / f"parts{weights}" / "last.pth", weights_only=True)
        assert b["iteration"] == 14 and b["epoch"] == a["epoch"] >= 1, (a["epoch"], b["epoch"])
        assert b["epoch_step"] == a["epoch_step"]
        for k, v in a["model"].items():
            assert torch.allclose(v, b["model"][k], atol=1e-6), k
    # other data (a recipe's next stage): a fresh pass over it begins, nothing of it is skipped
    train([dump, dump], tmp_path / "partsNone", {**conf, "steps": 17, "dump_weights": None}, resume=True,
          progress=False)
    c = torch.load(tmp_path / "partsNone" / "last.pth", weights_only=True)
    assert c["iteration"] == 17 and c["epoch_step"] == 3, (c["iteration"], c["epoch_step"])
    # other sampling of the same data: the epoch goes on; both changes are logged (the old best no longer compares)
    res = train([dump, dump], tmp_path / "partsNone", {**conf, "steps": 18, "dump_weights": None, "n_keypoints": 80},
                resume=True, progress=False)
    c = torch.load(tmp_path / "partsNone" / "last.pth", weights_only=True)
    assert c["epoch_step"] == 4
    marks = [(r["step"], r["changed"]) for r in res["log"] if "previous_data" in r]
    assert marks == [(14, []), (17, ["n_keypoints"])], marks


def test_weight_average_is_the_mean_of_the_snapshots_across_resumes(dump, tmp_path):
    """``average_every``: the exported file is the mean of the model at steps 4, 6 and 8 (``average_from`` 2),
    although the run stopped after each of them; the mean is evaluated on the held-out pairs at the end."""
    from imp_core.training.recipe import export_weights

    conf = {"batch_size": 8, "n_keypoints": 96, "min_inliers": 16, "max_inliers": 48, "lr": 1e-3,
            "model": {"n_layers": 1}, "val_every": 100, "ckpt_every": 2, "log_every": 5, "val_fraction": 0.15,
            "device": "cpu", "average_every": 2, "average_from": 2}
    run = tmp_path / "run"
    snapshots = []
    for steps in (4, 6, 8):
        res = train(dump, run, {**conf, "steps": steps}, resume=steps > 4, progress=False)
        ck = torch.load(run / "last.pth", weights_only=True)
        snapshots.append(ck["model"])
        assert ck["averaged"] == len(snapshots)
    for k, v in snapshots[0].items():
        mean = sum(s[k] for s in snapshots) / 3
        assert torch.allclose(ck["average"][k], mean, atol=1e-6), k
    assert not torch.allclose(snapshots[0]["final_proj.0.weight"], snapshots[-1]["final_proj.0.weight"])
    rows = [r for r in res["log"] if "averaged" in r]
    assert [(r["step"], r["averaged"]) for r in rows] == [(4, 1), (6, 2), (8, 3)] and "recall" in rows[-1]
    exported = export_weights(run, tmp_path / "w.pth", which="last")
    assert exported["averaged"] == 3
    out = torch.load(tmp_path / "w.pth", weights_only=True)
    assert set(out) == {"epoch", "iteration", "model", "min_loss", "conf"}
    for k, v in ck["average"].items():
        assert torch.equal(out["model"][k], v), k
    # resumed with averaging off: the old mean is not carried on (the export is the run's own weights again)
    train(dump, run, {**conf, "steps": 9, "average_every": None}, resume=True, progress=False)
    assert "average" not in torch.load(run / "last.pth", weights_only=True)
    assert export_weights(run, tmp_path / "w2.pth", which="last")["averaged"] == 0


def test_restart_goes_on_from_the_weights_with_a_fresh_optimizer(dump, tmp_path):
    """``restart``: a fine-tuning stage starts from the run's last weights and step, as a new run would (its own
    Adam moments and pass over the data, the old best forgotten); an interrupted restart resumes as usual."""
    conf = {"steps": 3, "batch_size": 8, "n_keypoints": 96, "min_inliers": 16, "max_inliers": 48, "lr": 1e-3,
            "model": {"n_layers": 1}, "val_every": 100, "ckpt_every": 1, "log_every": 1, "val_fraction": 0.15,
            "device": "cpu"}
    with pytest.raises(ValueError, match="needs resume"):
        train(dump, tmp_path / "x", conf, restart=True, progress=False)
    run = tmp_path / "run"
    train(dump, run, conf, progress=False)
    res = train(dump, run, {**conf, "steps": 4}, resume=True, restart=True, progress=False)
    ck = torch.load(run / "last.pth", weights_only=True)
    assert ck["iteration"] == 4 and ck["epoch_step"] == 1
    # one Adam step since the restart (a resume would be at 4), from the stage-3 weights
    assert {int(v["step"]) for v in ck["optimizer"]["state"].values()} == {1}
    assert any(r.get("restart") for r in res["log"] if r["step"] == 3)
    train(dump, run, {**conf, "steps": 5}, resume=True, progress=False)
    ck = torch.load(run / "last.pth", weights_only=True)
    assert {int(v["step"]) for v in ck["optimizer"]["state"].values()} == {2}


def test_run_conf_reads_a_run_for_the_benchmarks(dump, tmp_path):
    """``run_conf``: a run's trainer conf and dumps with overrides on top; keys an older trainer wrote and this one
    no longer knows are left out; a directory that is not a run is named in the error."""
    from imp_core.training.trainer import run_conf

    run = tmp_path / "run"
    train(dump, run, {"steps": 1, "batch_size": 2, "n_keypoints": 64, "max_inliers": 16, "min_inliers": 8,
                      "model": {"n_layers": 1}, "val_every": 100, "ckpt_every": 1, "device": "cpu"}, progress=False)
    saved = json.loads((run / "conf.json").read_text())
    saved["train"]["retired_key"] = 1
    (run / "conf.json").write_text(json.dumps(saved))
    conf, data = run_conf(run, {"n_keypoints": 128})
    assert data == [str(dump)] and conf["n_keypoints"] == 128 and conf["max_inliers"] == 16
    assert "retired_key" not in conf
    with pytest.raises(FileNotFoundError, match="no conf.json"):
        run_conf(tmp_path)


def test_cli_help():
    from imp_core.training import commands

    p = argparse.ArgumentParser(prog="imp")
    sub = p.add_subparsers(dest="command")
    commands.register(sub)
    for cmd in ("dump", "train-matcher"):
        with pytest.raises(SystemExit) as e:
            p.parse_args([cmd, "--help"])
        assert e.value.code == 0
    args = p.parse_args(["train-matcher", "--data", "x.h5", "--out", "o", "--layers", "3", "--pose-weight", "1"])
    assert args.layers == 3
    assert args.pose_weight == 1.0


def test_non_finite_steps_are_skipped_but_counted(dump, tmp_path, monkeypatch):
    """A step whose loss is not finite (fp16 overflow, say) makes no update but still counts: the run stops at
    ``steps`` and the log says how many were skipped. Before, a skipped step bypassed the step limit, so a run of
    NaN losses went on to the end of its epoch (found on a GPU, where fp16 autocast gave NaN at every step)."""
    from imp_core.training import trainer

    def nan_loss(probs, batch, *args):
        nan = probs[-1].sum() * float("nan")
        return {"loss": nan, "match": nan}

    monkeypatch.setattr(trainer, "total_loss", nan_loss)
    conf = {"steps": 3, "batch_size": 2, "n_keypoints": 64, "model": {"n_layers": 2}, "val_every": 100,
            "ckpt_every": 100, "log_every": 1, "device": "cpu"}
    res = train(dump, tmp_path / "run", conf, progress=False)
    assert res["step"] == 3
    rows = [r for r in res["log"] if "skipped" in r]
    assert [r["skipped"] for r in rows] == [1, 2, 3]
    assert not any("loss" in r for r in rows)
    assert (tmp_path / "run" / "last.pth").is_file()


def test_amp_settings():
    from imp_core.training.trainer import autocast_dtype

    assert autocast_dtype(True, "cpu") is None  # only CUDA autocasts
    assert autocast_dtype("fp16", "cpu") is None
    assert autocast_dtype(False, "cuda") is None
    assert autocast_dtype("fp16", "cuda:0") == torch.float16
    assert autocast_dtype("bf16", "cuda") == torch.bfloat16
    for device in ("cuda", "cpu"):  # a wrong value is named wherever the run is
        with pytest.raises(ValueError, match="'amp'"):
            autocast_dtype("fp8", device)


def test_preset_takes_machine_flags_and_refuses_recipe_flags(monkeypatch):
    """``--preset`` is a recipe: --device / --num-workers / --amp reach its trainer (a GPU run needs workers), flags
    that would change what it trains stop with a message instead of being silently dropped."""
    from imp_core.training import commands, recipe

    p = argparse.ArgumentParser(prog="imp")
    commands.register(p.add_subparsers(dest="command"))
    seen = {}
    monkeypatch.setattr(recipe, "run_preset", lambda name, workdir, **kw: seen.update(name=name, **kw) or {})
    args = p.parse_args(["train-matcher", "--preset", "imp_xfeat", "--device", "cuda", "--num-workers", "8",
                         "--amp", "bf16", "--no-export"])
    assert commands.run_train(args) == 0
    assert seen["name"] == "imp_xfeat" and seen["export"] is False
    assert seen["runtime"] == {"device": "cuda", "num_workers": 8, "amp": "bf16"}
    args = p.parse_args(["train-matcher", "--preset", "imp_xfeat", "--batch-size", "4", "--lr", "0.1"])
    with pytest.raises(SystemExit, match="--batch-size, --lr would change the recipe"):
        commands.run_train(args)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="recipe settings"):
        recipe.run_preset("imp_xfeat", "/nonexistent", runtime={"batch_size": 64})
