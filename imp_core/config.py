"""Configuration: nested dicts with defaults merged in one place, loaded from YAML.

A conf is a plain dict. ``merge(defaults, overrides)`` merges recursively; unknown keys in the override are
an error (typos in a YAML file should not pass silently) unless the default has ``allow_extra``.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Optional, Union


class ConfigError(ValueError):
    pass


def merge(defaults: Mapping[str, Any], overrides: Optional[Mapping[str, Any]], *, strict: bool = True,
          where: str = "conf") -> dict:
    """Recursively merge ``overrides`` into a deep copy of ``defaults``."""
    out = copy.deepcopy(dict(defaults))
    for k, v in (overrides or {}).items():
        if strict and k not in out:
            raise ConfigError(f"unknown key {where}.{k}; known keys: {', '.join(sorted(out))}")
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v, strict=strict, where=f"{where}.{k}")
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_yaml(path: Union[str, Path]) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse YAML {path}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


MODEL_KEYS = ("features", "matcher", "global", "recognition")


def merge_with_models(defaults: Mapping[str, Any], overrides: Optional[Mapping[str, Any]],
                      model_keys=MODEL_KEYS, where: str = "conf") -> dict:
    """Like ``merge``, but model sub-confs (``{"name": ...}``) are not checked here: each model class validates
    its own keys. Same ``name``: the override updates the default sub-conf; another name: it replaces it."""
    overrides = dict(overrides or {})
    models = {k: overrides.pop(k) for k in model_keys if isinstance(overrides.get(k), Mapping)}
    out = merge(defaults, overrides, strict=True, where=where)
    for k, v in models.items():
        base = defaults.get(k)
        if isinstance(base, Mapping) and v.get("name", base.get("name")) == base.get("name"):
            out[k] = {**copy.deepcopy(dict(base)), **copy.deepcopy(dict(v))}
        else:
            out[k] = copy.deepcopy(dict(v))
    return out
