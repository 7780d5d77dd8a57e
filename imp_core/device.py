"""The torch device a model runs on, chosen by conf (``device: auto | cpu | cuda | cuda:N``).

Used by every model family (features, matchers, recognition, training); torch is imported only when a device is
resolved, so importing this module stays cheap.
"""
from __future__ import annotations

from .errors import ImpError


class DeviceError(ImpError, RuntimeError):
    """A conf asks for a device this machine does not have."""


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'. Clear error when 'cuda' is asked for and absent."""
    import torch  # lazy: torch costs ~1 s to import and ROS-side users of imp_core may never need it

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device != "cpu" and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} requested but torch sees no CUDA device; use device 'auto' or 'cpu'")
    return device
