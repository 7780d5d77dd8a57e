"""Matchers: one base class, one registry (nn, lightglue, gm, imp, eimp)."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..config import merge
from ..registry import Registry
from ..types import Features, Matches

MATCHERS = Registry(
    "matcher",
    modules={
        "nn": "imp_core.matching.nn",
        "lightglue": "imp_core.matching.lightglue",
        "lighterglue": "imp_core.matching.lighterglue",  # XFeat's LightGlue
        # The IMP family (GM / IMP / EIMP) lives in imp_core.matching.imp
        "gm": "imp_core.matching.imp.matcher",
        "imp": "imp_core.matching.imp.matcher",
        "eimp": "imp_core.matching.imp.matcher",
        # LBR's label-aware mutual NN (NNML)
        "label_nn": "imp_core.recognition.label_matcher",
    },
)


class Matcher:
    """``match(f0, f1) -> Matches`` with indices into f0 (query) and f1 (reference).

    ``match_many(query, refs)`` matches one query against k references; matchers that can batch
    (IMP/EIMP) override it. ``context`` optionally carries geometry for matchers that check poses
    while they match: ``{"camera0": Camera, "camera1": Camera}`` for pairs, or per reference
    ``{"points3D": (N1, 3) array with NaN where unknown, "camera0": Camera}`` for localization, plus
    ``"estimate_focal": True`` when ``camera0``'s focal length is only a guess (its pose checks estimate it).
    """

    default_conf: Dict[str, Any] = {}
    base_conf: Dict[str, Any] = {"name": None, "device": "auto"}
    #: feature kinds this matcher accepts (None = any); e.g. LightGlue weights exist for 'aliked' and 'disk'.
    supported_features: Optional[Sequence[str]] = None

    def __init__(self, conf: Optional[Mapping[str, Any]] = None):
        self.conf = merge({**self.base_conf, **self.default_conf}, conf, where=type(self).__name__)
        self._init(self.conf)

    @classmethod
    def unavailable(cls, conf: Mapping[str, Any], features: Optional[str]) -> Optional[str]:
        """Why this matcher cannot run with ``conf`` on ``features`` here (e.g. no weights for them), else None.
        The localizer's ``matcher.fallback`` takes over when this says why."""
        if cls.supported_features is not None and features not in cls.supported_features:
            return f"it works with features {list(cls.supported_features)}, not {features!r}"
        return None

    def describe(self) -> str:
        """The matcher as a user should see it in logs and summaries (name, and weights where it has some)."""
        return str(self.conf["name"])

    def _init(self, conf: Dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_features(self, f: Features) -> None:
        if self.supported_features is not None and f.kind and f.kind not in self.supported_features:
            raise ValueError(
                f"matcher {self.conf['name']!r} works with features {list(self.supported_features)}, got {f.kind!r}"
            )

    def match(self, f0: Features, f1: Features, context: Optional[Dict[str, Any]] = None) -> Matches:
        self.check_features(f0)
        self.check_features(f1)
        if len(f0) == 0 or len(f1) == 0:
            return Matches.empty()
        return self._match(f0, f1, context or {})

    def _match(self, f0: Features, f1: Features, context: Dict[str, Any]) -> Matches:  # pragma: no cover
        raise NotImplementedError

    def match_many(self, query: Features, refs: Sequence[Features],
                   contexts: Optional[Sequence[Optional[Dict[str, Any]]]] = None) -> List[Matches]:
        contexts = contexts or [None] * len(refs)
        return [self.match(query, r, c) for r, c in zip(refs, contexts)]


def create_matcher(conf: Mapping[str, Any]) -> Matcher:
    return MATCHERS.create(conf)


def matchers_supporting(features: Optional[str]) -> List[str]:
    """Registered matcher names whose ``supported_features`` accept ``features`` (a matcher whose module cannot be
    imported here is left out)."""
    out = []
    for name in MATCHERS.names():
        try:
            cls = MATCHERS.get(name)
        except Exception:
            continue
        supported = getattr(cls, "supported_features", None)
        if supported is None or features in supported:
            out.append(name)
    return out
