"""Loading released IMP/EIMP/GM checkpoints and SuperGlue weights into ``IMPModel``.

Official files (imp-release, Google Drive link in its README) are ``torch.save({'epoch', 'iteration', 'model',
'min_loss'})`` with the state dict under ``'model'`` and no ``module.`` prefix; bare state dicts and ``module.``
prefixes are accepted too. Files are read with ``torch.load(..., weights_only=True)`` (nothing is unpickled).

SuperGlue (``superglue_outdoor.pth`` / ``superglue_indoor.pth``) loads into GM with a SuperGlue-shaped conf:
9 iterations, BatchNorm (its running statistics are kept), log-space optimal transport (100 iterations) and its
single ``final_proj`` as the head of the last iteration. What cannot be represented: heads for iterations 0-7
(SuperGlue has none), so a SuperGlue-loaded GM matches only after the last iteration (no early stop).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch

from .model import VARIANTS, IMPModel, sharing_pattern

# name -> (variant, descriptor_dim); imp and eimp files hold the same keys (EIMP adds no parameters).
RELEASED: Dict[str, Tuple[str, int]] = {
    "imp_spp.pth": ("imp", 256),
    "imp_sift.pth": ("imp", 128),
    "eimp_spp.pth": ("eimp", 256),
    "eimp_sift.pth": ("eimp", 128),
    "imp_geo_spp_scannet.pth": ("imp", 256),
    "imp_geo_spp_yfcc.pth": ("imp", 256),
    "imp_geo_sift.pth": ("imp", 128),
    "eimp_geo_spp_scannet.pth": ("eimp", 256),
    "eimp_geo_spp_yfcc.pth": ("eimp", 256),
    "eimp_geo_sift.pth": ("eimp", 128),
    "superglue_outdoor.pth": ("gm", 256),
    "superglue_indoor.pth": ("gm", 256),
}

WHERE_TO_GET = (
    "Official IMP/EIMP weights are linked (Google Drive) from the README of github.com/feixue94/imp-release "
    f"({', '.join(n for n in RELEASED if not n.startswith('superglue'))}); SuperGlue weights come from "
    "github.com/magicleap/SuperGluePretrainedNetwork (models/weights). Download them yourself, put them e.g. in "
    "~/.cache/imp/weights/ and set the matcher conf key 'weights' to the file path."
)

SUPERGLUE_CONF = {"variant": "gm", "n_layers": 9, "norm": "bn", "assignment": "log_ot", "sinkhorn_iterations": 100}


def variant_from_name(path: Union[str, Path]) -> Optional[Tuple[str, int]]:
    """(variant, descriptor_dim) from a released file name, e.g. ``eimp_geo_sift.pth`` -> ('eimp', 128)."""
    name = Path(path).name
    if name in RELEASED:
        return RELEASED[name]
    m = re.match(r"^(gm|imp|eimp|superglue)[_.-]", name)
    if not m:
        return None
    variant = "gm" if m.group(1) in ("gm", "superglue") else m.group(1)
    return variant, 128 if "sift" in name else 256


SHIPPED_DIR = Path(__file__).resolve().parent / "weights"  # weights trained by imp (`imp train-matcher --preset`)


def _shipped_prefix(variant: Optional[str]) -> str:
    """File prefix of the shipped weights for a variant: GM has its own (``gm_``), IMP and EIMP share ``imp_``."""
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return "gm_" if variant == "gm" else "imp_"


def shipped_weights(features: Optional[str], variant: Optional[str] = "imp") -> Optional[Path]:
    """The weights imp ships for ``features`` and ``variant`` (``weights/imp_<features>.pth`` for IMP and EIMP,
    ``weights/gm_<features>.pth`` for the GM ablation), or None."""
    if not features:
        return None
    path = SHIPPED_DIR / f"{_shipped_prefix(variant)}{features}.pth"
    return path if path.is_file() else None


def shipped_features(variant: Optional[str] = "imp") -> List[str]:
    prefix = _shipped_prefix(variant)
    return sorted(p.stem[len(prefix):] for p in SHIPPED_DIR.glob(f"{prefix}*.pth"))


# conf keys a checkpoint written by imp may carry (``conf`` entry, JSON) that the tensors cannot tell
STORED_CONF_KEYS = ("num_heads", "sinkhorn_iterations", "match_threshold", "pool_threshold", "n_min_tokens",
                    "first_it_to_update", "assignment")


def _load(path: Union[str, Path]) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"matcher weights not found: {path}. {WHERE_TO_GET}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"cannot read matcher weights {path} with torch.load(weights_only=True): {e}") from e


def _stored_conf(obj: Any, path: Union[str, Path]) -> Dict[str, Any]:
    """Architecture keys stored by ``save_checkpoint`` (our own files; official files have none): ``{}`` if absent."""
    raw = obj.get("conf") if isinstance(obj, Mapping) else None
    if not isinstance(raw, str):
        return {}
    try:
        conf = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: the 'conf' entry is not valid JSON: {e}") from e
    return {k: conf[k] for k in STORED_CONF_KEYS if k in conf}


def _state_dict(obj: Any, path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict (or a dict with key 'model' holding one)")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def read_checkpoint(path: Union[str, Path]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(state dict, architecture conf) of a checkpoint file, read once: the state dict of the official dict with
    'model' or of a bare one (``module.`` stripped); the conf from the tensors plus what our files store."""
    return parse_checkpoint(_load(path), path)


