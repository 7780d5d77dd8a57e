"""Training augmentations for recognition: a random affine crop (image and label map together) and
photometric changes including a day-to-night style (exposure, gamma, noise, colour cast), since the
database images are daytime only (the night look itself is ``recognition/night.py``, which the recognizer's
self-check uses too)."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from ...config import merge
from ...recognition.night import night, night_conf, night_style

__all__ = ["Augmenter", "default_conf", "night_style"]

default_conf: Dict[str, Any] = {
    "size": [160, 120],  # (w, h) output
    "scale": [0.8, 1.25],  # zoom range
    "rotation_deg": 8.0,
    "shift": 0.1,  # translation, fraction of the size
    "hflip": 0.0,  # probability (0 by default: mirrored facades are not what queries show)
    "night": 0.5,  # probability of the night style
    **night_conf,  # the night style's exposure, gamma, tint and noise ranges (recognition/night.py)
    "jitter": 0.25,  # day: brightness / contrast / saturation jitter
    "blur": 0.2,  # probability of a slight blur
}


class Augmenter:
    def __init__(self, conf: Optional[Mapping[str, Any]] = None):
        self.conf = merge(default_conf, conf, where="recognition.augment")

    def geometric(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """Warp image (linear) and mask (nearest, 0 outside) into the output size with one random affine."""
        import cv2

        c = self.conf
        w, h = int(c["size"][0]), int(c["size"][1])
        ih, iw = image.shape[:2]
        s = rng.uniform(*c["scale"]) * max(w / iw, h / ih)
        a = np.deg2rad(rng.uniform(-c["rotation_deg"], c["rotation_deg"]))
        R = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        if rng.random() < c["hflip"]:
            R = R @ np.diag([-1.0, 1.0])
        shift = rng.uniform(-c["shift"], c["shift"], 2) * [w, h]
        t = np.array([w / 2, h / 2]) + shift - R @ np.array([iw / 2, ih / 2])
        M = np.hstack([R, t[:, None]])
        img = cv2.warpAffine(image, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        lab = cv2.warpAffine(mask.astype(np.float32), M, (w, h), flags=cv2.INTER_NEAREST,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return img, lab.astype(np.int64)

    def photometric(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """uint8 RGB -> float32 RGB in [0, 1]."""
        import cv2

        c = self.conf
        x: np.ndarray = image.astype(np.float32) / 255.0
        if rng.random() < c["night"]:
            x = night(x, rng, c)
        else:
            j = c["jitter"]
            x = x * rng.uniform(1 - j, 1 + j)
            mean = x.mean()
            x = (x - mean) * rng.uniform(1 - j, 1 + j) + mean
            gray = x.mean(2, keepdims=True)
            x = gray + (x - gray) * rng.uniform(1 - j, 1 + j)
        if rng.random() < c["blur"]:
            x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.2))
        return np.clip(x, 0.0, 1.0).astype(np.float32)

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """-> (3,h,w) float32 RGB in [0,1], (h,w) int64 labels."""
        img, lab = self.geometric(image, mask, rng)
        return self.photometric(img, rng).transpose(2, 0, 1).copy(), lab

