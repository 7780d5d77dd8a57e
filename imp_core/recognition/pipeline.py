"""Glue for an annotated map: train the recognition network on its database images and masks, then store
the trained model's database descriptors so the "instance" coarse stage can use it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np
import torch

from .augment import default_conf as aug
from .instances import (
    INSTANCES_JSON,
    MASK_DIR,
    InstanceIndex,
    load_point_labels,
    map_image_loader,
    read_mask,
    write_db_descriptors,
)
from .recognizer import Recognizer
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
