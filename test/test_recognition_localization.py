"""LBR end to end on the tiny synthetic world: annotate a map with global instances (checked against the world's
facade ids), train the recognition net briefly through the CLI, localize day and night queries with the
"instance" coarse stage and the label-aware matcher."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from imp_core.mapping import LocalizationMap
from imp_core.recognition.instances import InstanceIndex, load_point_labels
from imp_core.recognition.masks import keypoint_labels, read_mask
from imp_core.recognition.network import load_model, save_model
from imp_core.types import pose_error


def imp_main(argv):
    """Our subcommands as `imp` runs them (only this module's parsers, so other stages' CLIs do not matter)."""
    import argparse

    from imp_core.recognition import commands

    parser = argparse.ArgumentParser(prog="imp")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def annotated(tiny_map, tiny_world, tmp_path_factory):
    """A copy of the session map (annotating writes into the map directory) with instances and a model."""
    root = tmp_path_factory.mktemp("lbr")
    map_dir = root / "map"
    shutil.copytree(tiny_map, map_dir)
    assert imp_main(["instances", str(map_dir), "--num-instances", "10", "--mode", "xy"]) == 0
    assert imp_main(["train-recognition", str(map_dir), str(root / "rec"), "--steps", "60", "--batch-size", "4",
                     "--size", "128", "96", "--image-dir", str(tiny_world.image_root), "--annotate"]) == 0
    return map_dir, root / "rec" / "model.pt"


def test_instances_follow_facades(annotated, tiny_world):
    map_dir, _ = annotated
    lmap = LocalizationMap.load(map_dir)
    index = InstanceIndex.load(map_dir)
    assert index.num_instances == 10
    assert len(index.instance_images) == 10
    pids, plab, _ = load_point_labels(map_dir)
    lut = dict(zip(pids.tolist(), plab.tolist()))
    pairs = []
    for name in lmap.names:
        f = lmap.features(name)
        assert f.labels is not None
        assert len(f.labels) == len(f)  # labels.h5 is attached by the map loader
        mask = read_mask(map_dir / "instance_masks" / f"{name}.png")
        assert mask.shape == (tiny_world.camera(name).height, tiny_world.camera(name).width)
        assert set(np.unique(mask)) - {0} == set(index.image_instances[name])
        gt = keypoint_labels(f.keypoints, tiny_world.instance_mask(name))
        p3 = lmap.point3D_ids(name)
        pairs += [(lut[int(p)], g) for p, g in zip(p3, gt) if p >= 0 and g > 0]
    pairs = np.array(pairs)
    # each cluster is mostly one ground-truth facade
    purity = sum(np.bincount(pairs[pairs[:, 0] == c, 1]).max() for c in np.unique(pairs[:, 0])) / len(pairs)
    assert purity > 0.75


def test_instance_guided_localization(annotated, tiny_world):
    from imp_core.localization import Localizer

    map_dir, model = annotated
    loc = Localizer({"map": str(map_dir), "matcher": {"name": "label_nn"},
                     "coarse": [{"name": "instance", "model": str(model), "rec_th": 40, "k_can": 3,
                                 "fallback": {"name": "retrieval", "top_k": 3}}]})
    queries = tiny_world.queries("day")[:2] + tiny_world.queries("night")[:2]
    good = modes = 0
    for q in queries:
        loc.reset()
        res = loc.localize(tiny_world.image(q.name), q.camera, name=q.name)
        assert res.instances, "the recognition network found no instance"
        assert all(0 < i <= 10 for i, _ in res.instances)
        assert "recognition" in res.timings
        if res.success:
            dt, dr = pose_error(res.pose, q.gt_pose)
            good += dt < 0.5 and dr < 5
            modes += res.mode == "instance"
    loc.close()
    assert good >= 3
    assert modes >= 1


def test_stage_refuses_a_model_the_map_was_not_annotated_with(annotated, tmp_path):
    from imp_core.stages import COARSE_STAGES

    map_dir, model = annotated
    other = tmp_path / "other.pt"
    save_model(other, load_model(model), extra={"note": "another model"})
    lmap = LocalizationMap.load(map_dir)
    with pytest.raises(ValueError, match="imp instances --model"):
        COARSE_STAGES.create({"name": "instance", "model": str(other)}, lmap=lmap)


def test_model_carries_its_instances_to_another_map(annotated, tiny_world, tmp_path):
    """A second map of the same place, annotated from the model's instance definition, gets the same labels."""
    from imp_core.stages import COARSE_STAGES

    map_dir, model = annotated
    other = tmp_path / "map"
    shutil.copytree(map_dir, other)
    assert imp_main(["instances", str(other), "--centroids-from", str(model), "--model", str(model),
                     "--image-dir", str(tiny_world.image_root)]) == 0
    _, a, _ = load_point_labels(map_dir)
    _, b, _ = load_point_labels(other)
    assert (a == b).mean() > 0.95
    assert InstanceIndex.load(other).conf["mode"] == "xy"
    stage = COARSE_STAGES.create({"name": "instance", "model": str(model)}, lmap=LocalizationMap.load(other))
    stage.close()


