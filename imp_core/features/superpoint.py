"""SuperPoint (DeTone et al., CVPRW 2018): our own model whose ``state_dict`` is exactly magicleap's
``superpoint_v1.pth`` layout (conv1a..conv4b encoder, convPa/convPb detector, convDa/convDb descriptor).

Weights are not shipped (restrictive licence): conf ``weights`` is the path to ``superpoint_v1.pth``. The file is read
with ``weights_only=True`` and loaded strictly; wrong keys or shapes raise an error naming them.

Post-processing follows SuperGlue's reference: softmax over 65 bins, the 64 cell bins unfolded to full resolution,
NMS by iterated max-pooling (``nms_radius``), ``keypoint_threshold`` on the score, ``remove_borders`` pixels
dropped, the ``max_keypoints`` best kept, descriptors bilinearly sampled from the 1/8 map and L2-normalised (256-D).
Defaults for 640x480 localization: nms_radius 4, keypoint_threshold 0.005, remove_borders 4, 2048 keypoints.
Input is gray in [0, 1]; sides that are not multiples of 8 are zero-padded and keypoints there are dropped.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..device import resolve_device
from ..types import Features
from .base import EXTRACTORS, FeatureExtractor
from .utils import image_tensor, make_features
from .weights import load_checkpoint, load_state_dict_checked, user_weight_path


def simple_nms(scores: torch.Tensor, radius: int) -> torch.Tensor:
    """Keep local maxima of a (B, H, W) score map; two extra rounds recover maxima next to suppressed areas."""
    if radius < 0:
        raise ValueError(f"SuperPoint: nms_radius must be >= 0, got {radius}")

    def max_pool(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, kernel_size=2 * radius + 1, stride=1, padding=radius)

    zeros = torch.zeros_like(scores)
    is_max = scores == max_pool(scores)
    for _ in range(2):
        suppressed = max_pool(is_max.float()) > 0
        remaining = torch.where(suppressed, zeros, scores)
        is_max = is_max | ((remaining == max_pool(remaining)) & ~suppressed)
    return torch.where(is_max, scores, zeros)


def sample_descriptors(keypoints: torch.Tensor, descriptors: torch.Tensor, cell: int = 8) -> torch.Tensor:
    """Bilinear descriptors at (N, 2) pixel keypoints from a (1, D, h, w) map of ``cell``-pixel cells -> (N, D)."""
    _, d, h, w = descriptors.shape
    # a cell's descriptor sits at the centre of its cell: pixel (cell / 2 - 0.5)
    pos = keypoints - cell / 2 + 0.5
    pos = pos / pos.new_tensor([w * cell - cell / 2 - 0.5, h * cell - cell / 2 - 0.5])
    grid = (pos * 2 - 1).view(1, 1, -1, 2)
    desc = F.grid_sample(descriptors, grid, mode="bilinear", align_corners=True)
    return F.normalize(desc.reshape(d, -1), p=2, dim=0).t()


class SuperPointNet(nn.Module):
    """The network: VGG-like shared encoder at 1/8 resolution, a 65-bin detector head and a descriptor head."""

    def __init__(self, descriptor_dim: int = 256):
        super().__init__()
        c1, c2, c3, c4, c5 = 64, 64, 128, 128, 256
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv1a = nn.Conv2d(1, c1, 3, 1, 1)
        self.conv1b = nn.Conv2d(c1, c1, 3, 1, 1)
        self.conv2a = nn.Conv2d(c1, c2, 3, 1, 1)
        self.conv2b = nn.Conv2d(c2, c2, 3, 1, 1)
        self.conv3a = nn.Conv2d(c2, c3, 3, 1, 1)
        self.conv3b = nn.Conv2d(c3, c3, 3, 1, 1)
        self.conv4a = nn.Conv2d(c3, c4, 3, 1, 1)
        self.conv4b = nn.Conv2d(c4, c4, 3, 1, 1)
        self.convPa = nn.Conv2d(c4, c5, 3, 1, 1)
        self.convPb = nn.Conv2d(c5, 65, 1, 1, 0)
        self.convDa = nn.Conv2d(c4, c5, 3, 1, 1)
        self.convDb = nn.Conv2d(c5, descriptor_dim, 1, 1, 0)

    def forward(self, image: torch.Tensor):
        """(B, 1, H, W) in [0, 1], H and W multiples of 8 -> (scores (B, H, W), dense descriptors (B, D, H/8, W/8))."""
        x = image
        for conv_a, conv_b in ((self.conv1a, self.conv1b), (self.conv2a, self.conv2b), (self.conv3a, self.conv3b)):
            x = self.pool(self.relu(conv_b(self.relu(conv_a(x)))))
        x = self.relu(self.conv4b(self.relu(self.conv4a(x))))

        scores = F.softmax(self.convPb(self.relu(self.convPa(x))), dim=1)[:, :-1]
        b, _, h, w = scores.shape
        scores = scores.permute(0, 2, 3, 1).reshape(b, h, w, 8, 8)
        scores = scores.permute(0, 1, 3, 2, 4).reshape(b, h * 8, w * 8)

        desc = F.normalize(self.convDb(self.relu(self.convDa(x))), p=2, dim=1)
        return scores, desc


@EXTRACTORS.register("superpoint")
class SuperPoint(FeatureExtractor):
    default_conf: Dict[str, Any] = {
        "weights": None,
        "nms_radius": 4,
        "keypoint_threshold": 0.005,
        "remove_borders": 4,
    }
    descriptor_dim = 256

    def _init(self, conf: Dict[str, Any]) -> None:
        self.device = resolve_device(conf["device"])
        path = user_weight_path(conf["weights"], "SuperPoint")
        net = SuperPointNet(self.descriptor_dim)
        load_state_dict_checked(net, load_checkpoint(path, "SuperPoint"), "SuperPoint", path)
        self.net = net.eval().to(self.device)

    def _extract(self, image: np.ndarray) -> Features:
        h, w = image.shape[:2]
        x = image_tensor(image, self.device, gray=True)
        x = F.pad(x, (0, (-w) % 8, 0, (-h) % 8))
        border = int(self.conf["remove_borders"])
        with torch.inference_mode():
            scores, dense = self.net(x)
            scores = simple_nms(scores, int(self.conf["nms_radius"]))[0]
            ij = torch.nonzero(scores > float(self.conf["keypoint_threshold"]))
            keep = (ij[:, 0] >= border) & (ij[:, 0] < h - border) & (ij[:, 1] >= border) & (ij[:, 1] < w - border)
            ij = ij[keep]
            kp_scores = scores[ij[:, 0], ij[:, 1]]
            max_kp = int(self.conf["max_keypoints"] or 0)
            if 0 < max_kp < len(ij):
                kp_scores, idx = torch.topk(kp_scores, max_kp)
                ij = ij[idx]
            keypoints = ij.flip(1).float()
            desc = sample_descriptors(keypoints, dense)
        return make_features(keypoints, desc, kp_scores, (w, h), max_kp)
