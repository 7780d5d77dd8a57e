"""OpenCV SIFT with RootSIFT descriptors.

Defaults for 640x480 localization: at most 2048 keypoints (strongest DoG responses), OpenCV's detector
settings (3 layers per octave, contrast 0.04, edge 10, sigma 1.6) and RootSIFT (``rootsift: True``), which matches
better than plain SIFT under nearest-neighbour matching. Descriptors are 128-D float32 with unit L2 norm
(RootSIFT: L1-normalise then square root, which gives unit L2 norm). Scores are the DoG responses.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from ..types import Features
from .base import EXTRACTORS, FeatureExtractor
from .utils import empty_features, make_features, to_gray


@EXTRACTORS.register("sift")
class SIFT(FeatureExtractor):
    default_conf: Dict[str, Any] = {
        "rootsift": True,
        "n_octave_layers": 3,
        "contrast_threshold": 0.04,
        "edge_threshold": 10.0,
        "sigma": 1.6,
    }
    descriptor_dim = 128

    def _init(self, conf: Dict[str, Any]) -> None:
        import cv2

        if not hasattr(cv2, "SIFT_create"):  # pragma: no cover - very old OpenCV
            raise RuntimeError("this OpenCV build has no cv2.SIFT_create; install opencv-python>=4.4")
        self._sift = cv2.SIFT_create(
            nfeatures=max(0, int(conf["max_keypoints"] or 0)),
            nOctaveLayers=int(conf["n_octave_layers"]),
            contrastThreshold=float(conf["contrast_threshold"]),
            edgeThreshold=float(conf["edge_threshold"]),
            sigma=float(conf["sigma"]),
        )

    def _extract(self, image: np.ndarray) -> Features:
        h, w = image.shape[:2]
        kps, desc = self._sift.detectAndCompute(to_gray(image), None)
        if desc is None or len(kps) == 0:
            return empty_features(128, (w, h))
        xy = np.array([k.pt for k in kps], dtype=np.float32)
        scores = np.array([k.response for k in kps], dtype=np.float32)
        desc = desc.astype(np.float32)
        if self.conf["rootsift"]:
            desc = desc / np.maximum(np.abs(desc).sum(axis=1, keepdims=True), 1e-12)
            desc = np.sqrt(desc)
        else:
            desc = desc / np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
        return make_features(xy, desc, scores, (w, h), self.conf["max_keypoints"])
