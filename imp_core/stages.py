"""The seams of the localizer: coarse stages propose candidate reference sets, the fine stage verifies them.

This interface sits below both the localizer that runs the stages (``localization/``) and the packages that provide
them (``retrieval/stage.py``, ``recognition/coarse.py``, ``localization/tracking.py``), so neither imports the other.

A coarse stage (global retrieval, instance recognition, tracking prior) sees a ``QueryContext`` and returns
``Candidate`` clusters in the order they should be tried. The localizer matches the query against each
cluster's references, lifts matches to 2D-3D and runs PnP; it accepts the first cluster whose inlier count
reaches ``min_inliers`` (LBR's progressive acceptance) and otherwise keeps the best.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from .config import merge
from .registry import Registry
from .types import Camera, Features, Pose

COARSE_STAGES = Registry(
    "coarse stage",
    modules={
        "retrieval": "imp_core.retrieval.stage",
        "tracking": "imp_core.localization.tracking",
        "instance": "imp_core.recognition.coarse",
    },
)


@dataclass
class Candidate:
    references: List[str]  # database image names, best first
    min_inliers: int  # accept this cluster's pose when PnP inliers >= min_inliers
    source: str  # "retrieval", "tracking", "instance:<id>"
    score: float = 0.0


@dataclass
class QueryContext:
    image: np.ndarray  # HxWx3 uint8 RGB, undistorted if the camera had distortion
    camera: Camera
    features: Optional[Features] = None  # filled by the localizer after extraction
    global_descriptor: Optional[np.ndarray] = None  # filled by whichever stage computes one
    prior: Optional[Pose] = None  # cam_from_world prior (tracking / initial pose)
    instances: List[Tuple[int, float]] = field(default_factory=list)  # recognized (instance id, confidence)
    label_map: Optional[np.ndarray] = None  # HxW int32 instance label per pixel (0 = none), at image resolution
    # the stage that recognizes instances (and so owns ``label_map``) gives each query keypoint the label under it
    label_keypoints: bool = True
    extras: Dict[str, Any] = field(default_factory=dict)  # per-stage scratch (timings go to the result)
    # the running stage's own sub-timings in ms (e.g. "recognition"); the localizer times each stage as a whole
    # and reports these next to it (``Localizer._propose``)
    timings: Dict[str, float] = field(default_factory=dict)


class CoarseStage:
    """Base class. ``lmap`` is the loaded ``imp_core.mapping.LocalizationMap``."""

    default_conf: Dict[str, Any] = {}

    def __init__(self, conf: Optional[Mapping[str, Any]], lmap: Any):
        self.conf = merge({"name": None, **self.default_conf}, conf, where=type(self).__name__)
        self.map = lmap
        self._init(self.conf)

    def _init(self, conf: Dict[str, Any]) -> None:
        pass

    def prepare(self, ctx: QueryContext) -> None:
        """Per-frame work before proposals (e.g. run the recognition network). Default: nothing."""

    def propose(self, ctx: QueryContext) -> List[Candidate]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Free models (lifecycle cleanup)."""