def test_instance_candidates_order_threshold_and_fallback(annotated, tiny_world):
    from imp_core.stages import COARSE_STAGES, QueryContext

    map_dir, model = annotated
    lmap = LocalizationMap.load(map_dir)
    index = InstanceIndex.load(map_dir)
    q = tiny_world.queries("night")[0]
    ctx = QueryContext(image=tiny_world.image(q.name), camera=q.camera)
    stage = COARSE_STAGES.create({"name": "instance", "model": str(model), "k_can": 2, "rec_th": 77, "nv_th": 33,
                                  "fallback_top_k": 4}, lmap=lmap)
    stage.prepare(ctx)
    assert ctx.label_map.shape == ctx.image.shape[:2]
    assert ctx.global_descriptor is not None
    confs = [c for _, c in ctx.instances]
    assert confs == sorted(confs, reverse=True)
    cands = stage.propose(ctx)
    inst = [c for c in cands if c.source.startswith("instance:")]
    assert inst
    assert all(c.min_inliers == 77 and 1 <= len(c.references) <= 2 for c in inst)
    for c in inst:  # every reference shows the instance it was proposed for
        iid = int(c.source.split(":")[1])
        assert all(iid in index.image_instances[r] for r in c.references)
    fb = [c for c in cands if c.source == "retrieval"]
    assert len(fb) == 4
    assert all(c.min_inliers == 33 and len(c.references) == 1 for c in fb)
    assert cands[-4:] == fb  # fallback clusters come last
    strict = COARSE_STAGES.create({"name": "instance", "model": str(model), "global_score_th": 1.01}, lmap=lmap)
    strict.prepare(ctx)
    assert all(c.source == "retrieval" for c in strict.propose(ctx))
    # rank "global" (LBR): an instance's references by descriptor cosine alone; "layout" (default) may reorder them
    glob = COARSE_STAGES.create({"name": "instance", "model": str(model), "k_can": 2, "rank": "global"}, lmap=lmap)
    glob.prepare(ctx)
    sims = dict(zip(glob.names, glob.db_desc @ ctx.extras["instance_descriptor"]))
    for c in glob.propose(ctx):
        if c.source.startswith("instance:"):
            rest = [n for n in glob._images[int(c.source.split(":")[1])] if n not in c.references]
            assert all(sims[r] >= sims[n] for r in c.references for n in rest)
    assert glob.db_layouts is None
    assert stage.db_layouts is not None
    with pytest.raises(Exception, match="rank must be 'layout' or 'global'"):
        COARSE_STAGES.create({"name": "instance", "model": str(model), "rank": "bogus"}, lmap=lmap)


def test_recognition_model_makes_instance_search_the_default(annotated, tiny_world):
    """`recognition: {model}` alone selects tracking -> instance (fallback retrieval), label_nn, labelled first."""
    from imp_core.localization import Localizer

    map_dir, model = annotated
    loc = Localizer({"map": str(map_dir), "recognition": {"model": str(model), "rec_th": 40, "k_can": 3}})
    assert [s.conf["name"] for s in loc.stages] == ["tracking", "instance"]
    assert loc.matcher.conf["name"] == "label_nn"
    assert loc.conf["labelled_first"]["enabled"]
    q = tiny_world.queries("night")[0]
    res = loc.localize(tiny_world.image(q.name), q.camera, name=q.name)
    assert res.instances
    assert res.success
    assert res.mode in ("instance", "global")
    budget = loc._budget
    assert budget
    assert loc.extractor.conf["max_keypoints"] == 2 * budget
    loc.close()
