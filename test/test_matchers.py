"""Mutual-NN matcher on synthetic descriptors; LightGlue (ALIKED / DISK) against SIFT+NN on a real pair."""
from __future__ import annotations

import time

import numpy as np
import pytest
from test_features import load_rgb

from imp_core.features.base import create_extractor
from imp_core.features.utils import empty_features
from imp_core.matching.base import MATCHERS, create_matcher
from imp_core.matching.lightglue import rename_lightglue_keys
from imp_core.types import Features, Matches


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def feats(desc, kind="synthetic", size=(640, 480)):
    n = len(desc)
    if n == 0:
        f = empty_features(desc.shape[1], size)
        f.kind = kind
        return f
    rng = np.random.default_rng(n)
    kp = rng.uniform(0, min(size) - 1, (n, 2))
    return Features(kp, desc, np.ones(n), size, kind)


def f_inliers(f0, f1, m, thresh=1.0):
    """Inliers of a MAGSAC++ fundamental matrix fitted to the matches."""
    import cv2

    if len(m) < 8:
        return 0
    p0 = f0.keypoints[m.indices[:, 0]].astype(np.float64)
    p1 = f1.keypoints[m.indices[:, 1]].astype(np.float64)
    _, mask = cv2.findFundamentalMat(p0, p1, cv2.USAC_MAGSAC, thresh, 0.999, 10000)
    return 0 if mask is None else int(mask.sum())


@pytest.fixture(scope="module")
def nn():
    return create_matcher({"name": "nn", "device": "cpu"})


def test_mutual_nn_recovers_a_permutation(nn):
    rng = np.random.default_rng(0)
    d0 = unit(rng.normal(size=(600, 128)))
    perm = rng.permutation(600)
    d1 = unit(d0[perm] + 0.05 * rng.normal(size=d0.shape))  # d1[j] is a noisy copy of d0[perm[j]]
    m = nn.match(feats(d0), feats(d1))
    assert len(m) == 600
    inv = np.argsort(perm)
    np.testing.assert_array_equal(m.indices[:, 1], inv[m.indices[:, 0]])
    np.testing.assert_allclose(m.scores, np.sum(d0[m.indices[:, 0]] * d1[m.indices[:, 1]], 1), atol=1e-5)
    chunked = create_matcher({"name": "nn", "device": "cpu", "chunk_size": 7}).match(feats(d0), feats(d1))
    np.testing.assert_array_equal(chunked.indices, m.indices)


def test_ratio_test_removes_ambiguous_matches():
    rng = np.random.default_rng(1)
    base = unit(rng.normal(size=(300, 64)))
    twins = unit(base[:50] + 0.002 * rng.normal(size=(50, 64)))  # a near-copy of the first 50 references
    query = unit(base + 0.02 * rng.normal(size=base.shape))
    refs = np.concatenate([base, twins])
    plain = create_matcher({"name": "nn", "device": "cpu"}).match(feats(query), feats(refs))
    assert len(plain) >= 290  # mutual NN keeps one of each pair of twins
    ratio = create_matcher({"name": "nn", "device": "cpu", "ratio_threshold": 0.8}).match(feats(query), feats(refs))
    assert set(ratio.indices[:, 0]) == set(range(50, 300))
    np.testing.assert_array_equal(ratio.indices[:, 1], ratio.indices[:, 0])


def test_distance_threshold_and_mutual_flag():
    rng = np.random.default_rng(2)
    refs = unit(rng.normal(size=(200, 32)))
    query = np.concatenate([unit(refs[:100] + 0.03 * rng.normal(size=(100, 32))), unit(rng.normal(size=(100, 32)))])
    m = create_matcher({"name": "nn", "device": "cpu", "distance_threshold": 0.5}).match(feats(query), feats(refs))
    np.testing.assert_array_equal(np.sort(m.indices[:, 0]), np.arange(100))
    one_way = create_matcher({"name": "nn", "device": "cpu", "mutual": False}).match(feats(query), feats(refs))
    assert len(one_way) == 200  # every query gets its nearest reference
    with pytest.raises(ValueError, match="ratio_threshold"):
        create_matcher({"name": "nn", "ratio_threshold": 1.5})


def test_match_many_equals_pairwise_and_handles_empty(nn):
    rng = np.random.default_rng(3)
    q = feats(unit(rng.normal(size=(400, 128))))
    refs = [feats(unit(np.concatenate([q.descriptors[:k] + 0.1 * rng.normal(size=(k, 128)),
                                        rng.normal(size=(150, 128))]))) for k in (100, 250, 0)]
    refs.insert(1, feats(np.zeros((0, 128), np.float32)))
    many = nn.match_many(q, refs)
    assert len(many) == 4
    assert len(many[1]) == 0
    for r, m in zip(refs, many):
        single = nn.match(q, r)
        np.testing.assert_array_equal(m.indices, single.indices)
        np.testing.assert_allclose(m.scores, single.scores, atol=1e-6)
    assert len(many[0]) >= 95
    assert len(many[2]) >= 240
    empty_q = feats(np.zeros((0, 128), np.float32))
    assert [len(m) for m in nn.match_many(empty_q, refs)] == [0, 0, 0, 0]
    assert nn.match_many(q, []) == []


