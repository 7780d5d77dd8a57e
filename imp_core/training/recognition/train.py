"""Train the recognition network: OHEM cross-entropy (segmentation) + BCE (multi-label instances), Adam,
step-based schedule, tqdm progress, JSON-lines log, checkpoints that ``resume`` picks up, a loss PNG."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ...config import merge
from ...recognition.network import RecognitionNet, save_model
from .augment import Augmenter

default_conf: Dict[str, Any] = {
    "network": {},  # RecognitionNet conf; "classes" is set from the data
    "augment": {},  # Augmenter conf; None: plain resize (debugging / overfitting tests)
    "steps": 3000,
    "batch_size": 8,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "warmup": 100,
    "ohem_ratio": 0.7,  # LBR: CE over the 70 % hardest pixels
    "cls_weight": 1.0,
    "log_every": 25,
    "checkpoint_every": 250,
    "seed": 0,
    "threads": None,  # torch threads (None: leave torch's default)
    # wall-clock budget in seconds (None: train for `steps`): the schedule follows the share of the budget used
    # (or of the steps, whichever is further) and training stops when the budget is spent
    "time_budget_s": None,
}

TRAIN_STATE = "checkpoint_last.pt"
MODEL_FILE = "model.pt"
LOG_FILE = "train_log.jsonl"


def ohem_cross_entropy(logits, target, ratio: float = 0.7):
    """Mean CE over the ``ratio`` hardest pixels; logits are upsampled to the label size."""
    import torch.nn.functional as F

    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    ce = F.cross_entropy(logits, target, reduction="none").flatten()
    k = max(1, int(math.ceil(ratio * ce.numel())))
    return ce.topk(k).values.mean() if k < ce.numel() else ce.mean()


def multi_hot(target, num_classes: int):
    """(B,H,W) labels -> (B,C) float: which classes appear in each label map."""
    import torch

    out = torch.zeros(target.shape[0], num_classes, device=target.device)
    for b in range(target.shape[0]):
        out[b, target[b].unique()] = 1.0
    return out


def recognition_loss(out: Mapping[str, Any], target, ohem_ratio: float, cls_weight: float) -> Dict[str, Any]:
    import torch.nn.functional as F

    seg = ohem_cross_entropy(out["masks"], target, ohem_ratio)
    cls = F.binary_cross_entropy_with_logits(out["cls"], multi_hot(target, out["cls"].shape[1]))
    return {"total": seg + cls_weight * cls, "seg": seg, "cls": cls}


def load_samples(names: Sequence[str], load_image: Callable[[str], np.ndarray],
                 load_mask: Callable[[str], np.ndarray], size: Tuple[int, int]) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Images and masks resized to ``size`` = (w, h) (the augmenter zooms around it), kept in memory."""
    import cv2
    from tqdm import tqdm

    out = []
    for n in tqdm(names, desc="loading training images", leave=False):
        img, mask = load_image(n), load_mask(n)
        if img.shape[:2] != mask.shape[:2]:
            raise ValueError(f"training image {n}: image {img.shape[:2]} and mask {mask.shape[:2]} differ in size")
        out.append((cv2.resize(img, tuple(size), interpolation=cv2.INTER_AREA),
                    cv2.resize(mask.astype(np.float32), tuple(size), interpolation=cv2.INTER_NEAREST).astype(np.int64)))
    return out


def _lr_factor(step: int, conf: Mapping[str, Any], time_frac: float = 0.0) -> float:
    if step < conf["warmup"] and time_frac < 0.05:
        return (step + 1) / conf["warmup"]
    p = (step - conf["warmup"]) / max(1, conf["steps"] - conf["warmup"])
    p = max(p, time_frac)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, p))) * 0.98 + 0.02


