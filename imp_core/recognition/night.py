"""The simulated night look of a daytime image (the database images are daytime only): darker mid-tones (gamma),
low exposure, a light-colour cast and sensor noise. Training augments with it (``training/recognition/augment.py``)
and a map's recognizer is checked on it (``map_recognizer.self_check``)."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import numpy as np

from ..config import merge

night_conf: Dict[str, Any] = {
    "exposure": [0.08, 0.5],  # multiplicative exposure
    "gamma": [1.0, 2.0],  # x ** gamma darkens mid-tones
    "tint": 0.35,  # per-channel gain spread (sodium / LED light colour)
    "noise": [0.005, 0.04],  # Gaussian sensor noise sigma (after exposure)
}


def night(x: np.ndarray, rng: np.random.Generator, conf: Mapping[str, Any]) -> np.ndarray:
    """Float RGB in [0, 1] -> its night look (not clipped); ``conf`` has the keys of ``night_conf``."""
    x = x ** rng.uniform(*conf["gamma"])
    gains = 1.0 + rng.uniform(-conf["tint"], conf["tint"], 3)
    x = x * rng.uniform(*conf["exposure"]) * gains[None, None, :]
    return x + rng.normal(0.0, rng.uniform(*conf["noise"]), x.shape).astype(np.float32)


def night_style(image: np.ndarray, rng: np.random.Generator, conf: Optional[Mapping[str, Any]] = None) -> np.ndarray:
    """Only the night style, uint8 in and out (for previews and the recognizer's self-check). The random draws are
    those of the training augmenter's photometric step with night probability 1 and no blur, so a seed gives the
    same image as it."""
    c = merge(night_conf, {k: v for k, v in (conf or {}).items() if k in night_conf}, where="recognition.night")
    rng.random()  # the augmenter's night-or-day draw
    x = night(image.astype(np.float32) / 255.0, rng, c)
    rng.random()  # the augmenter's blur draw
    return (np.clip(x, 0.0, 1.0).astype(np.float32) * 255 + 0.5).astype(np.uint8)