def parse_checkpoint(obj: Any, path: Union[str, Path]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """``read_checkpoint`` of an object already loaded with ``torch.load(weights_only=True)`` (``path`` names it in
    errors)."""
    state = _state_dict(obj, path)
    return state, {**conf_from_state(state), **_stored_conf(obj, path)}


def is_superglue(state: Mapping[str, torch.Tensor]) -> bool:
    return "final_proj.weight" in state


def conf_from_state(state: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """Model conf read off the tensors: descriptor dim, iterations, sharing (gm vs imp), norm type."""
    if is_superglue(state):
        dim = int(state["final_proj.weight"].shape[0])
        n_gnn = len({int(m.group(1)) for k in state if (m := re.match(r"gnn\.layers\.(\d+)\.", k))})
        return {**SUPERGLUE_CONF, "descriptor_dim": dim, "n_layers": n_gnn // 2}
    heads = {int(m.group(1)) for k in state if (m := re.match(r"final_proj\.(\d+)\.weight", k))}
    if not heads:
        raise ValueError("state dict has no 'final_proj.<i>.weight' entries: not an IMP/GM/SuperGlue checkpoint")
    dim = int(state["final_proj.0.weight"].shape[0])
    shared = any(re.match(r"gnn\.layers\.\d+\.proj\.weight", k) for k in state)
    conf: Dict[str, Any] = {"descriptor_dim": dim, "n_layers": max(heads) + 1, "variant": "imp" if shared else "gm"}
    kenc = sorted((int(m.group(1)), state[k]) for k in state
                  if (m := re.match(r"kenc\.encoder\.(\d+)\.weight", k)) and state[k].ndim == 3)
    if kenc:
        conf["keypoint_encoder"] = [int(w.shape[0]) for _, w in kenc[:-1]]
    if "kenc.encoder.1.running_mean" in state:
        conf["norm"] = "bn"
    if "input_proj.weight" in state:  # imp's own files for features wider than the model (e.g. ALIKED at D = 64)
        conf["input_dim"] = int(state["input_proj.weight"].shape[1])
    return conf


def convert_superglue(state: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """SuperGlue keys -> GM keys; returns the new dict and the GM keys SuperGlue cannot provide."""
    n = conf_from_state(state)["n_layers"]
    out = {k: v for k, v in state.items() if not k.startswith("final_proj.")}
    out[f"final_proj.{n - 1}.weight"] = state["final_proj.weight"]
    out[f"final_proj.{n - 1}.bias"] = state["final_proj.bias"]
    missing = [f"final_proj.{i}.{p}" for i in range(n - 1) for p in ("weight", "bias")]
    return out, missing


def check_keys(model: IMPModel, state: Mapping[str, torch.Tensor], source: str,
               allowed_missing: Tuple[str, ...] = ()) -> None:
    """Strict key/shape check with an error that names every wrong key."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state and k not in allowed_missing)
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in state if k in own and state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing[:20])}" + (" ..." if len(missing) > 20 else ""))
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected[:20])}" + (" ..." if len(unexpected) > 20 else ""))
        if shapes:
            parts.append(f"shape mismatches: {'; '.join(shapes[:20])}")
        c = model.conf
        raise ValueError(f"{source} does not fit {c['variant']} (D={c['descriptor_dim']}, input "
                         f"{model.input_dim}-d, {c['n_layers']} "
                         "iterations): " + " | ".join(parts))


def truncate_state(state: Mapping[str, torch.Tensor], depth: int, n_layers: int,
                   source: str) -> Dict[str, torch.Tensor]:
    """The first ``depth`` iterations of an IMP/GM state dict of ``n_layers``: every iteration has its own trained
    matching head and the sharing pattern is a prefix (``sharing_pattern``), so the result is a complete, shallower
    model (fewer iterations for a slower CPU)."""
    if not 1 <= depth <= n_layers:
        raise ValueError(f"{source}: n_layers {depth} must be between 1 and the checkpoint's {n_layers} iterations")

    def keep(k: str) -> bool:
        m = re.match(r"gnn\.layers\.(\d+)\.", k) or re.match(r"final_proj\.(\d+)\.", k)
        if m is None:
            return True
        return int(m.group(1)) < (2 * depth if k.startswith("gnn.") else depth)

    return {k: v for k, v in state.items() if keep(k)}


def load_model(path: Union[str, Path], variant: Optional[str] = None,
               overrides: Optional[Mapping[str, Any]] = None) -> Tuple[IMPModel, Dict[str, Any]]:
    """Build an ``IMPModel`` for the checkpoint at ``path`` and load it strictly.

    ``variant`` ('gm', 'imp', 'eimp') selects the inference behaviour (imp and eimp files are interchangeable;
    None = from the released file name, e.g. ``eimp_sift.pth``, else from the tensors); the architecture (descriptor
    dim, iterations, sharing) comes from the tensors. Returns (model, info) where
    info has ``superglue`` (bool) and ``heads`` (iterations with a trained matching head). ``overrides``
    ``n_layers`` below the checkpoint's runs its first iterations only (``truncate_state``).
    """
    state, arch = read_checkpoint(path)
    sg = is_superglue(state)
    named = variant_from_name(path)
    if variant is None and named is not None:
        variant = named[0]
    if variant is not None:
        same_keys = not any(sharing_pattern(arch["n_layers"]))  # <= 3 iterations: GM and IMP have equal keys
        if (variant == "gm") != (arch["variant"] == "gm") and not same_keys:
            raise ValueError(f"{path} holds {'a GM/SuperGlue' if arch['variant'] == 'gm' else 'an IMP/EIMP'} "
                             f"checkpoint, but the matcher is {variant!r}")
        arch["variant"] = variant
    overrides = dict(overrides or {})
    depth = overrides.get("n_layers")
    if depth is not None and not sg and int(depth) != arch["n_layers"]:
        state = truncate_state(state, int(depth), arch["n_layers"], str(path))
        arch["n_layers"] = int(depth)
    model = IMPModel({**arch, **overrides})
    allowed: Tuple[str, ...] = ()
    if sg:
        state, missing = convert_superglue(state)
        allowed = tuple(missing)
    check_keys(model, state, str(path), allowed)
    model.load_state_dict(state, strict=not sg)
    heads = [model.n_layers - 1] if sg else list(range(model.n_layers))
    return model.eval(), {"superglue": sg, "heads": heads, "path": str(path)}


def save_checkpoint(path: Union[str, Path], model: torch.nn.Module, epoch: int = 0, iteration: int = 0,
                    min_loss: float = float("inf"), **extra: Any) -> None:
    """Write the official layout ``{'epoch', 'iteration', 'model', 'min_loss'}`` (plus ``extra`` entries)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": epoch, "iteration": iteration, "model": model.state_dict(), "min_loss": min_loss, **extra},
               str(path))
