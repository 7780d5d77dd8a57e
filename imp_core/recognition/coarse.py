"""Coarse stage "instance" (LBR): recognize global instances in the query, then search the database
instance by instance in confidence order, ranking each instance's images by the recognition network's
global descriptor; plain global retrieval clusters follow as the fallback."""
from __future__ import annotations

import time
from typing import Any, Dict, List

import numpy as np

from ..config import ConfigError
from ..retrieval.stage import RetrievalStage
from ..stages import COARSE_STAGES, Candidate, CoarseStage, QueryContext
from .database import load_db_descriptors
from .instances import InstanceIndex
from .masks import keypoint_labels, layout_histogram
from .recognizer import Recognizer


@COARSE_STAGES.register("instance")
class InstanceCoarseStage(CoarseStage):
    default_conf: Dict[str, Any] = {
        "model": None,  # recognition checkpoint (required)
        "network": None,  # network conf for official LBR state dicts
        "device": "auto",
        "min_area": 0.005,  # fraction of the image an instance must cover
        "k_rec": 30,  # instances searched at most
        "k_can": 5,  # references per instance (LBR: Aachen 5, RobotCar 1)
        "global_score_th": 0.0,  # drop references whose descriptor cosine is below (LBR: 0.95 with ResNeXt)
        # how an instance's images are ranked for its k_can references: "layout" (how much of the query's recognized
        # instances, in its proportions, each image shows, plus layout_global x the descriptor cosine) or "global"
        # (LBR: the descriptor alone). On the city world at night "layout" puts 3+ right-place references in one of
        # the first 5 clusters for 66 % of queries, "global" for 39 % (15 min recognizer)
        "rank": "layout",
        "layout_global": 0.25,
        "rec_th": 100,  # inliers that accept an instance cluster (LBR: Aachen 100, RobotCar 200)
        "nv_th": 50,  # inliers that accept a fallback cluster
        "fallback": None,  # coarse stage conf (e.g. {"name": "retrieval"}); None: our descriptor, one image per cluster
        "fallback_top_k": RetrievalStage.default_conf["top_k"],  # images retrieved by our descriptor (fallback None)
    }

    def _init(self, conf: Dict[str, Any]) -> None:
        if not conf["model"]:
            raise ConfigError("coarse stage 'instance' needs 'model': a recognition checkpoint "
                              "(train one with `imp train-recognition`)")
        self.recognizer = Recognizer({"model": conf["model"], "network": conf["network"], "device": conf["device"],
                                      "min_area": conf["min_area"], "max_instances": conf["k_rec"]})
        self.index = InstanceIndex.load(self.map.dir)
        names, desc, fp = load_db_descriptors(self.map.dir)
        if fp != self.recognizer.fingerprint:
            raise ValueError(f"{self.map.dir}: database recognition descriptors were computed with model {fp}, "
                             f"but instance.model {conf['model']} is {self.recognizer.fingerprint}; rerun "
                             "`imp instances --model` with this model")
        if set(names) != set(self.map.names):
            raise ValueError(f"{self.map.dir}: recognition descriptors cover other images than the map; rerun "
                             "`imp instances --model` on this map")
        self.names = names
        self.row = {n: i for i, n in enumerate(names)}
        self.db_desc = desc
        if self.recognizer.num_classes != self.index.num_instances + 1:
            raise ValueError(f"instance.model predicts {self.recognizer.num_classes - 1} instances but the map "
                             f"{self.map.dir} has {self.index.num_instances}")
        # per instance: its database images and their descriptor rows, built once (propose runs per frame)
        self._images = {i: [n for n in v if n in self.row] for i, v in self.index.instance_images.items()}
        self._rows = {i: np.array([self.row[n] for n in v], dtype=np.int64) for i, v in self._images.items()}
        if conf["rank"] not in ("layout", "global"):
            raise ConfigError(f"coarse stage 'instance': rank must be 'layout' or 'global', got {conf['rank']!r}")
        self.db_layouts = self.index.layouts(names) if conf["rank"] == "layout" else None
        self.fallback = None
        if conf["fallback"]:
            self.fallback = COARSE_STAGES.create(dict(conf["fallback"]), lmap=self.map)

    def prepare(self, ctx: QueryContext) -> None:
        t0 = time.perf_counter()
        rec = self.recognizer.predict(ctx.image)
        ctx.instances = rec.instances
        ctx.label_map = rec.label_map
        if ctx.label_keypoints and ctx.features is not None and ctx.features.labels is None:
            ctx.features.labels = keypoint_labels(ctx.features.keypoints, rec.label_map)
        ctx.extras["instance_descriptor"] = rec.descriptor
        if self.db_layouts is not None:
            ctx.extras["instance_layout"] = layout_histogram(rec.label_map, rec.confidence, self.recognizer.num_classes)
        ctx.timings["recognition"] = 1000 * (time.perf_counter() - t0)
        if self.fallback is not None:
            t1 = time.perf_counter()
            self.fallback.prepare(ctx)
            self._add_fallback_time(ctx, t1)
        if ctx.global_descriptor is None:
            ctx.global_descriptor = rec.descriptor

    def propose(self, ctx: QueryContext) -> List[Candidate]:
        q = ctx.extras.get("instance_descriptor")
        if q is None:
            raise RuntimeError("instance stage: propose() called before prepare()")
        sim_all = self.db_desc @ q
        th = float(self.conf["global_score_th"])
        rank = sim_all
        if self.db_layouts is not None:
            rank = self.db_layouts @ ctx.extras["instance_layout"] + float(self.conf["layout_global"]) * sim_all
        out: List[Candidate] = []
        seen: set = set()
        for iid, score in ctx.instances[: int(self.conf["k_rec"])]:
            names = self._images.get(int(iid), [])
            if not names:
                continue
            rows = self._rows[int(iid)]
            sims = sim_all[rows]
            order = [k for k in np.argsort(-rank[rows], kind="stable") if sims[k] >= th][: int(self.conf["k_can"])]
            refs = frozenset(names[k] for k in order)
            if order and refs not in seen:  # two instances on the same images: verify that set once
                seen.add(refs)
                out.append(Candidate([names[k] for k in order], int(self.conf["rec_th"]), f"instance:{iid}",
                                     float(score)))
        if self.fallback is not None:
            t1 = time.perf_counter()
            fb = self.fallback.propose(ctx)
            self._add_fallback_time(ctx, t1)
            for c in fb:
                c.min_inliers = int(self.conf["nv_th"])
            out.extend(fb)
        else:
            # LBR: each retrieved image is its own single-image cluster
            for k in np.argsort(-sim_all, kind="stable")[: int(self.conf["fallback_top_k"])]:
                out.append(Candidate([self.names[k]], int(self.conf["nv_th"]), "retrieval", float(sim_all[k])))
        return out

    def _add_fallback_time(self, ctx: QueryContext, since: float) -> None:
        """The fallback stage's time is this stage's sub-timing, under the fallback's name (e.g. "retrieval")."""
        assert self.fallback is not None
        key = self.fallback.conf["name"]
        ctx.timings[key] = ctx.timings.get(key, 0.0) + 1000 * (time.perf_counter() - since)

    def close(self) -> None:
        self.recognizer.close()
        if self.fallback is not None:
            self.fallback.close()
