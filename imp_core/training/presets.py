"""Named recipes for the matcher weights imp ships (hloc ``confs`` style): ``imp train-matcher --preset NAME``.

A preset names the features, the training data (synthetic worlds rendered with seeds the demo never uses, and
homography pairs from photographs in Debian wallpaper packages), the model size and the trainer conf. Running it
renders / dumps what is missing under ``--workdir``, trains (resumable), and exports the weights and a model card.

The architecture for CPU robots: width 64 (XFeat's descriptor dimension; ALIKED's 128-d descriptors pass through a
linear input projection and the model starts from the XFeat weights, ``_warm_preset``), 9 iterations
(sharing at 3, 5, 7; EIMP pools after them), one attention head (a single 64-d head is what LighterGlue also uses:
half the softmax work of SuperGlue's 4 heads at this width) and a small keypoint encoder. The released
architecture (15 iterations, 4 heads, D = 256 / 128) stays available for the official checkpoints.
"""
from __future__ import annotations

import copy
from typing import Any, Dict

PHOTO_ROOTS = ["/usr/share/backgrounds", "/usr/share/wallpapers"]  # ukui-, lomiri-, plasma-workspace-wallpapers
DEBIAN_PHOTO_PACKAGES = ["ukui-wallpapers", "lomiri-wallpapers", "plasma-workspace-wallpapers"]
TRAIN_WORLD_SEEDS = [11, 12, 13, 14]  # the demo and the benchmarks use seed 0; tests use their own tiny worlds

_CPU_MODEL = {"n_layers": 9, "num_heads": 1, "sinkhorn_grad_iterations": 3}

_TRAIN = {
    "variant": "imp",  # EIMP trains as IMP (pooling is an inference-time decision)
    "n_keypoints": 256,
    "min_inliers": 32,
    "max_inliers": 192,
    "batch_size": 8,
    "lr": 3e-4,
    # constant to step 6500, then x0.998 per step (x0.37 at step 7000): at a constant rate the XFeat run's held-out
    # loss had levelled off near 2.0 by step 5750 (it swung by 0.2 between evaluations); a short anneal ends the run
    # within a CPU budget (about 5 s per step on one core)
    "decay_step": 6500,
    "decay": 0.998,
    "val_every": 250,
    "ckpt_every": 50,
    "log_every": 10,
    "max_val_pairs": 48,
}


def _preset(features: Dict[str, Any], kenc, steps: int, out: str) -> Dict[str, Any]:
    return {
        "features": features,
        "data": {
            "synthetic": {"seeds": TRAIN_WORLD_SEEDS, "preset": "default", "conditions": ["day", "night"]},
            "homography": {"roots": PHOTO_ROOTS, "packages": DEBIAN_PHOTO_PACKAGES, "pairs_per_photo": 16},
        },
        # 1: synthetic dumps alone (the homography dump takes longest to write); 2: everything, drawn 50/50;
        # 3: 512 keypoints with at most 128 matched, closer to inference (1-2k keypoints, most without a partner),
        # so that unmatched keypoints learn the dustbin and EIMP's pooling has something to prune
        "stages": [{"data": ["synthetic"], "steps": 900},
                   {"data": ["synthetic", "homography"], "weights": {"synthetic": 0.5, "homography": 0.5},
                    "steps": 2300},
                   {"data": ["synthetic", "homography"], "weights": {"synthetic": 0.5, "homography": 0.5},
                    "train": {"n_keypoints": 512, "max_inliers": 128}, "steps": steps}],
        "train": {**copy.deepcopy(_TRAIN), "model": {**_CPU_MODEL, "keypoint_encoder": kenc}},
        "output": out,
    }


PRESETS: Dict[str, Dict[str, Any]] = {
    # 7000 steps: annealing on to 8000 (tried 2026-12-04) raised held-out precision but not recall and cost a night
    # pose on a validation world (docs/IMP.md, "Tried and not shipped")
    "imp_xfeat": _preset({"name": "xfeat", "max_keypoints": 1024}, [32, 64], 7000,
                         "imp_core/matching/imp/weights/imp_xfeat.pth"),
}


