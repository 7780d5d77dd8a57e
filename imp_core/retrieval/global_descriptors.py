"""Global image descriptors for retrieval, chosen by config (registry ``GLOBAL_DESCRIPTORS``).

No NetVLAD weights ship in any wheel, so the default is VLAD aggregated from the map's own local features
(k-means codebook fitted on the database descriptors at map-build time, stored in the map's global.npz).
Descriptors are L2-normalised; similarity is the dot product.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from ..config import merge
from ..registry import Registry
from ..types import Features

GLOBAL_DESCRIPTORS = Registry("global descriptor")


class GlobalDescriptor:
    default_conf: Dict[str, Any] = {}

    def __init__(self, conf: Optional[Mapping[str, Any]] = None, arrays: Optional[Dict[str, np.ndarray]] = None):
        self.conf = merge({"name": None, **self.default_conf}, conf, where=type(self).__name__)
        self.arrays: Dict[str, np.ndarray] = dict(arrays or {})

    def fit(self, features: Sequence[Features], seed: int = 0) -> None:
        """Learn whatever the descriptor needs from the database (codebooks); default: nothing."""

    def compute(self, feats: Features, image: Optional[np.ndarray] = None) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


def _kmeans(x: np.ndarray, k: int, iters: int = 20, seed: int = 0) -> np.ndarray:
    """Spherical k-means (cosine), k-means++ init; deterministic given the seed."""
    rng = np.random.default_rng(seed)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    centers = [x[rng.integers(len(x))]]
    d = 1 - x @ centers[0]
    for _ in range(1, k):
        p = np.maximum(d, 0) ** 2
        p = p / p.sum() if p.sum() > 0 else None
        centers.append(x[rng.choice(len(x), p=p)])
        d = np.minimum(d, 1 - x @ centers[-1])
    c = np.stack(centers)
    for _ in range(iters):
        assign = np.argmax(x @ c.T, axis=1)
        for j in range(k):
            m = x[assign == j]
            if len(m):
                v = m.sum(0)
                c[j] = v / max(np.linalg.norm(v), 1e-12)
    return c.astype(np.float32)


@GLOBAL_DESCRIPTORS.register("vlad")
class VLAD(GlobalDescriptor):
    """VLAD with intra-normalisation and power normalisation (Arandjelovic & Zisserman, 2013)."""

    default_conf = {"num_clusters": 32, "max_train_descriptors": 100000, "power": 0.5}

    def fit(self, features: Sequence[Features], seed: int = 0) -> None:
        desc = np.concatenate([f.descriptors for f in features if len(f)], 0) if features else np.zeros((0, 1))
        k = int(self.conf["num_clusters"])
        if len(desc) < k:
            raise ValueError(f"VLAD needs at least {k} local descriptors to fit its codebook, got {len(desc)}")
        rng = np.random.default_rng(seed)
        if len(desc) > self.conf["max_train_descriptors"]:
            desc = desc[rng.choice(len(desc), self.conf["max_train_descriptors"], replace=False)]
        self.arrays["vlad_centers"] = _kmeans(desc.astype(np.float32), k, seed=seed)

    def compute(self, feats: Features, image: Optional[np.ndarray] = None) -> np.ndarray:
        if "vlad_centers" not in self.arrays:
            raise RuntimeError("VLAD codebook missing: fit() it or load it from the map's global.npz")
        c = self.arrays["vlad_centers"]
        k, d = c.shape
        x = feats.descriptors
        if x.shape[1] != d:
            raise ValueError(f"VLAD codebook has dim {d}, features have dim {x.shape[1]} "
                             "(map built with other features?)")
        out = np.zeros((k, d), np.float32)
        if len(x):
            xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            a = np.argmax(xn @ c.T, axis=1)
            np.add.at(out, a, xn - c[a])
        out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        out = np.sign(out) * np.abs(out) ** self.conf["power"]
        v = out.reshape(-1)
        return (v / max(np.linalg.norm(v), 1e-12)).astype(np.float32)


def create_global_descriptor(conf: Mapping[str, Any],
                             arrays: Optional[Dict[str, np.ndarray]] = None) -> GlobalDescriptor:
    return GLOBAL_DESCRIPTORS.create(conf, arrays=arrays)