def test_empty_features_and_dim_mismatch(nn):
    empty = feats(np.zeros((0, 128), np.float32))
    full = feats(unit(np.random.default_rng(4).normal(size=(10, 128))))
    assert isinstance(nn.match(empty, full), Matches)
    assert len(nn.match(empty, full)) == 0
    assert len(nn.match(full, empty)) == 0
    with pytest.raises(ValueError, match="dimension"):
        nn.match(full, feats(unit(np.ones((10, 64)))))


def test_nn_8k_by_8k_runs_chunked(nn):
    rng = np.random.default_rng(5)
    d0 = unit(rng.normal(size=(8192, 128)))
    d1 = unit(d0[::-1] + 0.05 * rng.normal(size=d0.shape))
    t = time.perf_counter()
    m = nn.match(feats(d0), feats(d1))
    assert time.perf_counter() - t < 30
    assert len(m) == 8192
    assert np.all(m.indices[:, 0] + m.indices[:, 1] == 8191)


def test_lightglue_refuses_other_features():
    assert "lightglue" in MATCHERS.names()
    lg = create_matcher({"name": "lightglue", "device": "cpu"})
    sift = feats(unit(np.ones((5, 128))), kind="sift")
    with pytest.raises(ValueError, match=r"\['aliked', 'disk'\].*'sift'"):
        lg.match(sift, sift)
    with pytest.raises(ValueError, match="aliked.*disk"):
        lg.match(feats(unit(np.ones((5, 128))), "aliked"), feats(unit(np.ones((5, 128))), "disk"))
    with pytest.raises(ValueError, match="features"):
        create_matcher({"name": "lightglue", "features": "superpoint"})
    assert len(lg.match(feats(np.zeros((0, 128), np.float32), "aliked"), feats(unit(np.ones((5, 128))), "aliked"))) == 0


def test_lightglue_accepts_keypoints_on_the_border_pixel():
    """Centre-of-pixel keypoints may lie up to 0.5 px outside [0, size] (a border detection scaled back from an
    upsampled image); kornia's LightGlue refused the whole pair before they were clipped."""
    rng = np.random.default_rng(0)
    desc = unit(rng.standard_normal((64, 128)))
    f0, f1 = feats(desc, "aliked"), feats(desc, "aliked")
    f0.keypoints[:2] = [[-0.4, 10.0], [639.4, 479.45]]
    m = create_matcher({"name": "lightglue", "device": "cpu"}).match(f0, f1)
    assert len(m) > 0
    assert f0.keypoints[0, 0] == np.float32(-0.4)  # the caller's keypoints are not modified


def test_lightglue_key_renames():
    sd = {"matcher.self_attn.3.Wqkv.weight": 1, "cross_attn.10.to_v.bias": 2, "posenc.Wr.weight": 3,
          "transformers.0.self_attn.ffn.0.weight": 4}
    assert rename_lightglue_keys(sd) == {"transformers.3.self_attn.Wqkv.weight": 1,
                                         "transformers.10.cross_attn.to_v.bias": 2, "posenc.Wr.weight": 3,
                                         "transformers.0.self_attn.ffn.0.weight": 4}


@pytest.fixture(scope="module")
def pair(shared_data):
    return load_rgb(shared_data / "DSC_0410.JPG"), load_rgb(shared_data / "DSC_0411.JPG")


@pytest.fixture(scope="module")
def sift_nn_inliers(pair, nn):
    ext = create_extractor({"name": "sift", "device": "cpu"})
    f0, f1 = ext.extract(pair[0]), ext.extract(pair[1])
    return f_inliers(f0, f1, nn.match(f0, f1))


@pytest.mark.parametrize("kind", ["aliked", "disk"])
def test_lightglue_real_pair_beats_sift_nn(kind, pair, sift_nn_inliers):
    ext = create_extractor({"name": kind, "device": "cpu"})
    f0, f1 = ext.extract(pair[0]), ext.extract(pair[1])
    m = create_matcher({"name": "lightglue", "device": "cpu"}).match(f0, f1)
    assert len(m) >= 600
    assert len(np.unique(m.indices[:, 0])) == len(m)
    assert len(np.unique(m.indices[:, 1])) == len(m)
    assert np.all((m.scores > 0.1) & (m.scores <= 1.0))
    inl = f_inliers(f0, f1, m)
    assert inl / len(m) >= 0.7
    assert inl > 1.3 * sift_nn_inliers > 0


def test_benchmark_script_runs(tmp_path, shared_data, monkeypatch):
    import json
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_features

    results = bench_features.main(["--extractors", "sift", "--runs", "1", "--device", "cpu", "--out", str(tmp_path),
                                   "--images", str(shared_data / "DSC_0410.JPG"), str(shared_data / "DSC_0411.JPG")])
    saved = json.loads((tmp_path / "bench_features.json").read_text())
    assert saved["results"][0]["matchers"][0]["matcher"] == "nn"
    assert results[0]["matchers"][0]["f_inliers"] > 100
    assert results[0]["extract_peak_rss_mb"] > 0
    assert (tmp_path / "bench_features.png").stat().st_size > 0
