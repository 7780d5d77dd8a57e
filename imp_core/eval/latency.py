"""Per-stage latency of localization runs (the ``timings`` of each result, in milliseconds): percentiles per stage
and a fixed-width table. Used by ``imp localize``/``imp benchmark``, the ROS evaluator and the benchmarks."""
from __future__ import annotations

from typing import Dict, Mapping, Sequence

import numpy as np

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
