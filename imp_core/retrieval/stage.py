"""Coarse stage "retrieval": the top-k database images by global descriptor similarity (hloc-style)."""
from __future__ import annotations

from typing import List

import numpy as np

from ..stages import COARSE_STAGES, Candidate, CoarseStage, QueryContext
from .global_descriptors import create_global_descriptor


@COARSE_STAGES.register("retrieval")
class RetrievalStage(CoarseStage):
    default_conf = {
        "top_k": 5,  # references matched together as one cluster
        "num_clusters": 1,  # >1: also try the next top_k images as further clusters
        "min_inliers": 30,  # accept the cluster's pose when PnP inliers reach this
    }

    def _init(self, conf):
        gconf = self.map.global_conf
        if not gconf or self.map.global_descriptors.shape[1] == 0:
            raise ValueError(f"map {self.map.dir} has no global descriptors (global.npz); rebuild it")
        self.descriptor = create_global_descriptor(gconf, arrays=self.map.global_arrays())
        self.db = self.map.global_descriptors / np.maximum(
            np.linalg.norm(self.map.global_descriptors, axis=1, keepdims=True), 1e-12)

    def query_descriptor(self, ctx: QueryContext) -> np.ndarray:
        if "retrieval_descriptor" not in ctx.extras:
            ctx.extras["retrieval_descriptor"] = self.descriptor.compute(ctx.features, ctx.image)
        return ctx.extras["retrieval_descriptor"]

    def ranking(self, ctx: QueryContext) -> List[str]:
        q = self.query_descriptor(ctx)
        sim = self.db @ q
        order = np.argsort(-sim, kind="stable")
        ctx.extras["retrieval_scores"] = {self.map.names[i]: float(sim[i]) for i in order[: 4 * self.conf["top_k"]]}
        return [self.map.names[i] for i in order]

    def propose(self, ctx: QueryContext) -> List[Candidate]:
        ranked = self.ranking(ctx)  # timed by the localizer (or, as a fallback, by the stage that owns it)
        k = int(self.conf["top_k"])
        out = []
        for c in range(int(self.conf["num_clusters"])):
            refs = ranked[c * k:(c + 1) * k]
            if refs:
                score = float(np.mean([ctx.extras["retrieval_scores"].get(r, 0.0) for r in refs]))
                out.append(Candidate(refs, int(self.conf["min_inliers"]), "retrieval", score))
        return out
