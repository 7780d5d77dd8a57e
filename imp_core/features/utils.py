"""Small helpers shared by the extractors: numpy image -> torch tensor, torch outputs -> sorted ``Features``."""
from __future__ import annotations

import numpy as np

from ..types import Features


def to_gray(image: np.ndarray) -> np.ndarray:
    """HxW uint8 grayscale from an HxW or HxWx3 RGB uint8 image."""
    if image.ndim == 2:
        return image
    import cv2

    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB from an HxW gray or HxWx3 RGB uint8 image."""
    if image.ndim == 3:
        return image
    return np.repeat(image[..., None], 3, axis=2)


def image_tensor(image: np.ndarray, device: str, gray: bool):
    """(1, C, H, W) float32 tensor in [0, 1]; C = 1 when ``gray`` else 3 (RGB)."""
    import torch

    arr = to_gray(image)[None] if gray else to_rgb(image).transpose(2, 0, 1)
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(device=device, dtype=torch.float32) / 255.0
    return t[None]


def make_features(keypoints, descriptors, scores, image_size, max_keypoints=None) -> Features:
    """Build ``Features`` from arrays or tensors: drop keypoints outside the image, sort by descending score
    (stable, so equal scores keep the detector's order) and keep at most ``max_keypoints``."""
    kp = _np(keypoints).astype(np.float32).reshape(-1, 2)
    desc = _np(descriptors).astype(np.float32)
    desc = desc.reshape(len(kp), desc.shape[-1] if desc.size == 0 else -1)
    sc = _np(scores).astype(np.float32).reshape(len(kp))
    w, h = image_size
    inside = (kp[:, 0] >= -0.5) & (kp[:, 1] >= -0.5) & (kp[:, 0] <= w - 0.5) & (kp[:, 1] <= h - 0.5)
    kp, desc, sc = kp[inside], desc[inside], sc[inside]
    if len(kp) == 0:
        return empty_features(desc.shape[1], (w, h))
    order = np.argsort(-sc, kind="stable")
    if max_keypoints is not None and max_keypoints > 0:
        order = order[:max_keypoints]
    return Features(kp[order], desc[order], sc[order], (w, h))


def empty_features(dim: int, image_size) -> Features:
    """Features with no keypoint but ``dim``-wide descriptors.

    Built from a one-keypoint instance because ``Features.__post_init__`` cannot reshape an empty array to (0, -1).
    """
    f = Features(np.zeros((1, 2)), np.zeros((1, dim)), np.zeros(1), image_size)
    f.keypoints, f.descriptors, f.scores = f.keypoints[:0], f.descriptors[:0], f.scores[:0]
    return f


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)
