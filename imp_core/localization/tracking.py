"""Coarse stage "tracking": with a pose prior, pick references near it (distance, viewing angle, covisibility).

No retrieval is run. When the prior is absent the stage proposes nothing, and when the resulting inlier count
is below ``min_inliers`` the localizer falls through to the next stage (global search).
"""
from __future__ import annotations

import time
from typing import List

import numpy as np

from .stages import COARSE_STAGES, Candidate, CoarseStage, QueryContext


@COARSE_STAGES.register("tracking")
class TrackingStage(CoarseStage):
    default_conf = {
        "num_references": 4,
        "max_distance": 20.0,  # metres between the prior and a reference camera centre
        "max_angle_deg": 50.0,  # between viewing directions
        "covisible": 2,  # add this many images covisible with the nearest reference
        "min_inliers": 40,
    }

    def _init(self, conf):
        self.centers = self.map.centers()
        self.axes = np.stack([self.map.pose(n).R[2] for n in self.map.names]) if self.map.names else np.zeros((0, 3))

    def select(self, prior) -> List[str]:
        d = np.linalg.norm(self.centers - prior.center, axis=1)
        ang = np.degrees(np.arccos(np.clip(self.axes @ prior.R[2], -1, 1)))
        ok = np.where((d <= self.conf["max_distance"]) & (ang <= self.conf["max_angle_deg"]))[0]
        # rank by distance with the angle as a soft penalty (1 m per 10 degrees)
        ok = ok[np.argsort(d[ok] + ang[ok] / 10.0, kind="stable")]
        refs = [self.map.names[i] for i in ok[: int(self.conf["num_references"])]]
        if refs and self.conf["covisible"]:
            for n in self.map.covisible(refs[0], int(self.conf["covisible"]) + len(refs)):
                if n not in refs and len(refs) < self.conf["num_references"] + self.conf["covisible"]:
                    refs.append(n)
        return refs

    def propose(self, ctx: QueryContext) -> List[Candidate]:
        if ctx.prior is None:
            return []
        t = time.perf_counter()
        refs = self.select(ctx.prior)
        ctx.timings["tracking"] = ctx.timings.get("tracking", 0.0) + 1000 * (time.perf_counter() - t)
        return [Candidate(refs, int(self.conf["min_inliers"]), "tracking", 1.0)] if refs else []
