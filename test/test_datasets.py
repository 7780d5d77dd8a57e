"""Dataset readers and writers: text formats, COLMAP models, Aachen/RobotCar layouts exported from the world."""
from __future__ import annotations

import argparse
import re
import shutil
import sqlite3

import numpy as np
import pytest

from imp_core.datasets import DatasetError, open_dataset
from imp_core.datasets.aachen import AachenDataset
from imp_core.datasets.colmap_io import read_model_poses, read_poses, read_query_list, write_poses, write_query_list
from imp_core.datasets.nvm import read_nvm, write_nvm
from imp_core.datasets.robotcar import RobotCarDataset, read_intrinsics, read_train_list
from imp_core.types import Camera, Pose
from imp_core.world.export import export_aachen, export_robotcar


def same_pose(a: Pose, b: Pose, tol: float = 1e-6) -> bool:
    return np.allclose(a.R, b.R, atol=tol) and np.allclose(a.t, b.t, atol=tol)


def test_query_list_round_trip_and_errors(tmp_path):
    cams = {"query/day/a.jpg": Camera("SIMPLE_RADIAL", 1024, 1024, [400, 508.222931, 498.187378, 0.0]),
            "query/night/b.jpg": Camera("PINHOLE", 640, 480, [500, 501, 320, 240])}
    path = write_query_list(tmp_path / "q.txt", cams)
    back = read_query_list(path)
    assert list(back) == list(cams)
    for n in cams:
        assert back[n].model == cams[n].model
        assert np.allclose(back[n].params, cams[n].params, atol=1e-6)
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
    assert cam.model == "PINHOLE"
    assert cam.width == 640
    c = tiny_world.pose("db/0005.png").center
    assert np.allclose(pose.center, c)
    assert abs(c[2] - 1.6) < 1e-9
    assert open_dataset(tiny_world.root).kind == "synthetic"


@pytest.mark.parametrize("images_at_root", [True, False])
def test_aachen_as_downloaded(tiny_world, tmp_path, images_at_root):
    out = export_aachen(tiny_world, tmp_path / "aachen", images_at_root=images_at_root)
    img_root = out / ("images_upright" if images_at_root else "images/images_upright")
    assert img_root.is_dir()
    assert not (out / ("images" if images_at_root else "images_upright")).exists()
    ds = open_dataset(out)
    assert isinstance(ds, AachenDataset)
    assert ds.image_root == img_root
    gopro = [n for n in ds.db_names if n.startswith("sequences/gopro3_undistorted/")]
    assert gopro
    assert all(n.endswith(".png") and ds.db_image_path(n).is_file() for n in gopro)
    assert len(ds.db_names) == 16
    assert all(ds.db_image_path(n).is_file() for n in ds.db_names)
    assert same_pose(ds.db_pose("db/0000.jpg"), tiny_world.pose("db/0000.png"))
    assert same_pose(ds.db_pose(gopro[0]), tiny_world.pose("db/" + gopro[0].rsplit("/", 1)[1]))
    assert ds.conditions == ["day", "night"]
    night = ds.queries("night")
    assert len(night) == 8
    assert night[0].name == "seq1_0000.jpg"  # result files use basenames for Aachen
    assert night[0].path == img_root / "query/night/nexus5x/seq1_0000.jpg"
    assert night[0].path.is_file()
    assert same_pose(night[0].gt_pose, tiny_world.pose("query/night/seq1_0000.png"))
    assert np.allclose(night[0].camera.K, tiny_world.camera("query/night/seq1_0000.png").K)
    assert read_query_list(out / "queries/day_time_queries_with_intrinsics.txt")


