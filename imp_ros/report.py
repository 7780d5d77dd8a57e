"""Turn the evaluator's paired frames into the accuracy table, latency statistics, result files and plots.

Accuracy, result formats and plots come from ``imp_core.eval``; this module only adapts the evaluator's records
(and adds what only a live run has: per-stage latency and per-frame status).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List

import numpy as np

from imp_core.eval import evaluate, formats, plots, query_errors, report
from imp_core.eval.latency import format_latency, latency_stats
from imp_core.paths import safe_join


def _inputs(recs):
    """(estimates, ground truth, conditions) keyed by frame name (or stamp) for frames with ground truth."""
    gt = {r.key: r.gt for r in recs if r.gt is not None}
    est = {r.key: r.est for r in recs if r.gt is not None}
    cond = {r.key: r.condition or "all" for r in recs if r.gt is not None}
    return est, gt, cond


def accuracy(recs) -> Dict[str, dict]:
    """imp_core.eval summaries {condition: {count, localized, recall[3], median_t, median_R}} plus 'all'."""
    est, gt, cond = _inputs(recs)
    return evaluate(est, gt, cond) if gt else {}


def latency(recs) -> Dict[str, Dict[str, float]]:
    """p50/p95/mean in ms per stage (plus 'end_to_end' = receive -> publish in the node)."""
    stages: Dict[str, List[float]] = {}
    for r in recs:
        if not r.has_result:
            continue
        for k, v in r.timings.items():
            stages.setdefault(k, []).append(v)
        if np.isfinite(r.latency_ms):
            stages.setdefault("end_to_end", []).append(r.latency_ms)
    return latency_stats(stages)


def accuracy_table(recs, method: str = "imp") -> str:
    n_res = sum(r.has_result for r in recs)
    head = (f"frames {len(recs)}, results {n_res}, localized {sum(r.est is not None for r in recs)}, "
            f"with ground truth {sum(r.gt is not None for r in recs)}")
    acc = accuracy(recs)
    return report.format_table({method: acc}) + "\n" + head if acc else head


def write_report(recs, out: Path, method: str = "imp", make_plots: bool = True) -> dict:
    """Write results (visuallocalization.net), TUM trajectories, per-frame CSV, summary.json and plots."""
    out = Path(out)
    results_path = safe_join(out, f"results_{method}.txt", what="evaluator parameter 'method'")
    out.mkdir(parents=True, exist_ok=True)
    formats.write_results(results_path, {r.key: r.est for r in recs if r.est is not None})
    loc = [r for r in recs if r.est is not None]
    formats.write_tum(out / "trajectory_estimate.tum", [r.stamp_ns * 1e-9 for r in loc], [r.est for r in loc])
    withgt = [r for r in recs if r.gt is not None]
    formats.write_tum(out / "trajectory_ground_truth.tum", [r.stamp_ns * 1e-9 for r in withgt],
                      [r.gt for r in withgt])
    est, gt, cond = _inputs(recs)
    errs = {e.name: e for e in query_errors(est, gt, cond)}
    stages = sorted({k for r in recs for k in r.timings})
    with open(out / "frames.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["stamp", "name", "condition", "status", "mode", "inliers", "t_err_m", "r_err_deg",
                    "latency_ms"] + [f"{s}_ms" for s in stages])
        for r in recs:
            e = errs.get(r.key)
            w.writerow([f"{r.stamp_ns * 1e-9:.6f}", r.name, r.condition, r.status or "NO_RESULT", r.mode,
                        r.num_inliers, f"{e.t_err:.4f}" if e else "", f"{e.r_err:.4f}" if e else "",
                        f"{r.latency_ms:.1f}"] + [f"{r.timings.get(s, float('nan')):.1f}" for s in stages])
    lat = latency(recs)
    acc = accuracy(recs)
    table = accuracy_table(recs, method) + "\n\nper-frame latency\n" + format_latency(lat)
    files = {"results": f"results_{method}.txt", "frames": "frames.csv"}
    if make_plots and gt:
        files["trajectory"] = str(plots.plot_trajectories(out / "trajectory.png", gt, est, cond))
        by = {}
        for e in errs.values():
            by.setdefault(f"{method} {e.condition}", []).append(e)
        files["error_cdf"] = str(plots.plot_error_cdf(out / "error_cdf.png", by))
    summary = {"method": method, "frames": len(recs), "results": sum(r.has_result for r in recs),
               "accuracy": acc, "latency_ms": lat, "table": table, "files": files}
    report.write_summary(out / "summary.json", {method: acc}, summary)
    return summary
