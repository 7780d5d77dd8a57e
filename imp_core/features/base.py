"""Local feature extractors: one base class, one registry. Adding a feature type is one new module."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import numpy as np

from ..config import merge
from ..device import resolve_device  # noqa: F401  (re-exported: imp_core.features.base.resolve_device)
from ..registry import Registry
from ..types import Features

EXTRACTORS = Registry(
    "feature extractor",
    modules={
        "sift": "imp_core.features.sift",
        "superpoint": "imp_core.features.superpoint",
        "aliked": "imp_core.features.aliked",
        "disk": "imp_core.features.disk",
        "xfeat": "imp_core.features.xfeat",
    },
)


class FeatureExtractor:
    """``extract(image) -> Features``. ``image`` is HxWx3 uint8 RGB (or HxW uint8 gray).

    Subclasses set ``default_conf`` and implement ``_init`` and ``_extract``. ``conf['device']`` is
    'cpu', 'cuda' or 'auto'. ``conf['max_keypoints']`` bounds the number of keypoints;
    ``conf['resize_max']`` (default 1024, as hloc; None or 0 = full resolution) resizes the longer side down to
    it before extraction (never up); keypoints are returned in the original image's pixel coordinates. Full
    resolution cost 70-145 s per 2816-pixel photo with DISK/ALIKED on CPU, for no accuracy gain in localization.
    """

    default_conf: Dict[str, Any] = {}
    base_conf: Dict[str, Any] = {"name": None, "max_keypoints": 2048, "resize_max": 1024, "device": "auto"}
    descriptor_dim: int = 0

    def __init__(self, conf: Optional[Mapping[str, Any]] = None):
        self.conf = merge({**self.base_conf, **self.default_conf}, conf, where=type(self).__name__)
        self._init(self.conf)

    @property
    def kind(self) -> str:
        """The feature type stored in maps: name plus what changes descriptors (not the keypoint budget)."""
        return str(self.conf["name"])

    def _init(self, conf: Dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _extract(self, image: np.ndarray) -> Features:  # pragma: no cover - abstract
        raise NotImplementedError

    def extract(self, image: np.ndarray) -> Features:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
            raise ValueError(
                f"{self.kind}: expected an HxW or HxWx3 uint8 image, got dtype {image.dtype} shape {image.shape}"
            )
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        h, w = image.shape[:2]
        scale = 1.0
        rmax = self.conf.get("resize_max")
        if rmax and max(h, w) > rmax:
            import cv2

            scale = rmax / max(h, w)
            image = cv2.resize(image, (int(round(w * scale)), int(round(h * scale))), interpolation=cv2.INTER_AREA)
        feats = self._extract(image)
        if scale != 1.0:
            # pixel-centre aware rescale back to the original resolution
            feats.keypoints = (feats.keypoints + 0.5) / scale - 0.5
        feats.image_size = (w, h)
        feats.kind = self.kind
        return feats


def create_extractor(conf: Mapping[str, Any]) -> FeatureExtractor:
    return EXTRACTORS.create(conf)
