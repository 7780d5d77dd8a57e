"""Localization accuracy as on visuallocalization.net: recall at (metres, degrees) thresholds per condition.

Errors as in hloc: ``t_err = ||c_gt - c_est||`` (camera centres), ``R_err = arccos((tr(R_gt^T R) - 1) / 2)``.
A query without an estimate counts as not localized (infinite error).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..types import Pose, pose_error

THRESHOLDS: Tuple[Tuple[float, float], ...] = ((0.25, 2.0), (0.5, 5.0), (5.0, 10.0))
ALL = "all"


@dataclass
class QueryError:
    name: str
    condition: str
    t_err: float  # metres, inf when not localized
    r_err: float  # degrees, inf when not localized

    @property
    def localized(self) -> bool:
        return bool(np.isfinite(self.t_err))


def query_errors(estimates: Mapping[str, Optional[Pose]], gt: Mapping[str, Pose],
                 conditions: Optional[Mapping[str, str]] = None) -> List[QueryError]:
    """One ``QueryError`` per ground-truth query (in ``gt`` order). Estimates for unknown names are ignored."""
    out = []
    for name, g in gt.items():
        est = estimates.get(name)
        dt, dr = pose_error(est, g) if est is not None else (np.inf, np.inf)
        out.append(QueryError(name, (conditions or {}).get(name, ALL), dt, dr))
    return out


def summarize(errors: Sequence[QueryError], thresholds: Iterable[Tuple[float, float]] = THRESHOLDS) -> dict:
    """Recall per threshold (fraction of all queries), medians over the localized queries, counts."""
    thresholds = [(float(t), float(r)) for t, r in thresholds]
    t = np.array([e.t_err for e in errors], np.float64)
    r = np.array([e.r_err for e in errors], np.float64)
    ok = np.isfinite(t)
    n = len(errors)
    return {
        "count": n,
        "localized": int(ok.sum()),
        "thresholds": [list(th) for th in thresholds],
        "recall": [float(np.mean((t <= dt) & (r <= dr))) if n else 0.0 for dt, dr in thresholds],
        "median_t": float(np.median(t[ok])) if ok.any() else float("inf"),
        "median_R": float(np.median(r[ok])) if ok.any() else float("inf"),
    }


def evaluate(estimates: Mapping[str, Optional[Pose]], gt: Mapping[str, Pose],
             conditions: Optional[Mapping[str, str]] = None,
             thresholds: Iterable[Tuple[float, float]] = THRESHOLDS) -> Dict[str, dict]:
    """{condition: summary} for every condition plus ``"all"``."""
    errs = query_errors(estimates, gt, conditions)
    thresholds = list(thresholds)
    out = {}
    for cond in sorted({e.condition for e in errs} - {ALL}):
        out[cond] = summarize([e for e in errs if e.condition == cond], thresholds)
    out[ALL] = summarize(errs, thresholds)
    return out


def evaluate_queries(estimates: Mapping[str, Optional[Pose]], queries, thresholds=THRESHOLDS) -> Dict[str, dict]:
    """Same as ``evaluate`` for a list of ``QueryItem`` with ground truth (queries without GT are an error)."""
    missing = [q.name for q in queries if q.gt_pose is None]
    if missing:
        raise ValueError(f"{len(missing)} queries have no ground-truth pose (e.g. {missing[0]!r})")
    return evaluate(estimates, {q.name: q.gt_pose for q in queries}, {q.name: q.condition for q in queries},
                    thresholds)
