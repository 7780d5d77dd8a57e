"""The synthetic world: generation, reload, exact depth/pose/mask consistency, clear errors."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from imp_core.datasets.base import DatasetError
from imp_core.world.synthetic import SyntheticWorld, make_world


def backproject(world: SyntheticWorld, name: str, step: int = 7):
    """World points of every ``step``-th pixel with valid depth, and the pixels they came from."""
    depth = world.depth(name)
    K = world.camera(name).K
    v, u = np.mgrid[0:depth.shape[0]:step, 0:depth.shape[1]:step]
    z = depth[v, u]
    ok = z > 0
    u, v, z = u[ok], v[ok], z[ok]
    x_cam = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], 1)
    return world.pose(name).inverse().transform(x_cam), u, v


def project(world: SyntheticWorld, name: str, X: np.ndarray):
    """Pixels (rounded) and depth of world points in image ``name``; mask of those inside the image."""
    cam = world.camera(name)
    xc = world.pose(name).transform(X)
    K = cam.K
    with np.errstate(divide="ignore", invalid="ignore"):
        uu = K[0, 0] * xc[:, 0] / xc[:, 2] + K[0, 2]
        vv = K[1, 1] * xc[:, 1] / xc[:, 2] + K[1, 2]
    ui, vi = np.round(uu).astype(int), np.round(vv).astype(int)
    inside = (xc[:, 2] > 0.1) & (ui >= 0) & (vi >= 0) & (ui < cam.width) & (vi < cam.height)
    return ui, vi, xc[:, 2], inside


def test_world_layout_and_reload(tiny_world):
    w = tiny_world
    meta = json.loads((w.root / "world.json").read_text())
    assert meta["preset"] == "tiny"
    assert meta["counts"]["db"] == len(w.db_names) == 16
    assert len(w.query_names("day")) == 8
    assert len(w.query_names("night")) == 8
    assert w.conditions == ["day", "night"]
    for rel in ("sfm_gt/cameras.bin", "sfm_gt/images.bin", "queries/day_queries_with_intrinsics.txt",
                "queries/night_queries_with_intrinsics.txt", "gt/query_poses.txt", "gt/sequences.json",
                "instances.json", "images/db/0003.png", "images/query/night/seq1_0004.png"):
        assert (w.root / rel).is_file(), rel
    img = w.image("db/0003.png")
    assert img.shape == (480, 640, 3)
    assert img.dtype == np.uint8
    assert img.std() > 20
    assert w.depth("db/0003.png").dtype == np.float32
    assert w.instance_mask("db/0003.png").dtype == np.int32
    cam = w.camera("query/day/seq0_0000.png")
    assert cam.model == "PINHOLE"
    assert np.allclose(cam.params[2:], [320, 240])
    # sequences are time-ordered at 10 Hz and the queries carry stamps and ground truth
    for seq, names in w.sequences.items():
        stamps = [w.stamp(n) for n in names]
        assert np.allclose(np.diff(stamps), 0.1)
    q = w.queries("night")
    assert len(q) == 8
    assert all(x.gt_pose is not None and x.condition == "night" and x.path.is_file() for x in q)
    # facades are instances with ids >= 1 and 4 world corners
    ids = [i["id"] for i in w.instances]
    assert min(ids) >= 1
    assert len(set(ids)) == len(ids)
    assert np.asarray(w.instances[0]["corners"]).shape == (4, 3)
    # a second call reuses the complete world instead of rendering again
    before = (w.root / "images/db/0000.png").stat().st_mtime_ns
    assert make_world(w.root, preset="tiny", seed=0, progress=False) == w.root
    assert (w.root / "images/db/0000.png").stat().st_mtime_ns == before


def test_a_world_given_to_a_benchmark_is_used_as_it_is(tiny_world, tmp_path, monkeypatch):
    """``use_or_make_world`` (the benchmarks' ``--world``) never re-renders a complete world of other settings (a
    training world of seed 11 was once re-rendered as seed 0 by a benchmark's default); it renders where none is."""
    from imp_core.world import synthetic

    w = tiny_world
    meta = (w.root / "world.json").read_text()
    before = (w.root / "images/db/0000.png").stat().st_mtime_ns
    assert synthetic.use_or_make_world(w.root, preset="default", seed=11, progress=False) == w.root
    assert (w.root / "world.json").read_text() == meta
    assert (w.root / "images/db/0000.png").stat().st_mtime_ns == before
    made = []
    monkeypatch.setattr(synthetic, "make_world", lambda root, preset, seed, progress: made.append((preset, seed)))
    synthetic.use_or_make_world(tmp_path / "new", preset="tiny", seed=3, progress=False)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(w.root, unfinished)
    (unfinished / synthetic.PENDING).write_text("{}")
    synthetic.use_or_make_world(unfinished, preset="tiny", seed=0, progress=False)
    assert made == [("tiny", 3), ("tiny", 0)]


def test_queries_deviate_from_the_mapping_drive(tiny_world):
    w = tiny_world
    db = np.array([w.pose(n).center for n in w.db_names])
    for n in w.query_names():
        c = w.pose(n).center
        assert abs(c[1]) <= 1.5 + 1e-6
        assert 1.4 < c[2] < 1.8  # lateral offset, camera height
        assert np.min(np.linalg.norm(db - c, axis=1)) < 3.0  # inside the mapped stretch
    lat = [abs(w.pose(n).center[1]) for n in w.query_names()]
    assert max(lat) > 0.2


@pytest.mark.parametrize("pair", [("db/0002.png", "db/0004.png"), ("query/day/seq0_0003.png", "db/0006.png"),
                                  ("db/0007.png", "query/night/seq1_0002.png")])
def test_depth_and_poses_are_consistent(tiny_world, pair):
    """Back-project with depth in A, project into B: where B sees the same surface its depth agrees."""
    a, b = pair
    X, _, _ = backproject(tiny_world, a)
    ui, vi, z_pred, inside = project(tiny_world, b, X)
    assert inside.sum() > 500, "the two views should overlap"
    d = tiny_world.depth(b)[vi[inside], ui[inside]]
    K = tiny_world.camera(b).K
    x_b = np.stack([(ui[inside] - K[0, 2]) / K[0, 0] * d, (vi[inside] - K[1, 2]) / K[1, 1] * d, d], 1)
    X_b = tiny_world.pose(b).inverse().transform(x_b)
    visible = d > 0
    err = np.linalg.norm(X_b - X[inside], axis=1)[visible]
    # tolerance: rounding to B's pixel grid; the rest are occlusions (a pose off by 10 cm gives 55-78 % here)
    assert np.mean(err < 0.01 * z_pred[inside][visible] + 0.01) > 0.97


def test_instance_masks_agree_with_geometry(tiny_world):
    w = tiny_world
    name = "db/0005.png"
    X, u, v = backproject(w, name, step=5)
    mask = w.instance_mask(name)[v, u]
    assert (mask > 0).mean() > 0.2
    assert (mask == 0).mean() > 0.1  # facades and ground both in view
    ground = mask == 0
    assert np.mean(np.abs(X[ground, 2]) < 0.01) > 0.9  # ground pixels are (mostly) on z = 0; poles are the rest
    for inst_id in np.unique(mask[mask > 0]):
        quads = [np.asarray(q) for q in w.instance(int(inst_id))["quads"]]
        P = X[mask == inst_id]
        on_any = np.zeros(len(P), bool)
        for q in quads:
            o, eu, ev = q[0], q[1] - q[0], q[3] - q[0]
            n = np.cross(eu, ev)
            n /= np.linalg.norm(n)
            a = (P - o) @ eu / (eu @ eu)
            b = (P - o) @ ev / (ev @ ev)
            on_any |= (np.abs((P - o) @ n) < 0.02) & (a > -0.01) & (a < 1.01) & (b > -0.01) & (b < 1.01)
        assert on_any.mean() > 0.98, f"instance {inst_id}: pixels off its facade"
    # the same surface point carries the same instance id in another view
    ui, vi, z_pred, inside = project(w, "db/0007.png", X)
    depth_b = w.depth("db/0007.png")[vi[inside], ui[inside]]
    vis = np.abs(depth_b - z_pred[inside]) < 0.01 * z_pred[inside]
    mask_b = w.instance_mask("db/0007.png")[vi[inside], ui[inside]]
    assert vis.sum() > 200
    assert np.mean(mask_b[vis] == mask[inside][vis]) > 0.97


def test_missing_and_corrupt_files_are_named(tiny_world, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_world.root, root)
    (root / "depth/db/0001.png").unlink()
    w = SyntheticWorld(root)
    with pytest.raises(DatasetError, match="depth/db/0001.png"):
        w.depth("db/0001.png")
    (root / "masks/db/0002.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="masks/db/0002.png"):
        w.instance_mask("db/0002.png")
    with pytest.raises(KeyError, match="nope.png"):
        w.image("nope.png")
    (root / "gt/sequences.json").write_text("{broken")
    with pytest.raises(DatasetError, match="sequences.json"):
        SyntheticWorld(root)
    with pytest.raises(DatasetError, match="world.json"):
        SyntheticWorld(tmp_path / "empty")
    other = tmp_path / "someone_elses"
    (other / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match="refusing to overwrite"):
        make_world(other, preset="tiny", progress=False)
    assert (other / "images").is_dir()


def test_scene_is_deterministic_and_seeded():
    from imp_core.world import textures
    from imp_core.world.scene import query_sequences
    from imp_core.world.synthetic import world_conf

    a, _ = textures.facade(np.random.default_rng([0, 101]), 6.0, 9.0, 32.0)
    b, _ = textures.facade(np.random.default_rng([0, 101]), 6.0, 9.0, 32.0)
    c, _ = textures.facade(np.random.default_rng([1, 101]), 6.0, 9.0, 32.0)
    assert a.shape == (288, 192, 4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    conf = world_conf("tiny")
    s0, s1 = query_sequences(conf, 0), query_sequences(conf, 1)
    assert np.allclose(s0["seq0"][1][3].t, query_sequences(conf, 0)["seq0"][1][3].t)
    assert not np.allclose(s0["seq0"][1][3].t, s1["seq0"][1][3].t)
    with pytest.raises(ValueError, match="unknown synthetic world preset"):
        world_conf("huge")
    with pytest.raises(Exception, match="overrides.widht"):
        world_conf("tiny", {"widht": 320})


def test_rendering_in_worker_processes_writes_the_same_files(tiny_world, tmp_path):
    """``make_world(workers=2)`` (``imp world --workers``) renders in forked processes: every image, depth map and
    instance mask is byte-identical to the one-process world (each image has its own random streams), and the
    world's metadata is the same."""
    root = make_world(tmp_path / "w2", preset="tiny", seed=0, progress=False, workers=2)
    ref = tiny_world.root
    files = sorted(p.relative_to(ref) for d in ("images", "depth", "masks") for p in (ref / d).rglob("*.png"))
    assert len(files) > 30
    for rel in files:
        assert (root / rel).read_bytes() == (ref / rel).read_bytes(), rel
    for rel in ("world.json", "gt/sequences.json", "gt/query_poses.txt", "instances.json"):
        assert (root / rel).read_text() == (ref / rel).read_text(), rel
