"""Train GM / IMP / EIMP on a dump (``imp train-matcher``): Adam, deep supervision at every iteration,
checkpoints in the released format (loadable by the ``imp``/``eimp`` matchers), resume, AMP on CUDA, progress
bar, JSON-lines log, a loss-curve PNG and held-out precision/recall.

EIMP trains exactly like IMP (same parameters; pooling is an inference-time decision), so a checkpoint trained
here serves both.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union, cast

import numpy as np
import torch

from ..config import merge
from ..device import resolve_device
from ..matching.imp.checkpoint import load_model, save_checkpoint
from ..matching.imp.model import IMPModel
from ..matching.imp.sinkhorn import mutual_matches
from .dump import read_dump_info
from .losses import total_loss
from .sampler import PairDataset, split_pairs
from .warm_start import warm_start

default_conf: Dict[str, Any] = {
    "variant": "imp",
    # IMPModel overrides, None = default; the descriptors' dimension is taken from the dump, and the width
    # (descriptor_dim) is that dimension unless given (then an input projection maps the descriptors to it)
    "model": {k: None for k in IMPModel.default_conf if k not in ("variant", "input_dim")},
    "n_keypoints": 1024,
    "min_inliers": 32,
    "max_inliers": 512,
    "batch_size": 16,
    "steps": 100000,
    "lr": 1e-4,
    "decay_step": 200000,  # released schedule: lr * 0.999992^(step - decay_step) after decay_step
    "decay": 0.999992,
    "min_lr": 1e-6,
    "pose_weight": 0.0,  # > 0 enables the pose loss (weighted eight-point) ...
    "pose_warmup": 0,  # ... after this many steps
    "pose_margin": 0.1,
    "val_fraction": 0.1,
    "max_val_pairs": None,  # held-out pairs evaluated per dump (None = all of the held-out fraction)
    "dump_weights": None,  # one weight per dump (share of the training draws); None = proportional to size
    "val_every": 1000,
    "ckpt_every": 1000,
    "log_every": 50,
    "match_threshold": 0.2,
    # CUDA only: True = bfloat16 where the GPU has it, else float16 (with loss scaling); "bf16" / "fp16"; False = fp32.
    # The assignment heads always run in float32 (IMPModel.assign)
    "amp": True,
    "grad_clip": 10.0,
    "num_workers": 0,
    "seed": 0,
    "device": "auto",
    "init_weights": None,  # start from a checkpoint (e.g. official weights) instead of random
    # start from the tensors of another trained model that fit (warm_start.py), e.g. ALIKED from the XFeat weights
    "warm_start": None,
    "warm_start_descriptors": 20000,  # descriptors drawn from the training pairs for a new input projection's PCA
    # weight averaging (SWA-style): the mean of the model at steps average_from + k * average_every (k >= 1). On a
    # CPU, batches of 8 make single snapshots noisy; their mean is what a stage with averaging exports (the mean
    # is kept in the checkpoints, so a resumed run goes on averaging, and evaluated on the held-out pairs at the end)
    "average_every": None,
    "average_from": 0,
}


def to_device(batch: Mapping[str, torch.Tensor], device: str) -> Dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(model: IMPModel, loader, device: str, threshold: float = 0.2) -> Dict[str, float]:
    """Precision / recall of the last iteration's mutual matches against the ground truth (ignored keypoints
    excluded from precision) and the mean loss."""
    model.eval()
    tp = fp = n_gt = 0
    losses = []
    for batch in loader:
        batch = to_device(batch, device)
        probs = model(batch)
        losses.append(float(total_loss(probs[-1:], batch)["match"]))
        m0, _ = mutual_matches(probs[-1], threshold)
        gt0 = batch["gt0"]
        pred = m0 >= 0
        counted = pred & (gt0 != -2)
        tp += int((counted & (m0 == gt0)).sum())
        fp += int((counted & (m0 != gt0)).sum())
        n_gt += int((gt0 >= 0).sum())
    model.train()
    return {"precision": tp / max(tp + fp, 1), "recall": tp / max(n_gt, 1), "val_loss": float(np.mean(losses)),
            "matches": tp + fp}


def autocast_dtype(amp, device: str) -> Optional[torch.dtype]:
    """The trainer's ``amp`` setting on ``device`` -> the autocast dtype (None = float32). Only CUDA autocasts."""
    choices = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if not (amp is None or isinstance(amp, bool) or amp in choices):
        raise ValueError(f"train conf 'amp' must be true, false, 'bf16' or 'fp16', not {amp!r}")
    if not amp or not device.startswith("cuda"):
        return None
    if amp is True:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return choices[amp]


def lr_at(step: int, conf: Mapping[str, Any]) -> float:
    if step <= conf["decay_step"]:
        return conf["lr"]
    return max(conf["min_lr"], conf["lr"] * conf["decay"] ** (step - conf["decay_step"]))


