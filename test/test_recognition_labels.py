"""Label generation for LBR: clustering, mask painting, depth ground truth, LBR colour masks, instance index."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from imp_core.eval.recognition.metrics import RecognitionScore
from imp_core.recognition.instances import InstanceIndex, cluster_points
from imp_core.recognition.masks import (
    dense_labels_from_depth,
    fill_label_mask,
    keypoint_labels,
    read_code_gid,
    read_lbr_mask,
    read_mask,
    save_mask,
)
from imp_core.types import Camera, Pose


def test_cluster_points_recovers_separated_blobs():
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0, 0], [20, 0, 0], [0, 20, 0], [0, 0, 20.0]])
    truth = np.repeat(np.arange(4), [50, 80, 30, 60])
    xyz = centres[truth] + rng.normal(0, 1.0, (len(truth), 3))
    labels, cent = cluster_points(xyz, 4, "xyz", seed=0)
    assert labels.min() == 1
    assert labels.max() == 4
    # one cluster per blob, ids sorted by size (the 80-point blob is instance 1)
    for t in range(4):
        assert len(np.unique(labels[truth == t])) == 1
    assert np.all(labels[truth == 1] == 1)
    assert np.allclose(cent[0], centres[1], atol=0.5)
    # ground-plane mode ignores the height axis: blobs 0 and 3 differ only in z
    lab_xy, _ = cluster_points(xyz, 3, "xy", seed=0)
    assert len(np.unique(lab_xy[(truth == 0) | (truth == 3)])) == 1
    with pytest.raises(ValueError, match="instances.mode"):
        cluster_points(xyz, 3, "xw")
    with pytest.raises(ValueError, match="num_instances"):
        cluster_points(xyz[:2], 3)


def test_fill_label_mask_and_keypoint_labels():
    kp = np.array([[10, 10], [50, 10], [90, 40], [5, 5]], np.float32)
    lab = np.array([1, 2, 2, 0])
    mask = fill_label_mask(kp, lab, (100, 50), radius=8.0)
    assert mask.shape == (50, 100)
    assert mask[10, 10] == 1
    assert mask[14, 14] == 1
    assert mask[10, 55] == 2
    assert mask[45, 10] == 0  # farther than the radius from every labelled point
    assert set(np.unique(mask)) == {0, 1, 2}
    assert list(keypoint_labels(np.array([[10, 12], [52, 9], [-3, 4]]), mask)) == [1, 2, 0]


def test_dense_labels_from_depth_on_a_plane():
    cam = Camera("PINHOLE", 64, 48, [50.0, 50.0, 32.0, 24.0])
    pose = Pose()  # camera at the origin looking along +z
    depth = np.full((48, 64), 10.0, np.float32)
    depth[:, :5] = 0  # invalid
    # map points on the plane z = 10: x < 0 -> instance 1, x >= 0 -> instance 2
    gx, gy = np.meshgrid(np.linspace(-7, 7, 57), np.linspace(-5, 5, 41))
    pts = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, 10.0)], 1)
    plabels = np.where(pts[:, 0] < 0, 1, 2)
    out = dense_labels_from_depth(depth, cam, pose, pts, plabels, max_dist=0.5)
    assert np.all(out[:, :5] == 0)
    assert np.all(out[:, 8:28] == 1)
    assert np.all(out[:, 36:60] == 2)


def test_lbr_colour_masks(tmp_path):
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[:4] = (30, 20, 10)  # B, G, R -> code = 10*65536 + 20*256 + 30
    bgr[4:, :4] = (1, 0, 0)  # code 1, not in the list -> 0
    cv2.imwrite(str(tmp_path / "m.png"), bgr)
    (tmp_path / "codes.txt").write_text(f"{10 * 65536 + 20 * 256 + 30} 7\n0 0\n")
    ids = read_lbr_mask(tmp_path / "m.png", read_code_gid(tmp_path / "codes.txt"))
    assert np.all(ids[:4] == 7)
    assert np.all(ids[4:] == 0)
    (tmp_path / "bad.txt").write_text("12 3 4\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        read_code_gid(tmp_path / "bad.txt")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_lbr_mask(tmp_path / "nope.png", {})


def test_mask_png_and_index_roundtrip(tmp_path):
    m = np.zeros((20, 30), np.int32)
    m[2:8, 3:9] = 300
    m[10:, 10:] = 2
    save_mask(tmp_path / "sub" / "a.jpg.png", m)
    assert np.array_equal(read_mask(tmp_path / "sub" / "a.jpg.png"), m)
    idx = InstanceIndex(400)
    idx.add("sub/a.jpg", m)
    idx.add("b.jpg", np.full((4, 4), 2))
    idx.save(tmp_path / "instances.json")
    back = InstanceIndex.load(tmp_path)
    assert back.image_instances == {"sub/a.jpg": {2: 200, 300: 36}, "b.jpg": {2: 16}}
    assert sorted(back.images_of(2)) == ["b.jpg", "sub/a.jpg"]
    assert back.images_of(5) == []
    with pytest.raises(FileNotFoundError, match="imp instances"):
        InstanceIndex.load(tmp_path / "missing")


def test_recognition_score():
    s = RecognitionScore(4)
    gt = np.zeros((10, 10), np.int64)
    gt[:, :5] = 1
    gt[:, 5:] = 2
    pred = gt.copy()
    pred[:, 5:7] = 3
    s.add(pred, gt, [(2, 0.9)])
    s.add(gt, gt, [(3, 0.8)])
    r = s.summary()
    assert r["top1"] == 0.5
    assert r["images"] == 2
    assert r["mIoU"] == pytest.approx((1.0 + 80 / 100) / 2)


def test_assign_to_centroids_reuses_an_instance_definition():
    cent = np.array([[0, 0, 0], [10, 0, 5], [np.nan] * 3, [0, 10, 0.0]])
    xyz = np.array([[1, 1, 9], [9, -1, 0], [0.5, 9, 3], [100, 0, 100.0]])
    from imp_core.recognition.instances import assign_to_centroids

    assert list(assign_to_centroids(xyz, cent, "xy")) == [1, 2, 4, 2]
    assert list(assign_to_centroids(xyz[:2], cent, "xyz")) == [1, 2]
