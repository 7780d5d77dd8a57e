"""Summaries of a batch localization run: accuracy per condition (when GT is known) and per-stage latency."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from ..eval.metrics import evaluate_queries, query_errors
from ..eval.plots import plot_all
from ..eval.report import format_table
from ..types import LocalizationResult


def latency_stats(samples: Mapping[str, Sequence[float]]) -> Dict[str, Dict[str, float]]:
    """{stage: [ms, ...]} -> {stage: {p50, p95, mean, n}}."""
    return {k: {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)), "mean": float(np.mean(v)),
                "n": len(v)} for k, v in samples.items() if len(v)}


def latency_table(results: Mapping[str, LocalizationResult]) -> Dict[str, Dict[str, float]]:
    """{stage: {p50, p95, mean, n}} in milliseconds over all frames that ran the stage."""
    per: Dict[str, list] = {}
    for r in results.values():
        for k, v in r.timings.items():
            per.setdefault(k, []).append(v)
    return latency_stats(per)


STAGE_ORDER = ("extraction", "tracking", "instance", "recognition", "retrieval", "matching", "pnp", "refinement",
               "total", "end_to_end")


def format_latency(lat: Mapping[str, Mapping[str, float]]) -> str:
    """Fixed-width per-stage latency table (pipeline order, then any other stage)."""
    keys = [k for k in STAGE_ORDER if k in lat] + sorted(k for k in lat if k not in STAGE_ORDER)
    lines = [f"{'stage':<14}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}{'n':>6}"]
    lines += [f"{k:<14}{lat[k]['p50']:>10.1f}{lat[k]['p95']:>10.1f}{lat[k]['mean']:>10.1f}{int(lat[k]['n']):>6d}"
              for k in keys]
    return "\n".join(lines)


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