def train_recognition(samples: Sequence[Tuple[np.ndarray, np.ndarray]], num_classes: int,
                      out_dir: Union[str, Path], conf: Optional[Mapping[str, Any]] = None,
                      resume: bool = True, progress: bool = True,
                      extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Train on (image uint8 RGB, label map int) pairs; writes ``model.pt`` (+ log, checkpoint, PNG) in
    ``out_dir`` and returns {"model": path, "log": [...], "steps": n, "seconds": s}. ``extra`` is stored in
    the model file (e.g. the instance definition the labels came from)."""
    import torch
    from tqdm import tqdm

    conf = merge(default_conf, conf, where="train_recognition")
    if not samples:
        raise ValueError("train_recognition: no training samples")
    for n, (img, m) in enumerate(samples):
        if int(m.max()) >= num_classes or int(m.min()) < 0:
            raise ValueError(f"training sample {n}: labels span {m.min()}..{m.max()}, classes is {num_classes}")
    if conf["threads"]:
        torch.set_num_threads(int(conf["threads"]))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    net_conf = dict(RecognitionNet(conf["network"]).conf)
    net_conf["classes"] = int(num_classes)
    aug = Augmenter(conf["augment"]) if conf["augment"] is not None else None
    size = tuple(aug.conf["size"]) if aug else tuple(net_conf["input_size"])
    net_conf["input_size"] = list(size)
    torch.manual_seed(conf["seed"])
    net = RecognitionNet(net_conf)
    opt = torch.optim.AdamW(net.parameters(), lr=conf["lr"], weight_decay=conf["weight_decay"])
    step, log = 0, []
    state_path = out_dir / TRAIN_STATE
    if resume and state_path.is_file():
        st = torch.load(str(state_path), map_location="cpu", weights_only=True)
        if st.get("net_conf") != net_conf:
            raise ValueError(f"{state_path}: checkpoint was trained with another network conf; "
                             "delete it or use another output directory")
        net.load_state_dict(st["state_dict"])
        opt.load_state_dict(st["optimizer"])
        step = int(st["step"])
        log = _read_log(out_dir / LOG_FILE, step)
    rng = np.random.default_rng(conf["seed"] + step)
    net.train()
    t0 = time.time()
    budget = float(conf["time_budget_s"]) if conf["time_budget_s"] else None
    if budget is not None and budget <= 0:
        raise ValueError(f"train_recognition: time_budget_s must be positive, got {budget}")
    # with a time budget the step count is open: the bar counts steps and says how much time is left
    bar = tqdm(total=None if budget is not None and conf["steps"] >= 10**6 else conf["steps"], initial=step,
               desc="train recognition", disable=not progress)
    acc: Dict[str, float] = {}
    stopped = False
    while step < conf["steps"] and not stopped:
        time_frac = (time.time() - t0) / budget if budget else 0.0
        idx = rng.integers(0, len(samples), conf["batch_size"])
        if aug is not None:
            batch = [aug(*samples[int(i)], rng) for i in idx]
            x = torch.from_numpy(np.stack([b[0] for b in batch]))
            y = torch.from_numpy(np.stack([b[1] for b in batch]))
        else:
            x = torch.from_numpy(np.stack([samples[i][0].transpose(2, 0, 1) for i in idx])).float() / 255.0
            y = torch.from_numpy(np.stack([samples[i][1] for i in idx]))
        for g in opt.param_groups:
            g["lr"] = conf["lr"] * _lr_factor(step, conf, time_frac)
        losses = recognition_loss(net(net.normalize(x)), y, conf["ohem_ratio"], conf["cls_weight"])
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
        step += 1
        for k, v in losses.items():
            acc[k] = acc.get(k, 0.0) + float(v.detach())
        acc["n"] = acc.get("n", 0.0) + 1
        bar.update(1)
        if budget is not None:
            left = budget - (time.time() - t0)
            stopped = left <= 0
            if step % 5 == 0:
                bar.set_description(f"train recognition ({max(0.0, left) / 60:.1f} min left)")
        if step % conf["log_every"] == 0 or step == conf["steps"] or stopped:
            rec = {"step": step, **{k: acc[k] / acc["n"] for k in ("total", "seg", "cls")},
                   "lr": opt.param_groups[0]["lr"], "time": time.time() - t0}
            log.append(rec)
            with open(out_dir / LOG_FILE, "a") as f:
                f.write(json.dumps(rec) + "\n")
            bar.set_postfix(loss=f"{rec['total']:.3f}")
            acc = {}
        if step % conf["checkpoint_every"] == 0 or step == conf["steps"] or stopped:
            torch.save({"step": step, "net_conf": net_conf, "state_dict": net.state_dict(),
                        "optimizer": opt.state_dict()}, str(state_path))
    bar.close()
    net.eval()
    save_model(out_dir / MODEL_FILE, net, extra)
    plot_log(log, out_dir / "train_loss.png")
    return {"model": out_dir / MODEL_FILE, "log": log, "steps": step, "seconds": time.time() - t0, "net": net}


def _read_log(path: Path, upto: int) -> List[Dict[str, Any]]:
    if not path.is_file():
        return []
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    recs = [r for r in recs if r["step"] <= upto]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return recs


def plot_log(log: Sequence[Mapping[str, Any]], path: Union[str, Path]) -> None:
    if not log:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [r["step"] for r in log]
    for k in ("total", "seg", "cls"):
        ax.plot(steps, [r[k] for r in log], label=k)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("recognition training")
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    plt.close(fig)
