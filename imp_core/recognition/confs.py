"""Conf merging for recognition: like ``imp_core.config.merge``, but some keys hold free-form sub-confs
(network layouts, augmentation, fallback stages) that the component they configure validates itself."""
from __future__ import annotations

import copy
from typing import Any, Iterable, Mapping, Optional

from ..config import ConfigError, merge


def merge_open(defaults: Mapping[str, Any], overrides: Optional[Mapping[str, Any]], open_keys: Iterable[str],
               where: str) -> dict:
    overrides = dict(overrides or {})
    opened = {k: overrides.pop(k) for k in open_keys if k in overrides}
    out = merge(defaults, overrides, where=where)
    for k, v in opened.items():
        if v is not None and not isinstance(v, Mapping):
            raise ConfigError(f"{where}.{k} must be a mapping or null, got {type(v).__name__}")
        out[k] = None if v is None else {**copy.deepcopy(dict(defaults.get(k) or {})), **copy.deepcopy(dict(v))}
    return out
