"""Dataset readers and writers: text formats, COLMAP models, Aachen/RobotCar layouts exported from the world."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from imp_core.datasets import DatasetError, open_dataset
from imp_core.datasets.aachen import AachenDataset
from imp_core.datasets.colmap_io import read_model_poses, read_poses, read_query_list, write_poses, write_query_list
from imp_core.datasets.export import export_aachen, export_robotcar
from imp_core.datasets.robotcar import RobotCarDataset, read_intrinsics
from imp_core.datasets.synthetic import SyntheticWorld, make_world
from imp_core.types import Camera, Pose


def same_pose(a: Pose, b: Pose, tol: float = 1e-6) -> bool:
    return np.allclose(a.R, b.R, atol=tol) and np.allclose(a.t, b.t, atol=tol)


def test_query_list_round_trip_and_errors(tmp_path):
    cams = {"query/day/a.jpg": Camera("SIMPLE_RADIAL", 1024, 1024, [400, 508.222931, 498.187378, 0.0]),
            "query/night/b.jpg": Camera("PINHOLE", 640, 480, [500, 501, 320, 240])}
    path = write_query_list(tmp_path / "q.txt", cams)
    back = read_query_list(path)
    assert list(back) == list(cams)
    for n in cams:
        assert back[n].model == cams[n].model and np.allclose(back[n].params, cams[n].params, atol=1e-6)
    path.write_text("# comment\n\nimg.jpg PINHOLE 640 480 500 500 320\n")
    with pytest.raises(DatasetError, match=r"q.txt:3"):
        read_query_list(path)
    path.write_text("img.jpg FISHEYE9 640 480 500 500 320 240\n")
    with pytest.raises(DatasetError, match=r"q.txt:1.*FISHEYE9"):
        read_query_list(path)
    with pytest.raises(DatasetError, match="missing.txt"):
        read_query_list(tmp_path / "missing.txt")


def test_pose_file_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    poses = {}
    for i in range(5):
        q = rng.normal(size=4)
        poses[f"rear/{i}.jpg"] = Pose.from_qvec(q / np.linalg.norm(q), rng.normal(size=3) * 10)
    back = read_poses(write_poses(tmp_path / "p.txt", poses))
    assert all(same_pose(back[n], poses[n]) for n in poses)
    (tmp_path / "p.txt").write_text("a.jpg 1 0 0 0 1 2\n")
    with pytest.raises(DatasetError, match=r"p.txt:1.*8 fields"):
        read_poses(tmp_path / "p.txt")
    (tmp_path / "p.txt").write_text("a.jpg 1 0 0 0 1 2 x\n")
    with pytest.raises(DatasetError, match=r"p.txt:1.*non-numeric"):
        read_poses(tmp_path / "p.txt")


def test_reference_model_matches_world(tiny_world):
    model = read_model_poses(tiny_world.reference_model_dir)
    assert sorted(model) == tiny_world.db_names
    cam, pose = model["db/0005.png"]
    assert cam.model == "PINHOLE" and cam.width == 640
    c = tiny_world.pose("db/0005.png").center
    assert np.allclose(pose.center, c) and abs(c[2] - 1.6) < 1e-9
    assert open_dataset(tiny_world.root).kind == "synthetic"


def test_aachen_export_is_read_back(tiny_world, tmp_path):
    out = export_aachen(tiny_world, tmp_path / "aachen")
    ds = open_dataset(out)
    assert isinstance(ds, AachenDataset)
    assert ds.db_names == [n.replace(".png", ".jpg") for n in tiny_world.db_names]
    assert same_pose(ds.db_pose("db/0003.jpg"), tiny_world.pose("db/0003.png"))
    assert ds.db_image_path("db/0003.jpg").is_file()
    assert ds.conditions == ["day", "night"]
    night = ds.queries("night")
    assert len(night) == 8 and night[0].name == "seq1_0000.jpg"  # result files use basenames for Aachen
    assert night[0].path == out / "images/images_upright/query/night/nexus5x/seq1_0000.jpg" and night[0].path.is_file()
    assert same_pose(night[0].gt_pose, tiny_world.pose("query/night/seq1_0000.png"))
    assert np.allclose(night[0].camera.K, tiny_world.camera("query/night/seq1_0000.png").K)
    assert (out / "queries/day_time_queries_with_intrinsics.txt").is_file()


def test_robotcar_export_is_read_back(tiny_world, tmp_path):
    out = export_robotcar(tiny_world, tmp_path / "robotcar")
    ds = open_dataset(out)
    assert isinstance(ds, RobotCarDataset)
    assert ds.conditions == ["night", "overcast-summer"]
    qs = ds.queries("night")
    assert len(qs) == 8 and all(q.name.startswith("rear/") and q.name.endswith(".jpg") for q in qs)
    cam = qs[0].camera
    assert cam.model == "SIMPLE_RADIAL" and (cam.width, cam.height) == (640, 480) and cam.params[3] == 0.0
    assert np.allclose(cam.K, tiny_world.camera(tiny_world.query_names("night")[0]).K)
    # stamps come from the microsecond file names and keep the 10 Hz spacing
    assert np.allclose(np.diff([q.stamp for q in qs]), 0.1, atol=1e-6)
    names = tiny_world.query_names("night")
    assert same_pose(qs[0].gt_pose, tiny_world.pose(names[0]))
    assert len(ds.db_names) == 16 and all(n.startswith("overcast-reference/rear/") for n in ds.db_names)
    assert list(ds.query_list("night"))[0].startswith("night/rear/")


def test_robotcar_intrinsics_file(tmp_path):
    p = tmp_path / "rear_intrinsics.txt"
    p.write_text("fx 400.000000\nfy 400.000000\ncx 508.222931\ncy 498.187378\n")
    cam = read_intrinsics(p)
    assert cam.to_line() == "SIMPLE_RADIAL 1024 1024 400.000000 508.222931 498.187378 0.000000"
    p.write_text("fx 400\nfy 400\ncx\n")
    with pytest.raises(DatasetError, match=r"rear_intrinsics.txt:3"):
        read_intrinsics(p)


def test_open_dataset_names_what_it_looked_for(tmp_path):
    with pytest.raises(DatasetError, match=r"world.json.*aachen_v_1_1.*intrinsics"):
        open_dataset(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "nothing")


def test_world_command_reuses_and_exports(tiny_world, tmp_path, capsys):
    from imp_core.datasets import commands

    parser = argparse.ArgumentParser(prog="imp")
    commands.register(parser.add_subparsers())
    args = parser.parse_args(["world", "--out", str(tiny_world.root), "--preset", "tiny", "--quiet",
                              "--export", "robotcar", str(tmp_path / "rc")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "16 db" in out and "exported robotcar" in out
    assert isinstance(open_dataset(tmp_path / "rc"), RobotCarDataset)
