"""Tracking: the localizer's state between frames (``Tracker``) and the coarse stage "tracking" that uses it.

``Tracker`` holds the prior (the last accepted pose, or one given from outside such as /initialpose), how many
frames in a row went without a fix, and the last frame's stamp; it drops the prior after too many lost frames or
a stamp gap, and tells whether a pose stayed near the prior.

The stage: with a pose prior, pick references near it (distance, viewing angle, covisibility). No retrieval is run.
When the prior is absent the stage proposes nothing, and when the resulting inlier count is below ``min_inliers``
the localizer falls through to the next stage (global search).
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional

import numpy as np

from ..stages import COARSE_STAGES, Candidate, CoarseStage, QueryContext
from ..types import STATUS_LOST, STATUS_RELOCALIZING, Pose, pose_error


class Tracker:
    """Tracking state of one localizer. ``conf``: the localizer's ``tracking`` section (max_lost_frames,
    max_jump_m, max_jump_deg, max_speed_mps, max_gap_s)."""

    def __init__(self, conf: Mapping[str, Any]):
        self.conf = conf
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next frame is localized globally."""
        self.prior: Optional[Pose] = None  # cam_from_world
        self.covariance: Optional[np.ndarray] = None
        self.lost = 0  # frames in a row without a fix
        self.tracking = False  # the last fix came through and the prior is still held
        self.last_stamp: Optional[float] = None
        self.prior_stamp: Optional[float] = None  # stamp of the frame the prior was fixed in

    def set_prior(self, pose: Pose, covariance: Optional[np.ndarray] = None) -> None:
        """A prior from outside (e.g. /initialpose): the next frame tries references near it."""
        self.prior, self.covariance, self.lost, self.prior_stamp = pose, covariance, 0, None

    def _drop(self) -> None:
        self.prior = None
        self.tracking = False

    def new_frame(self, stamp: Optional[float]) -> None:
        """A frame taken at ``stamp`` (seconds; None: unknown): a stamp going backwards or jumping ahead by more
        than ``max_gap_s`` (a new sequence, a dropped stream) drops the prior."""
        if stamp is None:
            return
        last = self.last_stamp
        if last is not None and (stamp < last or stamp - last > self.conf["max_gap_s"]):
            self._drop()
        self.last_stamp = stamp

    def near(self, pose: Pose, prior: Pose) -> bool:
        """Whether ``pose`` stayed within ``max_jump_m`` / ``max_jump_deg`` of ``prior``; for the tracker's own
        prior the distance allowed grows by ``max_speed_mps`` x the seconds since the prior's frame (a stream
        processed slower than it comes skips frames, and the camera moves on meanwhile)."""
        limit = float(self.conf["max_jump_m"])
        speed = float(self.conf.get("max_speed_mps") or 0.0)
        if speed > 0 and prior is self.prior and self.prior_stamp is not None and self.last_stamp is not None:
            limit += speed * max(0.0, self.last_stamp - self.prior_stamp)
        dt, dr = pose_error(pose, prior)
        return dt <= limit and dr <= self.conf["max_jump_deg"]

    def fixed(self, pose: Pose, covariance: Optional[np.ndarray]) -> None:
        """A pose was accepted: it is the next frame's prior."""
        self.prior, self.covariance, self.lost, self.tracking = pose, covariance, 0, True
        self.prior_stamp = self.last_stamp

    def missed(self) -> str:
        """A frame without a fix; its status: RELOCALIZING while tracking, LOST once ``max_lost_frames`` frames in a
        row missed (the prior is then dropped) or when there was no track."""
        self.lost += 1
        status = STATUS_RELOCALIZING if self.tracking else STATUS_LOST
        if self.lost > self.conf["max_lost_frames"]:
            self._drop()
            status = STATUS_LOST
        return status


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
        refs = self.select(ctx.prior)  # timed by the localizer, as every stage
        return [Candidate(refs, int(self.conf["min_inliers"]), "tracking", 1.0)] if refs else []