def test_image_names_that_leave_the_image_folder_are_refused(tiny_world, robotcar_rig, tmp_path):
    """Names in query lists and models become paths only inside the image folder (imp_core.paths.safe_join)."""
    from imp_core.datasets.colmap_io import write_model
    from imp_core.paths import UnsafePathError

    out = export_aachen(tiny_world, tmp_path / "aachen")
    qlist = out / "queries/night_time_queries_with_intrinsics.txt"
    qlist.write_text(qlist.read_text().replace("query/night/nexus5x/seq1_0000.jpg", "../../../escaped.jpg", 1))
    with pytest.raises(UnsafePathError, match=r"'../../../escaped.jpg' contains '..'"):
        open_dataset(out).queries("night")
    ds = open_dataset(out)
    entries = [(n, ds.db_camera(n), ds.db_pose(n)) for n in ds.db_names]
    write_model(out / "3D-models/aachen_v_1_1", entries + [("../../outside.jpg",) + entries[0][1:]])
    with pytest.raises(UnsafePathError, match=r"'../../outside.jpg' contains '..'"):
        open_dataset(out).db_image_path("../../outside.jpg")
    root = tmp_path / "rc"
    shutil.copytree(robotcar_rig.root, root)
    (root / "robotcar_v2_test.txt").write_text("sun/../../../../rear/1417176400000000.png\n")
    with pytest.raises(UnsafePathError, match=r"contains '..'"):
        open_dataset(root).queries()
    with pytest.raises(UnsafePathError, match=r"'/etc/passwd' is an absolute path"):
        tiny_world.image_file("/etc/passwd")


def test_aachen_near_miss_names_what_is_missing(tiny_world, tmp_path):
    out = export_aachen(tiny_world, tmp_path / "aachen", images_at_root=True)
    (out / "images_upright").rename(out / "photos")
    with pytest.raises(DatasetError,
                       match=r"Aachen.*missing the image folder.*images_upright/ and .*images/images_upright/"):
        open_dataset(out)
    (out / "photos").rename(out / "images_upright")
    (out / "images_upright" / "db").rename(out / "images_upright" / "database")  # images where the model has none
    (out / "images_upright" / "sequences").rename(out / "images_upright" / "seq")
    with pytest.raises(DatasetError, match=r"none of the 16 reference images .* is under .*images_upright \(looked "
                                           r"for e.g. .*images_upright/db/0000.jpg\)"):
        open_dataset(out).db_names
    shutil.rmtree(out / "3D-models")
    with pytest.raises(DatasetError, match=r"Aachen.*3D-models/aachen_v_1_1/cameras.bin"):
        open_dataset(out)


@pytest.fixture(scope="module")
def rig(robotcar_rig):
    """RobotCar Seasons rendered with the left/rear/right rig, in the real layout (test/conftest.py)."""
    return robotcar_rig


def _nvm_lines(path):
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    n = int(lines[1][0])
    return lines[2:2 + n]


def test_robotcar_reference_from_nvm_and_database(rig):
    root = rig.root
    assert not (root / "3D-models/colmap").exists()  # nothing but what the download has
    ds = open_dataset(root)
    assert isinstance(ds, RobotCarDataset)
    assert ds.split == "test"
    nvm = _nvm_lines(root / "3D-models/all-merged/all.nvm")
    assert len(nvm) == 30
    assert len(ds.db_names) == 30
    for tok in nvm:
        name, q, c = tok[0], np.array(tok[2:6], float), np.array(tok[6:9], float)
        assert name.startswith("./overcast-reference/")
        assert name.endswith(".png")  # as in the real all.nvm
        assert not (root / "images" / name).exists()
        jpg = name[2:-4] + ".jpg"
        assert ds.db_image_path(jpg).is_file()
        assert ds.model_name(jpg) == name[2:]  # the database name
        R = Pose.from_qvec(q, [0, 0, 0]).R
        assert np.allclose(ds.db_pose(jpg).R, R, atol=1e-6)
        assert np.allclose(ds.db_pose(jpg).t, -R @ c, atol=1e-6)
    # intrinsics come from the COLMAP database (real tables, .png names)
    con = sqlite3.connect(str(root / "3D-models/overcast-reference.db"))
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"cameras", "images", "keypoints", "matches"} <= tables
    db_names = {r[0] for r in con.execute("SELECT name FROM images")}
    con.close()
    assert db_names == {t[0][2:] for t in nvm}
    assert np.allclose(ds.db_camera("overcast-reference/left/1417176400000000.jpg").params, rig.cameras["left"].params)
    # the individual COLMAP text models give the same reference
    ind = open_dataset(root, reference="individual")
    assert sorted(ind.db_names) == sorted(ds.db_names)
    assert all(same_pose(ind.db_pose(n), ds.db_pose(n)) for n in ds.db_names)
    assert len(list((root / "3D-models/individual/colmap_reconstructions").glob("*/images.txt"))) == 2


