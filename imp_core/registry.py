"""One tiny registry per model family (features, matchers, global descriptors, recognition backbones).

Models are chosen by config, never by if-chains::

    EXTRACTORS = Registry("feature extractor")

    @EXTRACTORS.register("sift")
    class SIFT(FeatureExtractor): ...

    extractor = EXTRACTORS.create({"name": "sift", "max_keypoints": 2048})
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, Mapping, Optional

from .errors import ImpError


class UnknownModelError(ImpError, KeyError):
    """A conf names a model its family does not have (or gives no name)."""

    def __str__(self) -> str:  # KeyError quotes its message; print it as written
        return str(self.args[0]) if self.args else super().__str__()


class Registry:
    def __init__(self, family: str, modules: Optional[Dict[str, str]] = None):
        self.family = family
        self._items: Dict[str, Callable[..., Any]] = {}
        # Lazily imported modules per name, so importing the registry does not import torch/kornia.
        self._modules: Dict[str, str] = dict(modules or {})

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def deco(obj: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._items and self._items[name] is not obj:
                raise KeyError(f"{self.family} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def add_module(self, name: str, module: str) -> None:
        """Declare that ``name`` is registered by importing ``module`` (lazy)."""
        self._modules[name] = module

    def names(self):
        return sorted(set(self._items) | set(self._modules))

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._items and name in self._modules:
            importlib.import_module(self._modules[name])
        if name not in self._items:
            raise UnknownModelError(f"unknown {self.family} {name!r}; available: {', '.join(self.names())}")
        return self._items[name]

    def create(self, conf: Mapping[str, Any], **kwargs: Any) -> Any:
        """Instantiate ``conf['name']`` with the whole conf (the class merges its own defaults)."""
        if "name" not in conf:
            raise UnknownModelError(f"{self.family} config needs a 'name' key (one of: {', '.join(self.names())})")
        return self.get(conf["name"])(dict(conf), **kwargs)

    def __contains__(self, name: str) -> bool:
        return name in self._items or name in self._modules
