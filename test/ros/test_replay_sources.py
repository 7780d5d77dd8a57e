"""The replay node's frame sources on the real benchmark layouts (Aachen v1.1, RobotCar Seasons exported from the
tiny world) and on bags (no DDS: the sources are plain generators)."""
from __future__ import annotations

import numpy as np
import pytest

from imp_core.datasets import open_dataset
from imp_core.world.export import export
from imp_core.world.synthetic import SyntheticWorld
from imp_ros.bags import dataset_to_bag
from imp_ros.replay_node import bag_frames, dataset_frames


@pytest.mark.parametrize("kind", ["synthetic", "aachen", "robotcar"])
def test_dataset_layouts(ros_world, tmp_path, kind):
    w = SyntheticWorld(ros_world)
    root = ros_world if kind == "synthetic" else export(w, kind, tmp_path / kind)
    queries = open_dataset(root).queries()
    frames = list(dataset_frames(str(root), "", "*", 10.0, "cam"))
    assert len(frames) == len(queries) > 0
    f = frames[0]
    assert f.rgb.shape == (f.info.height, f.info.width, 3)
    assert f.info.header.frame_id == "cam"
    assert f.info.k[0] > 0
    assert f.name in {q.name for q in queries}
    assert [fr.stamp_ns for fr in frames] == sorted(fr.stamp_ns for fr in frames)
    if kind == "synthetic":  # ground truth travels with the frames (map_from_cam)
        q = next(q for q in queries if q.name == f.name)
        assert np.allclose(f.map_from_cam.matrix, q.gt_pose.inverse().matrix)
    with pytest.raises(ValueError, match="no query matches"):
        list(dataset_frames(str(root), "", "nothing/*", 10.0, "cam"))


def test_bag_source_pairs_info_and_ground_truth(ros_world, tmp_path):
    w = SyntheticWorld(ros_world)
    bag = dataset_to_bag(w, tmp_path / "b", "sqlite3", "night", max_frames=3)
    frames = list(bag_frames(str(bag), "", "", "/ground_truth/camera_pose"))
    assert len(frames) == 3
    assert all(f.info is not None and f.map_from_cam is not None for f in frames)
    night = sorted(w.queries("night"), key=lambda q: q.stamp)[:3]
    for f, q in zip(frames, night):
        assert np.allclose(f.map_from_cam.matrix, q.gt_pose.inverse().matrix, atol=1e-6)
    with pytest.raises(Exception, match="has no topic '/nope'"):
        list(bag_frames(str(bag), "/nope", "", ""))
