"""EIMP's pooling threshold for weights trained here, calibrated on held-out training pairs.

EIMP prunes a token when its assignment mass (row or column sum of the assignment without the dustbin) falls below
``pool_threshold`` and it receives below-median attention. The released value, 0.1, suits weights trained for
900k steps on MegaDepth, whose unmatchable tokens put almost all of their mass on the dustbin. Weights trained
for a few thousand CPU steps separate matchable from unmatchable tokens too, but at a higher floor: with 0.1
nothing is ever pruned. The threshold is therefore a property of the weights, chosen on the dumps' held-out pairs
(never on evaluation data): the largest value that keeps ``1 - max_lost`` of the ground-truth matched tokens
at every pooling iteration. It is stored in the exported file's conf, which the matchers read.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Union

import numpy as np
import torch

from ..matching.imp.model import IMPModel
from .dump import read_dump_info
from .sampler import PairDataset, split_pairs


def pooling_masses(model: IMPModel, dumps: Sequence[Union[str, Path]], pairs_per_dump: int = 24,
                   n_keypoints: int = 1024, val_fraction: float = 0.1, seed: int = 0
                   ) -> Dict[int, Dict[str, np.ndarray]]:
    """{pooling iteration: {"matched": masses, "unmatched": masses}} of the tokens of held-out pairs.

    The pairs are the trainer's held-out split (same ``val_fraction`` and ``seed``) with every ground-truth match
    kept and the rest filled with keypoints that have none, as at inference; ignored keypoints are left out."""
    its = [i for i in range(model.n_layers) if model.pools_after(i)]
    if not its:
        raise ValueError("the model has no pooling iterations (variant 'gm' shares no attention; EIMP pools after "
                         "sharing iterations before the last)")
    out: Dict[int, Dict[str, List[np.ndarray]]] = {i: {"matched": [], "unmatched": []} for i in its}
    model.eval()
    for path in dumps:
        _, val = split_pairs(read_dump_info(path)["pairs"], val_fraction, seed)
        ds = PairDataset(path, n_keypoints=n_keypoints, min_inliers=n_keypoints, max_inliers=n_keypoints,
                         pairs=val[:pairs_per_dump], seed=seed, fixed=True)
        for k in range(len(ds)):
            item = ds[k]
            with torch.no_grad():
                probs = model({key: v[None] for key, v in item.items()})
            for i in its:
                p = probs[i][0, :-1, :-1].float()
                for mass, gt in ((p.sum(1), item["gt0"]), (p.sum(0), item["gt1"])):
                    out[i]["matched"].append(mass[gt >= 0].numpy())
                    out[i]["unmatched"].append(mass[gt == -1].numpy())
    return {i: {k: np.concatenate(v) if v else np.zeros(0) for k, v in d.items()} for i, d in out.items()}


def calibrate_pool_threshold(masses: Mapping[int, Mapping[str, np.ndarray]], max_lost: float = 0.02
                             ) -> Dict[str, Any]:
    """The largest threshold (rounded down to 0.01) below which at most ``max_lost`` of the matched tokens fall
    at every pooling iteration, with the share of unmatched / matched tokens it would prune per iteration."""
    if not 0 < max_lost < 1:
        raise ValueError(f"max_lost must be in (0, 1), got {max_lost}")
    if any(len(d["matched"]) == 0 for d in masses.values()):
        raise ValueError("no ground-truth matched tokens in the held-out pairs: cannot calibrate")
    th = min(float(np.quantile(d["matched"], max_lost)) for d in masses.values())
    th = math.floor(th * 100) / 100
    return {**pool_threshold_table(masses, th), "max_lost": max_lost}


def pool_threshold_table(masses: Mapping[int, Mapping[str, np.ndarray]], th: float) -> Dict[str, Any]:
    """The share of unmatched / matched tokens a threshold ``th`` would prune per pooling iteration
    (``max_lost``: the largest share of matched tokens it prunes at any of them)."""
    table = {int(i): {"unmatched_below": float(np.mean(d["unmatched"] < th)) if len(d["unmatched"]) else 0.0,
                      "matched_below": float(np.mean(d["matched"] < th)) if len(d["matched"]) else 0.0,
                      "matched": int(len(d["matched"])), "unmatched": int(len(d["unmatched"]))}
             for i, d in masses.items()}
    return {"pool_threshold": float(th), "max_lost": max(r["matched_below"] for r in table.values()),
            "per_iteration": table}