def test_robotcar_queries_lists_cameras(rig):
    ds = open_dataset(rig.root)
    test = ds.queries()
    assert [f"{q.condition}/{q.name}" for q in test] == rig.test
    listed = (rig.root / "robotcar_v2_test.txt").read_text().split()
    assert all(re.fullmatch(r"rear/\d{16}\.png", n) for n in listed)  # the condition is found from the images
    assert all(re.fullmatch(r"rear/\d{16}\.jpg", q.name) and q.gt_pose is None for q in test)  # no condition
    assert {q.condition for q in test} == {"overcast-summer", "sun"} == set(ds.conditions)
    train = ds.queries(split="train")
    assert [f"{q.condition}/{q.name}" for q in train] == rig.train
    for q in train:
        assert same_pose(q.gt_pose, rig.query_poses[f"{q.condition}/{q.name}"])
        assert q.stamp == int(q.name.split("/")[1][:-4]) / 1e6
    every = ds.queries(split="all")
    assert len(every) == 36
    assert {q.name.split("/")[0] for q in every} == {"left", "rear", "right"}
    # each camera has its own intrinsics; the size comes from the images
    cams = {q.name.split("/")[0]: q.camera for q in every}
    for c in ("left", "rear", "right"):
        assert cams[c].model == "SIMPLE_RADIAL"
        assert (cams[c].width, cams[c].height) == (400, 300)
        assert np.allclose(cams[c].params, rig.cameras[c].params, atol=1e-5)
    ext = ds.extrinsics
    assert all(same_pose(ext[c], rig.extrinsics[c]) for c in ("left", "rear", "right"))
    # extrinsics are [R c; 0 1], comma separated
    rows = (rig.root / "extrinsics/rear_extrinsics.txt").read_text().split()
    assert len(rows) == 4
    assert all(len(r.split(",")) == 4 for r in rows)


def test_robotcar_near_misses(rig, tmp_path):
    root = tmp_path / "rc"
    shutil.copytree(rig.root, root)
    # test lists with the condition in the names work too; a name without its image is named in the error
    (root / "robotcar_v2_test.txt").write_text("".join(f"{n}\n" for n in rig.test))
    assert [f"{q.condition}/{q.name}" for q in open_dataset(root).queries()] == rig.test
    (root / "robotcar_v2_test.txt").write_text("rear/1417170000000000.png\n")
    with pytest.raises(DatasetError, match=r"robotcar_v2_test.txt: 'rear/1417170000000000.jpg' is not under any"):
        open_dataset(root).queries()
    (root / "3D-models/overcast-reference.db").rename(root / "3D-models/other.db")
    with pytest.raises(DatasetError, match=r"overcast-reference.db not found.*3D-models/overcast-reference.db.*and"):
        open_dataset(root).db_names
    (root / "3D-models/other.db").rename(root / "overcast-reference.db")  # at the root is fine too
    assert len(open_dataset(root).db_names) == 30
    (root / "images/overcast-reference").rename(root / "images/reference")
    with pytest.raises(DatasetError, match=r"none of the 30 reference images .*overcast-reference/left/\d+\.jpg"):
        open_dataset(root).db_names
    (root / "images/reference").rename(root / "images/overcast-reference")
    (root / "3D-models/all-merged/all.nvm").unlink()
    with pytest.raises(DatasetError, match=r"all-merged/all.nvm does not exist.*individual"):
        open_dataset(root).db_names
    shutil.rmtree(root / "intrinsics")
    with pytest.raises(DatasetError, match=r"RobotCar Seasons \(found images/overcast-reference.*intrinsics/"):
        open_dataset(root)
    (root / "robotcar_v2_train.txt").write_text("night/rear/1.png 1 0 0 0 0 1 0 0 0 0 1\n")
    with pytest.raises(DatasetError, match=r"robotcar_v2_train.txt:1: expected 'name' \+ 12 or 16"):
        read_train_list(root / "robotcar_v2_train.txt")


