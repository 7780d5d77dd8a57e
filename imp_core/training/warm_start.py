"""Start a matcher's training from another trained model (``trainer`` conf ``warm_start``).

Every tensor of the file whose name and shape fit the new model is copied; the rest keeps its random
initialisation. The use: a model for new features from the weights trained for other ones, e.g. ALIKED (128-d
descriptors) at the XFeat model's width (64) with an ``input_proj`` in front. That projection starts as the
principal directions of the new descriptors (uncentred, like the descriptors the old model read), scaled so that
projected descriptors have unit norm on average as XFeat's do, so the attention layers start from inputs of the
size they were trained on.

The GM ablation starts from IMP weights the same way (``unshare``): a GM layer where IMP shares attention gets the
query and key projections of the layer whose attention probabilities IMP reuses there (the same kind of layer,
self or cross, one iteration earlier) and IMP's own value projection and merge, so GM starts as the IMP model
that recomputes the attention it used to reuse.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Mapping, Union

import torch

from ..matching.imp.checkpoint import read_checkpoint
from ..matching.imp.model import IMPModel


def pca_projection(desc: torch.Tensor, dim: int) -> torch.Tensor:
    """[dim, D] rows = the top ``dim`` right singular vectors of ``desc`` [N, D], scaled to unit mean output norm."""
    if desc.ndim != 2 or desc.shape[0] < dim or desc.shape[1] < dim:
        raise ValueError(f"need at least {dim} descriptors of at least {dim} dimensions, got {tuple(desc.shape)}")
    x = desc.double()
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    w = vh[:dim]
    scale = (x @ w.T).norm(dim=1).mean().clamp(min=1e-12)
    return (w / scale).float()


def unshare(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """IMP tensors under GM names: every sharing layer ``L`` (``gnn.layers.L.proj`` / ``.merge``) becomes a full
    attention layer whose query / key projections are layer ``L - 2``'s (the one whose probabilities it reused)
    and whose value projection and merge are its own. Other tensors are unchanged."""
    out: Dict[str, torch.Tensor] = {}
    for k, v in state.items():
        m = re.match(r"gnn\.layers\.(\d+)\.(proj|merge)\.(weight|bias)$", k)
        if m is None:
            out[k] = v
            continue
        layer, what, p = int(m.group(1)), m.group(2), m.group(3)
        if what == "merge":
            out[f"gnn.layers.{layer}.attn.merge.{p}"] = v
            continue
        out[f"gnn.layers.{layer}.attn.proj.2.{p}"] = v
        for j in (0, 1):
            src = f"gnn.layers.{layer - 2}.attn.proj.{j}.{p}"
            if src not in state:
                raise ValueError(f"cannot unshare layer {layer}: the checkpoint has no {src} (layer {layer - 2} "
                                 "must compute the attention that layer reuses)")
            out[f"gnn.layers.{layer}.attn.proj.{j}.{p}"] = state[src]
    return out


def warm_start(model: IMPModel, path: Union[str, Path], descriptors: torch.Tensor) -> Dict[str, Any]:
    """Copy the fitting tensors of the checkpoint at ``path`` into ``model``; PCA-initialise a new ``input_proj``
    from ``descriptors`` [N, input_dim]. Returns what was copied and what was not."""
    state, arch = read_checkpoint(path)
    own = model.state_dict()
    unshared = model.conf["variant"] == "gm" and arch["variant"] != "gm"
    if unshared:  # GM from IMP weights (their sharing layers, as read_checkpoint tells)
        state = unshare(state)
    copied = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not copied:
        raise ValueError(f"warm_start {path}: no tensor fits the model (D={model.descriptor_dim}, "
                         f"{model.n_layers} iterations)")
    model.load_state_dict(copied, strict=False)
    fresh = sorted(k for k in own if k not in copied)
    if model.input_proj is not None and "input_proj.weight" not in copied:
        with torch.no_grad():
            model.input_proj.weight[:, :, 0] = pca_projection(descriptors, model.descriptor_dim)
            if model.input_proj.bias is not None:
                model.input_proj.bias.zero_()
    return {"warm_start": str(path), "copied": len(copied), "fresh": fresh, "unshared": unshared,
            "skipped": sorted(k for k in state if k not in copied)}
