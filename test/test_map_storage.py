"""Map storage at scale: index.h5, features read on demand through an LRU cache, old maps, corrupt files."""
from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from imp_core.mapping import LocalizationMap, MapError
from imp_core.mapping import format as fmt
from imp_core.mapping.features_io import h5_key, read_features
from imp_core.types import Camera, Pose


@pytest.fixture
def map_copy(tiny_map, tmp_path):
    d = tmp_path / "map"
    shutil.copytree(tiny_map, d, ignore=shutil.ignore_patterns("build"))
    return d


def _old_covisible(rec, name):
    """What the eager loader answered (tracks of the COLMAP model, ties: larger image id first)."""
    img = rec.find_image_with_name(name)
    counts = {}
    for p in img.points2D:
        if p.has_point3D():
            for el in rec.point3D(p.point3D_id).track.elements:
                counts[el.image_id] = counts.get(el.image_id, 0) + 1
    ranked = sorted(((c, i) for i, c in counts.items() if i != img.image_id), reverse=True)
    return [rec.images[i].name for _, i in ranked]


def _assert_same_as_eager(m: LocalizationMap, map_dir):
    """Every accessor equals what the eager loader read from the COLMAP model and features.h5."""
    import pycolmap

    rec = pycolmap.Reconstruction(str(map_dir / "reconstruction"))
    assert m.names == sorted(img.name for img in rec.images.values() if img.has_pose)
    ids = np.array(sorted(rec.points3D))
    xyz = np.stack([rec.points3D[i].xyz for i in ids])
    got_ids, got_xyz = m.all_points3D()
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got_xyz, xyz)
    for name in m.names:
        old, extra = read_features(map_dir / "features.h5", name, with_extra=("point3D_ids",))
        new = m.features(name)
        for a in ("keypoints", "descriptors", "scores"):
            np.testing.assert_array_equal(getattr(new, a), getattr(old, a))
            assert getattr(new, a).dtype == np.float32
        assert new.image_size == old.image_size
        assert new.kind == old.kind
        np.testing.assert_array_equal(m.point3D_ids(name), extra["point3D_ids"])
        img = rec.find_image_with_name(name)
        pose = Pose.from_pycolmap(img.cam_from_world())
        np.testing.assert_array_equal(m.pose(name).R, pose.R)
        np.testing.assert_array_equal(m.pose(name).t, pose.t)
        cam = Camera.from_pycolmap(rec.cameras[img.camera_id])
        assert (m.camera(name).model, m.camera(name).width, m.camera(name).height) == (cam.model, cam.width,
                                                                                          cam.height)
        np.testing.assert_array_equal(m.camera(name).params, cam.params)
        np.testing.assert_array_equal(m.keypoint_xyz(name), m.points3D_xyz(extra["point3D_ids"]))
        assert m.covisible(name, 1000) == _old_covisible(rec, name)
    np.testing.assert_allclose(m.centers(), np.stack([m.pose(n).center for n in m.names]), atol=1e-12)


def test_build_writes_index_and_load_reads_no_features(tiny_map, monkeypatch):
    assert (tiny_map / fmt.INDEX_FILE).is_file()
    with h5py.File(tiny_map / "features.h5", "r") as f:  # compact on disk: fp16 descriptors, int32 point ids
        g = f[next(iter(f.keys()))]
        assert g["descriptors"].dtype == np.float16
        assert g["point3D_ids"].dtype == np.int32
    # start-up reads neither the COLMAP model nor any image's features
    monkeypatch.setattr(fmt, "_read_reconstruction", lambda d: pytest.fail("COLMAP model read at start-up"))
    m = LocalizationMap.load(tiny_map)
    info = m.cache_info()
    assert info["entries"] == 0
    assert info["misses"] == 0
    assert info["bytes"] == 0
    assert m.global_descriptors.shape[0] == len(m.names)
    name = m.names[3]
    f = m.features(name)
    assert m.features(name) is f
    assert m.cache_info()["hits"] == 1
    assert m.cache_info()["misses"] == 1
    m.close()


def test_on_demand_reads_equal_the_eager_reads(tiny_map):
    _assert_same_as_eager(LocalizationMap.load(tiny_map), tiny_map)