def test_robotcar_export_from_world(tiny_world, tmp_path):
    out = export_robotcar(tiny_world, tmp_path / "robotcar")
    ds = open_dataset(out)
    assert isinstance(ds, RobotCarDataset)
    assert ds.conditions == ["night", "overcast-summer"]
    qs = ds.queries(split="all")
    assert len(qs) == 16
    assert all(q.name.startswith("rear/") and q.name.endswith(".jpg") for q in qs)
    night = [q for q in qs if q.condition == "night"]
    cam = night[0].camera
    assert cam.model == "SIMPLE_RADIAL"
    assert (cam.width, cam.height) == (640, 480)
    assert cam.params[3] == 0.0
    assert np.allclose(cam.K, tiny_world.camera(tiny_world.query_names("night")[0]).K)
    # stamps come from the microsecond file names and keep the 10 Hz spacing
    assert np.allclose(np.diff([q.stamp for q in night]), 0.1, atol=1e-6)
    train = ds.queries(split="train")
    assert len(train) == 8
    assert all(q.gt_pose is not None for q in train)
    names = tiny_world.query_names("day")
    assert same_pose(train[0].gt_pose, tiny_world.pose(names[0]))
    assert len(ds.db_names) == 16
    assert all(n.startswith("overcast-reference/rear/") for n in ds.db_names)
    assert same_pose(ds.db_pose(ds.db_names[0]), tiny_world.pose(tiny_world.db_names[0]))


def test_robotcar_intrinsics_file(tmp_path):
    p = tmp_path / "rear_intrinsics.txt"
    p.write_text("fx 400.000000\nfy 400.000000\ncx 508.222931\ncy 498.187378\n")
    cam = read_intrinsics(p)
    assert cam.to_line() == "SIMPLE_RADIAL 1024 1024 400.000000 508.222931 498.187378 0.000000"
    p.write_text("fx 400\nfy 410\ncx 500\ncy 490\n")
    assert read_intrinsics(p, (640, 480)).to_line().startswith("PINHOLE 640 480 400.000000 410.000000")
    p.write_text("fx 400\nfy 400\ncx\n")
    with pytest.raises(DatasetError, match=r"rear_intrinsics.txt:3"):
        read_intrinsics(p)


def test_nvm_reader(tmp_path):
    rng = np.random.default_rng(1)
    entries = []
    for i in range(4):
        q = rng.normal(size=4)
        entries.append((f"a/{i}.png", 400.0 + i, Pose.from_qvec(q / np.linalg.norm(q), rng.normal(size=3) * 5)))
    path = write_nvm(tmp_path / "m.nvm", entries, [(np.array([1.0, 2, 3]), [(0, 5, 10.0, 20.0), (2, 7, 1.0, 2.0)])])
    text = path.read_text().replace("a/0.png", "./a/0.png")  # some exports prefix names with ./
    path.write_text(text)
    model = read_nvm(path, points=True)
    assert [im.name for im in model.images] == [e[0] for e in entries]
    assert model.num_points == 1
    assert np.allclose(model.points, [[1, 2, 3]])
    for im, (_, f, pose) in zip(model.images, entries):
        assert im.focal == f
        assert same_pose(im.pose, pose)
    path.write_text("NVM_V3\n\n2\na.png 400 1 0 0 0 1 2 3 0 0\nb.png 400 1 0 0\n")
    with pytest.raises(DatasetError, match=r"m.nvm:5: expected 'name f qw qx qy qz cx cy cz r 0'"):
        read_nvm(path)
    path.write_text("PLY\n")
    with pytest.raises(DatasetError, match=r"m.nvm:1: not an NVM_V3 file"):
        read_nvm(path)


def test_open_dataset_names_what_it_looked_for(tmp_path):
    with pytest.raises(DatasetError, match=r"world.json.*aachen_v_1_1.*intrinsics"):
        open_dataset(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "nothing")


def test_world_command_reuses_and_exports(tiny_world, tmp_path, capsys):
    from imp_core.world import commands

    parser = argparse.ArgumentParser(prog="imp")
    commands.register(parser.add_subparsers())
    args = parser.parse_args(["world", "--out", str(tiny_world.root), "--preset", "tiny", "--quiet",
                              "--export", "robotcar", str(tmp_path / "rc")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "16 db" in out
    assert "exported robotcar" in out
    assert isinstance(open_dataset(tmp_path / "rc"), RobotCarDataset)
