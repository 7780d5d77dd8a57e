"""Readable accuracy tables, summary JSON files, and the summary of a localization run (accuracy + latency)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from ..types import LocalizationResult
from .latency import format_latency, latency_table
from .metrics import ALL, evaluate_queries, query_errors
from .plots import plot_all


def _th(th) -> str:
    return f"{th[0]:g}m,{th[1]:g}deg"


def _num(v: float, fmt: str) -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, fmt)


def format_table(results: Mapping[str, Mapping[str, dict]]) -> str:
    """Fixed-width table: one row per (method, condition) with the recalls (%) and median errors."""
    any_summary = next((s for r in results.values() for s in r.values()), None)
    ths = any_summary["thresholds"] if any_summary else []
    head = ["method", "condition", "queries", "localized"] + [_th(t) for t in ths] + ["median t [m]", "median R [deg]"]
    rows = []
    for method, per_cond in results.items():
        conds = sorted(c for c in per_cond if c != ALL) + ([ALL] if ALL in per_cond else [])
        for cond in conds:
            s = per_cond[cond]
            rows.append([method, cond, str(s["count"]), str(s["localized"])]
                        + [f"{100 * r:.1f}" for r in s["recall"]]
                        + [_num(s["median_t"], ".3f"), _num(s["median_R"], ".2f")])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    line = "  ".join("-" * w for w in widths)

    def fmt(r):
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([fmt(head), line] + [fmt(r) for r in rows])


def json_safe(o: Any) -> Any:
    """``o`` with every non-finite number (an unlocalized query's error, a median of nothing) as None and numpy
    scalars / arrays as Python numbers / lists, so that it is strict JSON (Python's json writes ``Infinity`` and
    ``NaN``, which jq, JavaScript and most other parsers refuse)."""
    if isinstance(o, np.ndarray):
        o = o.tolist()
    elif isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, Mapping):
        return {k: json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    return o


def dumps_strict(o: Any, **kw: Any) -> str:
    """``json.dumps`` of :func:`json_safe` (``o``), refusing anything non-finite left over (``kw``: indent, default,
    ...; ``default``'s results are made safe too)."""
    if "default" in kw:
        user = kw.pop("default")
        kw["default"] = lambda x: json_safe(user(x))
    return json.dumps(json_safe(o), allow_nan=False, **kw)


def write_summary(path, results: Mapping[str, Mapping[str, dict]], extra: Optional[dict] = None) -> Path:
    """JSON with the per-method, per-condition summaries (infinite medians written as null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps_strict({"results": results, **(extra or {})}, indent=1))
    return path


def summarize_run(results: Mapping[str, LocalizationResult], queries: Sequence, out_dir: Optional[Path] = None,
                  method: str = "imp") -> dict:
    """Accuracy (if every query has GT) + latency; writes plots into ``out_dir`` when given."""

    lat = latency_table(results)
    summary: dict = {"latency_ms": lat, "num_queries": len(queries),
                     "num_ok": sum(r.success for r in results.values())}
    parts = []
    poses = {n: r.pose for n, r in results.items() if r.pose is not None}
    if queries and all(q.gt_pose is not None for q in queries):
        acc = evaluate_queries(poses, queries)
        summary["accuracy"] = acc
        parts.append(format_table({method: acc}))
        if out_dir is not None:
            gt = {q.name: q.gt_pose for q in queries}
            conds = {q.name: q.condition for q in queries}
            errs = query_errors(poses, gt, conds)
            by_cond: Dict[str, list] = {}
            for e in errs:
                by_cond.setdefault(f"{method} {e.condition}", []).append(e)
            summary["plots"] = {k: str(v) for k, v in plot_all(out_dir, gt, {method: poses}, conds, by_cond).items()}
    else:
        parts.append(f"{summary['num_ok']}/{len(queries)} queries localized (no ground truth to score against)")
    parts.append(format_latency(lat))
    summary["table"] = "\n\n".join(parts)
    return summary