def test_lru_cache_respects_its_bound(tiny_map):
    full = LocalizationMap.load(tiny_map)
    per_image = full.features(full.names[0]).descriptors.nbytes  # SIFT: 2048 x 128 x 4 B = 1 MiB
    m = LocalizationMap.load(tiny_map, cache_mb=2.5 * per_image / 2**20)
    first = {n: m.features(n).descriptors.copy() for n in m.names}
    peak = 0
    for _ in range(2):
        for n in m.names:
            m.keypoint_xyz(n)  # grows the entry after it was counted
            info = m.cache_info()
            peak = max(peak, info["bytes"])
            assert info["bytes"] <= info["limit_bytes"], info
            assert 1 <= info["entries"] < len(m.names) // 2
    assert m.cache_info()["evictions"] >= len(m.names)
    for n in m.names:  # re-read after eviction: the same arrays
        np.testing.assert_array_equal(m.features(n).descriptors, first[n])
    assert peak > per_image
    # cache_mb=0 keeps only the image read last; everything still answers
    z = LocalizationMap.load(tiny_map, cache_mb=0)
    for n in z.names[:4]:
        assert len(z.features(n)) == len(z.point3D_ids(n))
        assert z.cache_info()["entries"] == 1


def _make_old_format(map_dir, float32_descriptors=False):
    """The layout imp wrote before index.h5: no index, int64 point ids (and optionally float32 descriptors)."""
    (map_dir / fmt.INDEX_FILE).unlink()
    with h5py.File(map_dir / "features.h5", "a") as f:
        for k in f.keys():
            ids = f[k]["point3D_ids"][()].astype(np.int64)
            del f[k]["point3D_ids"]
            f[k].create_dataset("point3D_ids", data=ids)
            if float32_descriptors:
                d = f[k]["descriptors"][()].astype(np.float32)
                del f[k]["descriptors"]
                f[k].create_dataset("descriptors", data=d)


def test_old_format_map_loads_and_upgrades(map_copy, caplog, monkeypatch):
    from imp_core.cli import main

    _make_old_format(map_copy, float32_descriptors=True)
    with caplog.at_level("INFO", logger="imp_core.mapping.format"):
        m = LocalizationMap.load(map_copy)
    assert "imp map upgrade" in caplog.text
    _assert_same_as_eager(m, map_copy)
    assert m.point3D_ids(m.names[0]).dtype == np.int32  # compact in memory whatever the file holds
    m.close()
    assert main(["map", "upgrade", str(map_copy)]) == 0
    assert (map_copy / fmt.INDEX_FILE).is_file()
    with h5py.File(map_copy / "features.h5", "r") as f:
        g = f[next(iter(f.keys()))]
        assert g["descriptors"].dtype == np.float16
        assert g["point3D_ids"].dtype == np.int32
    monkeypatch.setattr(fmt, "_read_reconstruction", lambda d: pytest.fail("COLMAP model read at start-up"))
    up = LocalizationMap.load(map_copy)
    monkeypatch.undo()  # the upgraded map answers exactly as before
    _assert_same_as_eager(up, map_copy)


def test_stale_index_is_ignored(map_copy, caplog):
    meta = json.loads((map_copy / "map.json").read_text())
    (map_copy / "map.json").write_text(json.dumps({**meta, "created": "2000-01-01T00:00:00Z"}))
    with caplog.at_level("WARNING", logger="imp_core.mapping.format"):
        m = LocalizationMap.load(map_copy)
    assert "another build" in caplog.text
    assert len(m.names) == len(m.global_descriptors)


def test_truncated_or_corrupt_files_name_the_file_and_the_fix(map_copy):
    feats = map_copy / "features.h5"
    orig = feats.read_bytes()
    feats.write_bytes(orig[: len(orig) // 2])
    with pytest.raises(MapError, match=f"{feats}.*truncated.*imp map build"):
        LocalizationMap.load(map_copy)
    feats.write_bytes(orig)
    index = map_copy / fmt.INDEX_FILE
    good_index = index.read_bytes()
    index.write_bytes(good_index[:300])
    with pytest.raises(MapError, match=f"{index}.*imp map upgrade"):
        LocalizationMap.load(map_copy)
    index.write_bytes(good_index)
    # an image group damaged on disk: start-up does not read it, the frame that needs it gets an error naming the
    # file and the image (and other images still answer)
    name = sorted(LocalizationMap.load(map_copy).names)[1]
    with h5py.File(feats, "a") as f:
        del f[h5_key(name)]["descriptors"]
    m = LocalizationMap.load(map_copy)
    with pytest.raises(MapError, match=f"{feats}.*{name}"):
        m.features(name)
    assert len(m.features(m.names[0])) > 0
