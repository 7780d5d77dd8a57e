"""Readable accuracy tables, summary JSON files, and the summary of a localization run (accuracy + latency)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

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


def write_summary(path, results: Mapping[str, Mapping[str, dict]], extra: Optional[dict] = None) -> Path:
    """JSON with the per-method, per-condition summaries (infinite medians written as null)."""

    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean({"results": results, **(extra or {})}), indent=1))
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
