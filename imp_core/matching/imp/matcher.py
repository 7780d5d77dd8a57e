"""Registry entries ``gm``, ``imp`` and ``eimp``: the IMP family as an imp_core ``Matcher``.

``weights`` must point to an official checkpoint (see ``checkpoint.WHERE_TO_GET``); ``weights: null`` builds a
randomly initialised model (seeded) only with ``allow_random_init: true`` (tests, training from scratch).
``match_many`` runs one query against k references in one batched forward (references padded with masks);
per-reference early stop and pooling are described in ``iterative.py``. ``iterative_mode: released`` reproduces
the released evaluation's pose checks (``matching_iterative_uncertainty``) for image pairs; ``model: {pooling:
mask}`` the released non-iterative EIMP (``produce_matches``, with ``iterative: false``). See docs/IMP.md.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from ...device import resolve_device
from ...types import Features, Matches
from ..base import MATCHERS, Matcher
from .checkpoint import WHERE_TO_GET, load_model, shipped_features, shipped_weights
from .geometry import PairGeometry, PnPGeometry, ReleasedPairGeometry
from .iterative import MODES, IterativeMatcher
from .model import VARIANTS, IMPModel


class IMPMatcher(Matcher):
    default_conf: Dict[str, Any] = {
        "weights": None,  # path to imp_spp.pth, eimp_sift.pth, ...; None = imp's shipped weights for `features`
        "features": None,  # the features' name (the localizer sets it from the map): picks the shipped weights
        "allow_random_init": False,
        "seed": 0,
        # IMPModel overrides; None = the checkpoint's / IMPModel's value (descriptor_dim matters for random init);
        # n_layers below the checkpoint's runs its first iterations only (each has a trained head): a shallower model
        "model": {k: None for k in IMPModel.default_conf if k != "variant"},
        "iterative": True,  # pose checks at checkpoint iterations (needs camera0/camera1 or points3D context)
        "iterative_mode": "localization",  # localization (ours: PnP / recoverPose checks) | released (imp-release)
        "early_stop": True,
        "checkpoints": None,  # iterations with a pose check; None = localization: 2, 3, ..., last; released: the
        # sharing iterations + last
        # localization mode: a pose with this many RANSAC inliers and this inlier ratio stops at once (None: only
        # two agreeing poses stop); tuned on a training world's pairs (docs/IMP.md, "Early stop")
        "stop_inliers": 100,
        "stop_inlier_ratio": 0.4,
        # localization mode: Sinkhorn scalings of the checkpoint heads (None: the model's, 20); the last head keeps
        # the model's
        "checkpoint_sinkhorn_iterations": 5,
        "checkpoint_threshold": 0.1,
        "match_threshold": 0.2,
        "min_matches": 25,
        "return_inliers": True,  # after an early stop return only the RANSAC inliers (as released)
        "stop_deg": 1.5,
        "stop_position": 0.25,  # localization: camera centres within this distance (map units)
        "ransac_px": 1.0,  # essential matrix threshold (pairs)
        # essential-matrix estimator of the pair pose checks (OpenCV; geometry.PAIR_RANSAC_METHODS): LO-RANSAC gave
        # better checkpoint poses than MAGSAC++ at half the cost on a training world (docs/IMP.md, "Early stop")
        "ransac_method": "USAC_DEFAULT",
        "pnp_px": 12.0,  # PnP threshold (localization)
        "batch_size": 8,  # references per batched forward in match_many
    }

    def _init(self, conf: Dict[str, Any]) -> None:
        variant = conf["name"]
        if variant not in VARIANTS:
            raise ValueError(f"IMPMatcher name must be one of {VARIANTS}, got {variant!r}")
        self.device = resolve_device(conf["device"])
        heads: Optional[List[int]] = None
        overrides = {k: v for k, v in conf["model"].items() if v is not None}
        weights = conf["weights"] or (None if conf["allow_random_init"] else shipped_weights(conf["features"], variant))
        if weights:
            model, info = load_model(weights, variant, overrides)
            heads = info["heads"]
            self.weights = str(weights)
        elif conf["allow_random_init"]:
            torch.manual_seed(int(conf["seed"]))
            model = IMPModel({**overrides, "variant": variant})
            self.weights = "random"
        else:
            raise ValueError(f"matcher {variant!r}: {self.unavailable(conf, conf['features'])}. {WHERE_TO_GET} (or "
                             "allow_random_init: true for an untrained model)")
        self.model = model.eval().to(self.device)
        checkpoints = conf["checkpoints"]
        early = bool(conf["early_stop"] and conf["iterative"])
        if heads is not None and len(heads) == 1:  # SuperGlue weights: only the last head is trained
            checkpoints, early = heads, False
        if conf["iterative_mode"] not in MODES:
            raise ValueError(f"matcher {variant!r}: iterative_mode must be one of {MODES}, "
                             f"got {conf['iterative_mode']!r}")
        self.runner = IterativeMatcher(self.model, checkpoints, early, float(conf["checkpoint_threshold"]),
                                       float(conf["match_threshold"]), int(conf["min_matches"]),
                                       bool(conf["return_inliers"]), mode=conf["iterative_mode"],
                                       stop_inliers=_optional_int(conf["stop_inliers"]),
                                       stop_inlier_ratio=float(conf["stop_inlier_ratio"]),
                                       checkpoint_iterations=_optional_int(conf["checkpoint_sinkhorn_iterations"]))

    @classmethod
    def unavailable(cls, conf: Mapping[str, Any], features: Optional[str]) -> Optional[str]:
        variant = conf.get("name", "imp")
        if conf.get("weights") or conf.get("allow_random_init") or shipped_weights(features, variant) is not None:
            return None
        return (f"no {variant} weights for {features or 'these'!r} features (imp ships {variant} weights for "
                f"{shipped_features(variant) or 'no features'}; set 'weights' to a checkpoint or train them with "
                "`imp train-matcher --preset`)")

    def describe(self) -> str:
        return f"{self.conf['name']} (weights {self.weights})"

    @property
    def descriptor_dim(self) -> int:
        """Descriptor dimension of the features this matcher reads."""
        return self.model.input_dim

    def _geometry(self, context: Optional[Dict[str, Any]]):
        c = context or {}
        if "points3D" in c and c.get("camera0") is not None:
            return PnPGeometry(c["camera0"], c["points3D"], self.conf["pnp_px"], self.conf["stop_deg"],
                               self.conf["stop_position"], estimate_focal=bool(c.get("estimate_focal", False)),
                               random_seed=int(c.get("random_seed", 0)))
        if c.get("camera0") is not None and c.get("camera1") is not None:
            if self.conf["iterative_mode"] == "released":
                return ReleasedPairGeometry(c["camera0"], c["camera1"], self.conf["ransac_px"],
                                            stop_deg=self.conf["stop_deg"])
            return PairGeometry(c["camera0"], c["camera1"], self.conf["ransac_px"], stop_deg=self.conf["stop_deg"],
                                method=self.conf["ransac_method"])
        return None

    def _check_dim(self, f: Features, which: str) -> None:
        if f.descriptors.shape[1] != self.descriptor_dim:
            raise ValueError(f"matcher {self.conf['name']!r}: {which} features {f.kind or '?'} have "
                             f"{f.descriptors.shape[1]}-d descriptors but the weights expect {self.descriptor_dim}-d "
                             "(use *_spp weights with SuperPoint, *_sift weights with SIFT)")

    def _match(self, f0: Features, f1: Features, context: Dict[str, Any]) -> Matches:
        return self.match_many(f0, [f1], [context])[0]

    def match_many(self, query: Features, refs: Sequence[Features],
                   contexts: Optional[Sequence[Optional[Dict[str, Any]]]] = None) -> List[Matches]:
        contexts = list(contexts or [None] * len(refs))
        self.check_features(query)
        self._check_dim(query, "query")
        out: List[Optional[Matches]] = [None] * len(refs)
        todo = []
        for k, r in enumerate(refs):
            self.check_features(r)
            self._check_dim(r, f"reference {k}")
            if len(query) == 0 or len(r) == 0:
                out[k] = Matches.empty()
            else:
                todo.append(k)
        bs = 1 if self.model.conf["assignment"] == "log_ot" else max(1, int(self.conf["batch_size"]))
        for s in range(0, len(todo), bs):
            chunk = todo[s:s + bs]
            results = self._run(query, [refs[k] for k in chunk], [contexts[k] for k in chunk])
            for k, m in zip(chunk, results):
                out[k] = m
        return out  # type: ignore[return-value]

    def _run(self, query: Features, refs: Sequence[Features], contexts: Sequence[Optional[Dict[str, Any]]]
             ) -> List[Matches]:
        data = batch_features(query, refs, self.device)
        geos = [self._geometry(c) if self.conf["iterative"] else None for c in contexts]
        res = self.runner.run(data, geos, [query.keypoints] * len(refs), [r.keypoints for r in refs])
        out = []
        for r in res:
            info = dict(r.info)
            if r.pose is not None:
                info["pose_inliers"] = int(r.pose.inliers.sum())
            out.append(Matches(r.matches, r.scores, info))
        return out


def _optional_int(value: Any) -> Optional[int]:
    return None if value is None else int(value)


def batch_features(query: Features, refs: Sequence[Features], device: str) -> Dict[str, torch.Tensor]:
    """Tensors for one query repeated against k references (padded to the longest, with masks)."""
    k = len(refs)
    n1 = max(len(r) for r in refs)
    d = refs[0].descriptors.shape[1]
    kp1 = np.zeros((k, n1, 2), np.float32)
    sc1 = np.zeros((k, n1), np.float32)
    de1 = np.zeros((k, n1, d), np.float32)
    mask1 = np.zeros((k, n1), bool)
    for i, r in enumerate(refs):
        n = len(r)
        kp1[i, :n], sc1[i, :n], de1[i, :n], mask1[i, :n] = r.keypoints, r.scores, r.descriptors, True

    def t(x):
        return torch.from_numpy(np.ascontiguousarray(x)).to(device)

    data = {
        "keypoints0": t(query.keypoints[None]).expand(k, -1, -1),
        "scores0": t(query.scores[None]).expand(k, -1),
        "descriptors0": t(query.descriptors[None]).expand(k, -1, -1),
        "image_size0": t(np.array([query.image_size], np.float32)).expand(k, -1),
        "keypoints1": t(kp1), "scores1": t(sc1), "descriptors1": t(de1),
        "image_size1": t(np.array([r.image_size for r in refs], np.float32)),
    }
    if not mask1.all():
        data["mask1"] = t(mask1)
    return data


for _name in VARIANTS:
    MATCHERS.register(_name)(IMPMatcher)
