"""Recognition network (LBR checkpoint layout), augmentation, training (loss decreases, resume), label matcher."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from imp_core.matching.base import create_matcher
from imp_core.recognition.network import RecognitionNet, load_model
from imp_core.recognition.night import night_style
from imp_core.recognition.recognizer import Recognizer, rank_instances
from imp_core.training.recognition.augment import Augmenter
from imp_core.training.recognition.train import LOG_FILE, MODEL_FILE, TRAIN_STATE, train_recognition
from imp_core.types import Features

LBR_CONF = {"encoder": "resnext101_32x4d", "classes": 452, "psp_out_channels": 2048, "input_bgr": True,
            "input_size": [256, 256]}


def test_lbr_layout_matches_pspnetf_state_dict():
    net = RecognitionNet(LBR_CONF)
    sd = net.state_dict()
    # smp 0.1.3 ResNeXt101-32x4d encoder without fc: 42.13 M parameters; layer4 present although depth = 4
    assert sum(p.numel() for p in net.encoder.parameters()) == 42_128_704
    assert sd["encoder.layer3.22.conv2.weight"].shape == (512, 16, 3, 3)
    assert sd["encoder.layer4.0.downsample.0.weight"].shape == (2048, 1024, 1, 1)
    assert "decoder.psp.blocks.0.pool.1.0.bias" in sd
    assert "decoder.psp.blocks.0.pool.1.1.weight" not in sd
    assert sd["decoder.psp.blocks.3.pool.1.1.running_mean"].shape == (256,)
    assert sd["decoder.conv.0.weight"].shape == (2048, 2048, 1, 1)
    assert sd["seghead.0.weight"].shape == (452, 2048, 3, 3)
    assert sd["cls_head.2.weight"].shape == (452, 1024)
    assert net.encoder.out_channels == 1024


def test_bare_state_dict_loads_strictly(tmp_path):
    conf = {"encoder": "resnext101_32x4d", "encoder_conf": {"layers": [1, 1, 1, 1]}, "classes": 7,
            "psp_out_channels": 32, "input_bgr": True, "input_size": [64, 64]}
    net = RecognitionNet(conf).eval()
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, tmp_path / "lbr.pth")
    with pytest.raises(ValueError, match="bare state dict"):
        load_model(tmp_path / "lbr.pth")
    loaded = load_model(tmp_path / "lbr.pth", conf)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net(x)["masks"], loaded(x)["masks"], atol=1e-5)
    with pytest.raises(ValueError, match="does not fit"):
        load_model(tmp_path / "lbr.pth", {**conf, "classes": 8})
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model(tmp_path / "missing.pt")


def test_forward_and_descriptor():
    net = RecognitionNet({"classes": 5}).eval()
    with torch.no_grad():
        out = net(net.normalize(torch.rand(2, 3, 96, 128)))
        d = net.global_descriptor(out["feat"])
    assert out["masks"].shape == (2, 5, 12, 16)
    assert out["cls"].shape == (2, 5)
    assert torch.allclose(d.norm(dim=1), torch.ones(2))
    with pytest.raises(KeyError, match="unknown recognition encoder 'tiny'"):
        RecognitionNet({"encoder": "tiny"})


def test_augmenter_geometry_and_night_style():
    rng = np.random.default_rng(0)
    img = np.full((120, 160, 3), 180, np.uint8)
    mask = np.zeros((120, 160), np.int64)
    mask[:, 80:] = 3
    x, y = Augmenter({"size": [80, 60]})(img, mask, rng)
    assert x.shape == (3, 60, 80)
    assert x.dtype == np.float32
    assert y.shape == (60, 80)
    assert set(np.unique(y)) <= {0, 3}
    dark = night_style(img, np.random.default_rng(1))
    assert dark.mean() < 0.6 * img.mean()


def _toy_samples(n=4):
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        m = np.zeros((48, 64), np.int64)
        m[:, : 20 + 4 * k] = 1
        m[30:, 40:] = 2
        img = np.zeros((48, 64, 3), np.uint8)
        img[m == 1] = (200, 60, 40)
        img[m == 2] = (40, 60, 200)
        out.append(((img + rng.integers(0, 30, img.shape)).astype(np.uint8), m))
    return out


def test_training_loss_decreases_and_resumes(tmp_path):
    torch.set_num_threads(1)
    conf = {"steps": 30, "batch_size": 4, "log_every": 5, "warmup": 3, "checkpoint_every": 10, "augment": None,
            "lr": 3e-3, "network": {"input_size": [64, 48], "encoder_conf": {"channels": [8, 16, 24, 32]},
                                    "psp_out_channels": 16}}
    res = train_recognition(_toy_samples(), 3, tmp_path, conf, progress=False)
    log = res["log"]
    assert len(log) == 6
    assert log[-1]["total"] < 0.6 * log[0]["total"]
    assert (tmp_path / MODEL_FILE).is_file()
    assert (tmp_path / TRAIN_STATE).is_file()
    assert (tmp_path / "train_loss.png").stat().st_size > 1000
    # resume continues from step 30 to 40 and keeps the earlier log lines
    res2 = train_recognition(_toy_samples(), 3, tmp_path, {**conf, "steps": 40}, progress=False)
    lines = [json.loads(s) for s in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in lines] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert res2["steps"] == 40
    rec = Recognizer({"model": str(tmp_path / MODEL_FILE), "device": "cpu"})
    img, m = _toy_samples()[3]
    r = rec.predict(img)
    assert r.label_map.shape == m.shape
    assert r.descriptor.shape == (32,)
    assert (r.label_map == m).mean() > 0.7
    assert r.instances
    assert r.instances[0][0] in (1, 2)
    with pytest.raises(ValueError, match="labels span"):
        train_recognition(_toy_samples(), 2, tmp_path / "x", conf, progress=False)


def test_rank_instances_by_confidence():
    lab = np.array([[1, 1, 2, 2], [1, 1, 2, 3]])
    conf = np.array([[0.5, 0.5, 0.9, 0.9], [0.5, 0.5, 0.9, 0.99]])
    assert rank_instances(lab, conf, min_area=0.2, max_instances=5) == [(2, pytest.approx(0.9)), (1, 0.5)]


def _feats(desc, labels):
    n = len(desc)
    return Features(np.zeros((n, 2)), desc, np.ones(n), (10, 10), "t", labels)


def test_label_nn_matches_within_labels_first():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(6, 16)).astype(np.float32)
    # query keypoint 0 looks most like ref 1 but only ref 0 shares its label
    q = np.stack([d[1] + 0.05 * d[0], d[2], d[3]])
    r = np.stack([d[0], d[1], d[2], d[3]])
    m = create_matcher({"name": "label_nn"})
    res = m.match(_feats(q, [5, 0, 0]), _feats(r, [5, 6, 0, 0]))
    pairs = {tuple(p) for p in res.indices.tolist()}
    assert (0, 0) in pairs
    assert (1, 2) in pairs
    assert (2, 3) in pairs
    assert res.info["label_matches"] == 1
    plain = create_matcher({"name": "label_nn", "use_labels": False}).match(_feats(q, [5, 0, 0]),
                                                                            _feats(r, [5, 6, 0, 0]))
    assert (0, 1) in {tuple(p) for p in plain.indices.tolist()}


def test_committed_synthetic_model_loads():
    from pathlib import Path

    from imp_core.recognition.instances import load_instance_definition

    path = Path(__file__).resolve().parents[1] / "models" / "recognition_synthetic.pt"
    assert path.is_file(), f"{path} is committed with the repository (git lfs / a partial checkout?)"
    net = load_model(path)
    cent, mode = load_instance_definition(path)
    assert net.num_classes == len(cent) + 1 == 33
    assert mode == "xy"
    with torch.no_grad():
        out = net(net.normalize(torch.rand(1, 3, 120, 160)))
    assert out["masks"].shape == (1, 33, 15, 20)