# Stage 4 (2026-12-05): a fine-tune at inference's keypoint count with every ground-truth match of a pair kept
# (localization pairs have 35-50 % matchable keypoints; stage 3 draws at most 128 of 512), restarted from stage 3's
# weights with a fresh optimizer at a constant 1e-4, exporting the mean of the weights at every 100th of its 400
# steps: single snapshots of such a CPU run (batch 8) swung between better and worse than stage 3 on the
# validation worlds 15 / 16 (docs/IMP.md, "Tried and not shipped" and "Weights imp ships")
PRESETS["imp_xfeat"]["stages"].append(
    {"data": ["synthetic", "homography"], "weights": {"synthetic": 0.5, "homography": 0.5}, "restart": True,
     "train": {"n_keypoints": 1024, "max_inliers": 1024, "lr": 1e-4, "decay_step": 10 ** 9, "val_every": 100,
               "average_every": 100, "average_from": 7000}, "steps": 7400})
# the pooling threshold stage 3 was calibrated to (the largest value keeping 98 % of the held-out matched tokens);
# the averaged weights' own calibration (0.18 for the 4-snapshot mean of 2026-12-04) pruned more but lowered the
# lowest confidence of a right night pose on validation world 15
PRESETS["imp_xfeat"]["pool_threshold"] = 0.15


def _warm_preset(base: str, features: Dict[str, Any], steps: int, anneal_from: int, out: str,
                 variant: str = "imp") -> Dict[str, Any]:
    """Features with another descriptor size, trained from ``base``'s shipped weights (``warm_start``): the same
    width and layers, a linear input projection in front (PCA-initialised), one stage on all the data at 512
    keypoints (the base's last stage), a lower constant rate, then an anneal. About a sixth of the base's steps:
    what one CPU core does within a working session. ``variant`` "gm": the GM ablation of the base (its
    attention unshared, ``warm_start.unshare``). The shipped ALIKED and GM files started from imp_xfeat's stage-3
    weights (step 7000), before its stage 4 existed; run again, they start from the file imp_xfeat ships now."""
    p = _preset(features, PRESETS[base]["train"]["model"]["keypoint_encoder"], steps, out)
    p["stages"] = [p["stages"][-1]]  # _preset's last stage (512 keypoints), not a base's later fine-tune
    width = 64  # the base's (XFeat) width: every tensor but the input projection is copied
    p["train"].update({"warm_start": PRESETS[base]["output"], "lr": 2e-4, "decay_step": anneal_from,
                       "decay": 0.994})
    p["train"]["model"]["descriptor_dim"] = width
    p["train"]["variant"] = variant
    return p


# ALIKED-n16 (128-d) at the XFeat model's width: 1200 steps from imp_xfeat (constant to 950, x0.22 at 1200)
PRESETS["imp_aliked"] = _warm_preset("imp_xfeat", {"name": "aliked", "max_keypoints": 1024}, 1200, 950,
                                     "imp_core/matching/imp/weights/imp_aliked.pth")

# SIFT (128-d, pycolmap) at the XFeat model's width, the same recipe as ALIKED. Not shipped yet: its first run
# (2026-12-02) was stopped at step 345 of 1200 (held-out loss 3.75 at step 250, ALIKED's was 2.83)
PRESETS["imp_sift"] = _warm_preset("imp_xfeat", {"name": "sift", "max_keypoints": 1024}, 1200, 950,
                                   "imp_core/matching/imp/weights/imp_sift.pth")

# The GM ablation (IMP without attention sharing: every layer computes its own attention) for XFeat, by the same
# recipe from the IMP weights (``warm_start.unshare``: GM starts as IMP that recomputes the attention it reused).
# Not GM trained from scratch as in the paper (10200 steps, about 14 h on one core): the same data, model size and
# held-out pairs as ``imp_xfeat``, so the two compare; what it buys is measured in ``benchmarks/bench_matchers.py``
PRESETS["gm_xfeat"] = _warm_preset("imp_xfeat", {"name": "xfeat", "max_keypoints": 1024}, 1200, 950,
                                   "imp_core/matching/imp/weights/gm_xfeat.pth", variant="gm")

# The GM ablation for ALIKED-n16, from the shipped IMP weights for ALIKED (their input projection included) by the
# same recipe (shipped 2026-12-03: 1200 steps, 1.5 h on one CPU thread)
PRESETS["gm_aliked"] = _warm_preset("imp_aliked", {"name": "aliked", "max_keypoints": 1024}, 1200, 950,
                                    "imp_core/matching/imp/weights/gm_aliked.pth", variant="gm")
