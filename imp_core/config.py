"""Configuration: plain nested dicts, combined by one rule, loaded from YAML plus dotted overrides.

``load_conf(defaults, conf, overrides)`` is the one way a conf is made (CLI, ROS nodes, benchmarks, demo): the
defaults, then named presets (``layers``), then a conf file or dict, then dotted overrides such as
``coarse.1.top_k=10`` or ``matcher.name=lightglue``, each applied in order by ``merge``. The rule, for a value
``new`` over the current ``old``:

- a mapping over a mapping updates it key by key (recursively), except that a model sub-conf (a mapping with a
  ``name``) given another ``name`` replaces the old one: its keys belonged to the other model;
- a list of model sub-confs over another (``coarse: [{name: tracking}, {name: retrieval}]``) is the new list, each
  entry updating the old entry of the same name (the n-th of that name), so naming stages keeps their settings;
- a mapping over a list updates entries, addressed by index or by name (``coarse.1.top_k``,
  ``coarse.retrieval.top_k``);
- anything else (a value, ``null``, a list of values) replaces.

The defaults are the schema: a key they do not have is an error (a typo in a YAML file must not pass silently),
except inside model sub-confs, ``null`` defaults and empty-dict defaults, which the component they configure
validates itself (its own ``default_conf`` through this same ``merge``).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import ImpError

ConfLike = Union[str, Path, Mapping[str, Any], None]
Overrides = Union[Iterable[Union[str, Tuple[str, Any]]], Mapping[str, Any], None]


class ConfigError(ImpError, ValueError):
    pass


def _named(v: Any) -> bool:
    return isinstance(v, Mapping) and "name" in v


def _is_schema(schema: Any) -> bool:
    """Whether the defaults at this place fix the keys (a non-empty mapping that is not a model sub-conf)."""
    return isinstance(schema, Mapping) and bool(schema) and "name" not in schema


def _entry_names(items: Sequence[Any]) -> str:
    return ", ".join(str(x.get("name")) if _named(x) else repr(x) for x in items) or "none"


def _list_index(items: Sequence[Any], key: Any, where: str) -> int:
    """The entry of a list addressed by index (``1``, ``"1"``, ``-1``) or by name (the first entry named so)."""
    if isinstance(key, int) or (isinstance(key, str) and key.lstrip("-").isdigit()):
        i = int(key)
        if not -len(items) <= i < len(items):
            raise ConfigError(f"{where}: index {i} out of range ({len(items)} entries: {_entry_names(items)})")
        return i % len(items)
    for i, item in enumerate(items):
        if _named(item) and item["name"] == key:
            return i
    raise ConfigError(f"{where}: no entry named {key!r} (entries: {_entry_names(items)})")


def _combine(old: Any, new: Any, schema: Any, where: str, strict: bool) -> Any:
    if isinstance(new, Mapping):
        if isinstance(old, list):
            out = copy.deepcopy(old)
            for k, v in new.items():
                i = _list_index(out, k, f"{where}.{k}")
                out[i] = _combine(out[i], v, None, f"{where}.{k}", False)
            return out
        if isinstance(old, Mapping):
            if not strict and _named(old) and _named(new) and old["name"] != new["name"]:
                return copy.deepcopy(dict(new))  # another model: the old model's keys do not apply
            merged = copy.deepcopy(dict(old))
            for k, v in new.items():
                if strict and k not in merged:
                    raise ConfigError(f"unknown key {where}.{k}; known keys: {', '.join(sorted(map(str, merged)))}")
                sub = schema.get(k) if isinstance(schema, Mapping) else None
                merged[k] = (_combine(merged[k], v, sub, f"{where}.{k}", _is_schema(sub)) if k in merged
                             else copy.deepcopy(v))
            return merged
        if old is not None:
            raise ConfigError(f"{where} is a value ({old!r}), not a section: it cannot take the keys "
                              f"{', '.join(map(str, new))}")
        return copy.deepcopy(dict(new))
    if isinstance(old, Mapping) and new is not None:
        raise ConfigError(f"{where} is a section: give a mapping (or null), or set its keys with dots "
                          f"({where.split('.', 1)[-1]}.KEY=VALUE); got {new!r}")
    if isinstance(new, (list, tuple)):
        new = list(new)
        if isinstance(old, list) and old and new and all(map(_named, old)) and all(map(_named, new)):
            pool = list(old)  # entries of the old list by name, each used once (the n-th of a name for the n-th)
            out = []
            for entry in new:
                match = next((i for i, o in enumerate(pool) if o is not None and o["name"] == entry["name"]), None)
                if match is None:
                    out.append(copy.deepcopy(dict(entry)))
                else:
                    out.append(_combine(pool[match], entry, None, f"{where}.{entry['name']}", False))
                    pool[match] = None
            return out
        return copy.deepcopy(new)
    return copy.deepcopy(new)


def merge(defaults: Optional[Mapping[str, Any]], *updates: Optional[Mapping[str, Any]], where: str = "conf") -> dict:
    """``defaults`` updated by each of ``updates`` in order, by the rule in this module's docstring. The keys of
    ``defaults`` are the schema (unknown keys are a ``ConfigError`` naming the key and the known ones); ``None``:
    no schema, the updates combined alone (a partial conf that a later ``merge`` checks against its defaults)."""
    out: Any = copy.deepcopy(dict(defaults or {}))
    for u in updates:
        if u is None:
            continue
        if not isinstance(u, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(u).__name__}")
        out = _combine(out, u, defaults, where, defaults is not None)
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


def read_conf(conf: ConfLike, section: Optional[str] = None) -> dict:
    """A conf from a YAML file (its ``section`` when the file has one, else the whole file) or a mapping."""
    if conf is None:
        return {}
    if isinstance(conf, (str, Path)):
        data = load_yaml(conf)
        if section is not None and section in data:
            if not isinstance(data[section], Mapping):
                raise ConfigError(f"{conf}: section {section!r} must be a mapping, got {type(data[section]).__name__}")
            return dict(data[section])
        return data
    if not isinstance(conf, Mapping):
        raise ConfigError(f"a conf must be a YAML file or a mapping, got {type(conf).__name__}")
    return copy.deepcopy(dict(conf))


def parse_overrides(overrides: Overrides) -> List[dict]:
    """Dotted overrides -> one nested update per override, in order.

    ``["coarse.1.top_k=10", "matcher.name=lightglue"]`` (values parsed as YAML: ``10`` is a number, ``null`` is
    None, ``[a, b]`` a list), ``("coarse.1.top_k", 10)`` pairs in that list, or ``{"coarse.1.top_k": 10}`` (values
    as given, e.g. typed ROS parameters)."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        pairs = list(overrides.items())
    else:
        import yaml

        pairs = []
        for item in ([overrides] if isinstance(overrides, str) else overrides):
            if isinstance(item, tuple) and len(item) == 2:
                pairs.append(item)
                continue
            key, sep, text = str(item).partition("=")
            if not sep:
                raise ConfigError(f"override {item!r}: expected KEY=VALUE (e.g. coarse.1.top_k=10)")
            try:
                pairs.append((key.strip(), yaml.safe_load(text) if text.strip() else ""))
            except yaml.YAMLError as e:
                raise ConfigError(f"override {item!r}: cannot parse the value as YAML ({e})") from e
    out = []
    for key, value in pairs:
        parts = str(key).split(".")
        if not all(p.strip() for p in parts):
            raise ConfigError(f"override {key!r}: empty key part (expected e.g. coarse.1.top_k)")
        nested: Any = value
        for p in reversed(parts):
            nested = {p.strip(): nested}
        out.append(nested)
    return out


def load_conf(defaults: Optional[Mapping[str, Any]], conf: ConfLike = None, overrides: Overrides = None, *,
              layers: Sequence[Optional[Mapping[str, Any]]] = (), section: Optional[str] = None,
              where: str = "conf") -> dict:
    """The one config path: ``defaults`` <- ``layers`` (e.g. a named preset) <- ``conf`` (YAML file, its
    ``section``, or a dict) <- dotted ``overrides``, combined by ``merge``."""
    return merge(defaults, *layers, read_conf(conf, section), *parse_overrides(overrides), where=where)
