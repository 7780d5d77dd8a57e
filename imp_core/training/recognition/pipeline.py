"""Train a map's recognizer: ``train_on_map`` trains the recognition network on an annotated map's database images
and masks, then stores the trained model's database descriptors so the "instance" coarse stage can use it;
``build_recognizer`` annotates the map, trains under a wall-clock budget and writes the model card
(``imp recognition train``, ``imp map build --recognition``)."""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np
import torch

from ...mapping import LocalizationMap, read_map_meta
from ...recognition.database import map_image_loader, write_db_descriptors
from ...recognition.instances import INSTANCES_JSON, MASK_DIR, InstanceIndex, annotate_map, load_point_labels
from ...recognition.map_recognizer import (
    DEFAULT_BUDGET_MIN,
    MIN_FIT_TOP1,
    REC_DIR,
    default_mode,
    default_num_instances,
    finish_card,
    model_card,
)
from ...recognition.masks import read_mask
from ...recognition.recognizer import Recognizer
from .augment import default_conf as aug
from .train import load_samples, train_recognition


def train_on_map(map_dir: Union[str, Path], out_dir: Union[str, Path], conf: Optional[Mapping[str, Any]] = None,
                 image_dir: Optional[Union[str, Path]] = None, resume: bool = True, annotate: bool = True,
                 progress: bool = True) -> Dict[str, Any]:
    """Train on every database image of an annotated map; with ``annotate`` write the db descriptors."""
    map_dir = Path(map_dir)
    index = InstanceIndex.load(map_dir / INSTANCES_JSON)
    names = sorted(index.image_instances)
    load_image = map_image_loader(map_dir, image_dir)
    conf = dict(conf or {})
    size = (conf.get("augment") or {}).get("size") or default_conf_size()
    # keep some margin for the zoom-out of the augmenter
    load_size = (int(size[0] * 1.25), int(size[1] * 1.25))
    samples = load_samples(names, load_image, lambda n: read_mask(map_dir / MASK_DIR / f"{n}.png"), load_size)
    # the model carries the instance definition, so other maps of the place can be annotated consistently
    _, _, centroids = load_point_labels(map_dir)
    extra = {"instances": {"centroids": torch.from_numpy(np.asarray(centroids, np.float64)),
                           "mode": str(index.conf.get("mode", "xyz"))}}
    res = train_recognition(samples, index.num_instances + 1, out_dir, conf, resume=resume, progress=progress,
                            extra=extra)
    if annotate:
        rec = Recognizer({"model": str(res["model"])})
        write_db_descriptors(map_dir, names, rec, load_image)
    return res


def default_conf_size():
    return aug["size"]


def build_recognizer(map_dir: Union[str, Path], budget_min: float = DEFAULT_BUDGET_MIN,
                     num_instances: Optional[int] = None, mode: Optional[str] = None,
                     image_dir: Optional[Union[str, Path]] = None, train_conf: Optional[Mapping[str, Any]] = None,
                     resume: bool = False, progress: bool = True, threads: Optional[int] = None) -> Dict[str, Any]:
    """Annotate ``map_dir`` with instances, train its recognizer for ``budget_min`` minutes, store model + card.

    Returns the model card (a dict). ``resume`` continues an interrupted training of the same conf (its budget
    counts anew); without it an earlier recognizer of the map is replaced."""
    map_dir = Path(map_dir)
    meta = read_map_meta(map_dir)
    if budget_min is None or not np.isfinite(budget_min) or budget_min <= 0:
        raise ValueError(f"recognition training budget must be a positive number of minutes, got {budget_min}")
    load_image = map_image_loader(map_dir, image_dir)
    lmap = LocalizationMap.load(map_dir)
    if not lmap.names:
        raise ValueError(f"map {map_dir} has no registered images: nothing to train a recognizer on")
    try:
        load_image(lmap.names[0])
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"cannot read the database images of map {map_dir} ({e}); pass --image-dir") from e
    n_inst = int(num_instances) if num_instances else default_num_instances(len(lmap.names),
                                                                           int(meta.get("num_points3D", 0)))
    mode = mode or default_mode(map_dir)
    t0 = time.time()
    index = annotate_map(map_dir, {"num_instances": n_inst, "mode": mode})
    annotate_s = time.time() - t0
    out = map_dir / REC_DIR
    if out.exists() and not resume:
        shutil.rmtree(out)
    conf: Dict[str, Any] = {"steps": 10**9, "time_budget_s": float(budget_min) * 60.0, "warmup": 50,
                            "log_every": 10, "checkpoint_every": 100}
    if threads:
        conf["threads"] = int(threads)
    conf.update(dict(train_conf or {}))
    res = train_on_map(map_dir, out, conf, image_dir=image_dir, resume=resume, annotate=True, progress=progress)
    net, log = res["net"], res["log"]
    card = model_card(
        map_dir, meta, net, index, mode, round(annotate_s, 1), {},
        training={"data": "the map's own database images and instance masks (from its 3D points); day-to-night "
                          "photometric augmentation (exposure, gamma, tint, noise) and random affine crops",
                  "budget_min": float(budget_min), "seconds": round(float(res["seconds"]), 1),
                  "steps": int(res["steps"]), "batch_size": conf.get("batch_size", 8),
                  "first_loss": log[0]["total"] if log else None, "final_loss": log[-1]["total"] if log else None,
                  "device": str(next(net.parameters()).device)},
        intended_use="instance-guided coarse search (LBR) of the imp localizer on this map only",
        limitations="instances are clusters of this map's 3D points: the model knows no other place; night "
                    "appearance is only simulated by augmentation; accuracy grows with the budget")
    return finish_card(card, out, index, load_image, progress,
                       lambda top1: f"recognizer of {map_dir} is undertrained (top-1 {top1:.2f} on its own images < "
                                    f"{MIN_FIT_TOP1:.2f}): the localizer will keep global retrieval; train longer "
                                    f"with `imp recognition train --map {map_dir} --budget-min N`")