def plot_log(log: List[Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    tr = [r for r in log if "loss" in r]
    ax[0].plot([r["step"] for r in tr], [r["loss"] for r in tr], label="train loss")
    va = [r for r in log if "val_loss" in r]
    if va:
        ax[0].plot([r["step"] for r in va], [r["val_loss"] for r in va], "o-", label="held-out loss")
        ax[1].plot([r["step"] for r in va], [r["precision"] for r in va], "o-", label="precision")
        ax[1].plot([r["step"] for r in va], [r["recall"] for r in va], "o-", label="recall")
    for a in ax:
        a.set_xlabel("step")
        a.legend()
    ax[0].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class SkipSampler(torch.utils.data.Sampler):
    """``sampler``'s indices without the first ``skip``: drawn in full, so the rest come in the order (and from the
    generator state) of an uninterrupted epoch."""

    def __init__(self, sampler, skip: int) -> None:
        self.sampler, self.skip = sampler, int(skip)

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)


class ConcatPairs(torch.utils.data.ConcatDataset):
    """Pairs of several dumps (same features) as one dataset; ``set_epoch`` reaches every part."""

    @property
    def parts(self) -> List[PairDataset]:
        """``datasets``, typed."""
        return cast(List[PairDataset], self.datasets)

    def set_epoch(self, epoch: int) -> None:
        for d in self.parts:
            d.set_epoch(epoch)


def make_datasets(data_paths, conf: Mapping[str, Any]) -> Tuple[ConcatPairs, Optional[ConcatPairs]]:
    """Train / held-out pair sets over one dump or several (each split on its own; None: no held-out pair); the dumps
    must hold the same kind of features."""
    paths = [data_paths] if isinstance(data_paths, (str, Path)) else list(data_paths)
    kw = dict(n_keypoints=conf["n_keypoints"], min_inliers=conf["min_inliers"], max_inliers=conf["max_inliers"],
              seed=conf["seed"])
    trains, vals, feats = [], [], None
    for p in paths:
        info = read_dump_info(p)
        name = info["features"].get("name")
        if feats is not None and name != feats:
            raise ValueError(f"{p} holds {name!r} features but {paths[0]} holds {feats!r}: train on one kind")
        feats = name
        train_ids, val_ids = split_pairs(info["pairs"], conf["val_fraction"], conf["seed"])
        if train_ids:
            trains.append(PairDataset(p, pairs=train_ids, **kw))
        if conf.get("max_val_pairs"):
            val_ids = val_ids[: int(conf["max_val_pairs"])]
        if val_ids:
            vals.append(PairDataset(p, pairs=val_ids, fixed=True, **kw))
    if not trains:
        raise ValueError(f"no training pairs in {[str(p) for p in paths]}")
    return ConcatPairs(trains), (ConcatPairs(vals) if vals else None)


def sample_descriptors(ds, n: int, pairs: int = 64) -> torch.Tensor:
    """At most ``n`` descriptors [n', D] from ``pairs`` pairs spread evenly over ``ds`` (every dump, both images)."""
    idx = np.unique(np.linspace(0, len(ds) - 1, min(pairs, len(ds))).round().astype(int))
    items = [ds[int(i)] for i in idx]
    desc = torch.cat([torch.as_tensor(it[k]) for it in items for k in ("descriptors0", "descriptors1")])
    pick = torch.randperm(desc.shape[0], generator=torch.Generator().manual_seed(0))[:n]
    return desc[pick]


def sample_weights(ds: ConcatPairs, dump_weights) -> torch.Tensor:
    """Per-pair sampling weights so that dump ``i`` makes up ``dump_weights[i] / sum`` of the draws."""
    w = [float(v) for v in dump_weights]
    if len(w) != len(ds.datasets) or min(w) < 0 or sum(w) <= 0:
        raise ValueError(f"dump_weights {list(dump_weights)} must give one non-negative weight per dump "
                         f"({len(ds.datasets)} dumps)")
    return torch.cat([torch.full((len(d),), wi / len(d)) for d, wi in zip(ds.parts, w)])


def averaging_step(step: int, conf: Mapping[str, Any]) -> bool:
    """Whether the model at ``step`` joins the weight average (``average_every`` / ``average_from``)."""
    every = conf["average_every"]
    return bool(every) and step > conf["average_from"] and (step - conf["average_from"]) % every == 0


def data_list(data: Any) -> List[str]:
    """A run's dump path(s) as a list of strings (one path or several, as ``train`` takes and ``conf.json`` keeps)."""
    return [str(data)] if isinstance(data, (str, Path)) else [str(p) for p in data]


def run_conf(run_dir: Union[str, Path], overrides: Optional[Mapping[str, Any]] = None
             ) -> Tuple[Dict[str, Any], List[str]]:
    """(trainer conf, dump paths) of a training run directory's ``conf.json``, with ``overrides`` (e.g. another
    keypoint count) on top: what benchmarks re-sample the run's pairs with. A key the trainer no longer knows (an
    older run) is left out; a directory without ``conf.json`` is an error naming it."""
    path = Path(run_dir) / "conf.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no conf.json (not a training run directory)")
    saved = json.loads(path.read_text())
    train_conf = {k: v for k, v in saved["train"].items() if k in default_conf}
    conf = merge(default_conf, train_conf, dict(overrides or {}), where="train")
    return conf, data_list(saved["data"])


