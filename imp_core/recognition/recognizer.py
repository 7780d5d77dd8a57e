"""Run a trained recognition network on one image: label map, recognized instances, global descriptor."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..config import merge
from ..device import resolve_device


@dataclass
class Recognition:
    label_map: np.ndarray  # (H, W) int32 at image resolution, 0 = no instance
    confidence: np.ndarray  # (H, W) float32 softmax probability of the label
    instances: List[Tuple[int, float]]  # (instance id, confidence), best first
    descriptor: np.ndarray  # (D,) float32, L2-normalised


def image_to_tensor(image: np.ndarray, size: Tuple[int, int]):
    """HxWx3 uint8 RGB -> (1,3,h,w) float tensor in [0,1] at ``size`` = (w, h)."""
    import cv2
    import torch

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"recognition expects an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    if (image.shape[1], image.shape[0]) != tuple(size):
        image = cv2.resize(image, tuple(int(s) for s in size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0


class Recognizer:
    """Loads a recognition checkpoint and answers ``predict(image) -> Recognition``."""

    default_conf: Dict[str, Any] = {
        "model": None,  # our checkpoint, or an official LBR state dict (then give "network")
        "network": None,  # network conf for bare state dicts (encoder, classes, psp_out_channels, input_bgr)
        "device": "auto",
        "input_size": None,  # (w, h); default: the size the model was trained at
        "min_area": 0.005,  # an instance must cover this fraction of the image to be recognized
        "max_instances": 10,
    }

    def __init__(self, conf: Optional[Mapping[str, Any]] = None, net: Any = None):
        from .network import load_model  # lazy: torch, not loaded before a recognizer is built

        self.conf = merge(self.default_conf, conf, where="recognition")
        self.device = resolve_device(self.conf["device"])
        if net is not None:
            self.net = net.eval().to(self.device)
            self.fingerprint = "in-memory"
        else:
            if not self.conf["model"]:
                raise ValueError("recognition.model: path to a recognition checkpoint is required")
            path = Path(self.conf["model"])
            self.net = load_model(path, self.conf["network"] or None, self.device)
            self.fingerprint = hashlib.sha1(path.read_bytes()).hexdigest()[:16]
        size = self.conf["input_size"] or self.net.conf["input_size"]
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"recognition.input_size must be (w, h), got {size}")
        self.size = (int(size[0]), int(size[1]))

    @property
    def num_classes(self) -> int:
        return self.net.num_classes

    def _forward(self, image: np.ndarray):
        import torch

        x = self.net.normalize(image_to_tensor(image, self.size).to(self.device))
        with torch.inference_mode():
            return self.net(x)

    def descriptor(self, image: np.ndarray) -> np.ndarray:
        out = self._forward(image)
        return self.net.global_descriptor(out["feat"])[0].cpu().numpy().astype(np.float32)

    def predict(self, image: np.ndarray) -> Recognition:
        import cv2
        import torch.nn.functional as F

        out = self._forward(image)
        logits = F.interpolate(out["masks"], size=(self.size[1], self.size[0]), mode="bilinear", align_corners=False)
        prob = logits.softmax(1)[0]
        best_prob, best_label = prob.max(0)
        lab = best_label.cpu().numpy().astype(np.int32)
        conf = best_prob.cpu().numpy().astype(np.float32)
        instances = rank_instances(lab, conf, float(self.conf["min_area"]), int(self.conf["max_instances"]))
        h, w = image.shape[:2]
        label_map = cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST)
        confidence = cv2.resize(conf, (w, h), interpolation=cv2.INTER_LINEAR)
        desc = self.net.global_descriptor(out["feat"])[0].cpu().numpy().astype(np.float32)
        return Recognition(label_map, confidence, instances, desc)

    def close(self) -> None:
        self.net = None


def rank_instances(labels: np.ndarray, conf: np.ndarray, min_area: float,
                   max_instances: int) -> List[Tuple[int, float]]:
    """Instances of a predicted label map scored by their mean pixel confidence, best first."""
    flat, c = labels.reshape(-1), conf.reshape(-1)
    n = np.bincount(flat)
    s = np.bincount(flat, weights=c, minlength=len(n))
    ids = [i for i in range(1, len(n)) if n[i] >= max(1.0, min_area * flat.size)]
    ranked = sorted(((int(i), float(s[i] / n[i])) for i in ids), key=lambda t: -t[1])
    return ranked[:max_instances]