def train(data_path, out_dir, conf: Optional[Mapping[str, Any]] = None, resume: bool = False,
          progress: bool = True, restart: bool = False) -> Dict[str, Any]:
    """Train on the dump at ``data_path``; writes ``last.pth``, ``best.pth``, ``log.jsonl``, ``curves.png``.

    ``restart`` (with ``resume``): go on from ``last.pth``'s weights and step as a new run would, with a fresh
    optimizer and a fresh pass over the data (a recipe's fine-tuning stage)."""
    from tqdm import tqdm

    conf = merge(default_conf, conf, where="train")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(conf["device"])
    torch.manual_seed(conf["seed"])
    train_set, val_set = make_datasets(data_path, conf)
    dim = int(train_set[0]["descriptors0"].shape[-1])
    overrides = {k: v for k, v in conf["model"].items() if v is not None}
    model_conf = {**overrides, "variant": conf["variant"], "descriptor_dim": overrides.get("descriptor_dim", dim),
                  "input_dim": dim}
    started: Optional[Dict[str, Any]] = None
    if conf["init_weights"]:
        model, _ = load_model(conf["init_weights"], conf["variant"], overrides)
    else:
        model = IMPModel(model_conf)
        if conf["warm_start"] and not resume:
            started = warm_start(model, conf["warm_start"], sample_descriptors(train_set,
                                                                               conf["warm_start_descriptors"]))
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=conf["lr"])
    amp_dtype = autocast_dtype(conf["amp"], device)
    use_amp = amp_dtype is not None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    skipped = 0  # steps whose loss was not finite (no update)
    step, epoch, best = 0, 0, math.inf
    batch_size = min(conf["batch_size"], len(train_set))
    batches_per_epoch = len(train_set) // batch_size
    epoch_start = 0  # the step the current epoch began at
    log: List[Dict[str, Any]] = []
    last = out / "last.pth"
    average: Optional[Dict[str, torch.Tensor]] = None  # running mean of the model (average_every)
    averaged = 0
    if restart and not resume:
        raise ValueError("restart goes on from a run's last.pth: it needs resume")
    if resume:
        if not last.is_file():
            raise FileNotFoundError(f"cannot resume: {last} does not exist")
        ck = torch.load(last, map_location=device, weights_only=True)
        model.load_state_dict(ck["model"])
        step, epoch, best = int(ck["iteration"]), int(ck["epoch"]), float(ck["min_loss"])
        skipped = int(ck.get("skipped", 0))
        if restart:  # a new run from these weights: its optimizer, its pass over the data, its average
            epoch_start = step
        else:
            opt.load_state_dict(ck["optimizer"])
            # batches of the current epoch already trained on (older checkpoints: from the epoch length)
            done = int(ck.get("epoch_step", step - epoch * batches_per_epoch))
            epoch_start = step - min(max(done, 0), batches_per_epoch)
            if "average" in ck and conf["average_every"]:  # resumed without averaging: the old mean is dropped
                average, averaged = dict(ck["average"]), int(ck["averaged"])
        if (out / "log.jsonl").is_file():
            log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
            log = [r for r in log if r["step"] <= step]
    data_names = data_list(data_path)
    if resume and (out / "conf.json").is_file():
        prev = json.loads((out / "conf.json").read_text())
        before = data_list(prev["data"]) if prev.get("data") is not None else None
        sampling = ("n_keypoints", "min_inliers", "max_inliers", "max_val_pairs", "val_fraction", "seed")
        changed = [k for k in sampling if prev.get("train", {}).get(k) != conf[k]]
        if before != data_names or changed:  # another held-out set: its losses do not compare with the old best
            best = math.inf
            log.append({"step": step, "data": data_names, "previous_data": before, "changed": changed})
        if before != data_names:  # other pairs (a recipe's next stage): a fresh pass over them, nothing skipped
            epoch_start = step
    if restart:
        best = math.inf
        log.append({"step": step, "restart": True})
    if started is not None:
        log.append({"step": 0, **started})
    (out / "conf.json").write_text(json.dumps({"train": conf, "model": model.conf, "data": data_names},
                                              indent=1))

    def loader(ds: ConcatPairs, shuffle: bool, skip_batches: int = 0) -> torch.utils.data.DataLoader:
        gen = torch.Generator().manual_seed(conf["seed"] + epoch)
        sampler: Any = None
        if shuffle and conf["dump_weights"]:  # each dump drawn with its weight, whatever its size
            weights = sample_weights(ds, conf["dump_weights"]).tolist()
            sampler = torch.utils.data.WeightedRandomSampler(weights, len(ds), replacement=True, generator=gen)
        elif shuffle:
            sampler = torch.utils.data.RandomSampler(ds, generator=gen)
        if skip_batches:  # a resumed epoch goes on where the interrupted one stopped, in the same order
            sampler = SkipSampler(sampler, skip_batches * batch_size)
        return torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=sampler,
                                           num_workers=conf["num_workers"], drop_last=shuffle, generator=gen)

    def checkpoint(path: Path) -> None:
        extra = {"average": average, "averaged": averaged} if average is not None else {}
        save_checkpoint(path, model, epoch=epoch, iteration=step, min_loss=best, optimizer=opt.state_dict(),
                        conf=json.dumps(model.conf), epoch_step=step - epoch_start, skipped=skipped, **extra)

    def add_to_average() -> None:
        nonlocal average, averaged
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        averaged += 1
        if average is None:
            average = state
            return
        for k, v in state.items():
            if v.is_floating_point():
                average[k] += (v - average[k]) / averaged
            else:  # counters (none in IMP today): the latest
                average[k] = v

    # the kept history goes to a new file that replaces the old one whole, then every row is flushed as written: a
    # run killed at any moment (a session ending) keeps its log up to the last step
    tmp = out / "log.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in log))
    os.replace(tmp, out / "log.jsonl")
    logf = open(out / "log.jsonl", "a", buffering=1)

    def write(r: Dict[str, Any]) -> None:
        log.append(r)
        logf.write(json.dumps(r) + "\n")
        logf.flush()

    def validate() -> None:
        nonlocal best
        if val_set is None:
            return
        r = {"step": step, **evaluate(model, loader(val_set, False), device, conf["match_threshold"])}
        write(r)
        if average is not None and step >= conf["steps"]:  # the mean the run exports, on the same pairs
            current = {k: v.detach().clone() for k, v in model.state_dict().items()}
            model.load_state_dict(average)
            write({"step": step, "averaged": averaged,
                   **evaluate(model, loader(val_set, False), device, conf["match_threshold"])})
            model.load_state_dict(current)
            model.train()
        if r["val_loss"] < best:
            best = r["val_loss"]
            checkpoint(out / "best.pth")

    bar = tqdm(total=conf["steps"], initial=step, desc="train-matcher", disable=not progress)
    t0 = time.time()
    try:
        if step == 0:
            validate()
        while step < conf["steps"]:
            train_set.set_epoch(epoch)
            for batch in loader(train_set, True, step - epoch_start):
                batch = to_device(batch, device)
                for g in opt.param_groups:
                    g["lr"] = lr_at(step, conf)
                pose_w = conf["pose_weight"] if step >= conf["pose_warmup"] else 0.0
                with torch.autocast("cuda", dtype=amp_dtype or torch.float32, enabled=use_amp):
                    probs = model(batch)
                losses = total_loss(probs, batch, pose_w, conf["pose_margin"])
                finite = bool(torch.isfinite(losses["loss"]))
                opt.zero_grad(set_to_none=True)
                if finite:
                    scaler.scale(losses["loss"]).backward()
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), conf["grad_clip"])
                    scaler.step(opt)
                    scaler.update()
                else:  # skipped, but it counts as a step: the limits, checkpoints and evaluations below still apply
                    skipped += 1
                step += 1
                bar.update(1)
                if step % conf["log_every"] == 0 or step == 1:
                    r = {"step": step, "epoch": epoch, "lr": lr_at(step, conf), "time_s": time.time() - t0,
                         "skipped": skipped}
                    if finite:
                        r.update({k: float(v.detach()) for k, v in losses.items()})
                        bar.set_postfix(loss=f"{r['loss']:.3f}", skipped=skipped)
                    write(r)
                if averaging_step(step, conf):
                    add_to_average()
                if step % conf["val_every"] == 0 or step == conf["steps"]:
                    validate()
                if step % conf["ckpt_every"] == 0 or step == conf["steps"]:
                    checkpoint(last)
                if step >= conf["steps"]:
                    break
            else:
                epoch, epoch_start = epoch + 1, step
    finally:
        bar.close()
        logf.close()
    plot_log(log, out / "curves.png")
    return {"log": log, "out": str(out), "step": step, "best_val_loss": best}
