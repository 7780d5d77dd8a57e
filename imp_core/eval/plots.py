"""Figures people look at: top-view trajectories (estimate vs ground truth) and error CDFs (matplotlib, Agg)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from ..types import Pose
from .metrics import THRESHOLDS, QueryError

COLORS = {"day": "tab:orange", "night": "tab:blue", "db": "0.6"}
T_MIN, R_MIN = 1e-3, 1e-2  # left ends of the logarithmic error axes (metres, degrees)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _color(cond: str, i: int) -> str:
    return COLORS.get(cond, f"C{(i + 2) % 10}")


def plot_trajectories(path, gt: Mapping[str, Pose], estimates: Mapping[str, Optional[Pose]],
                      conditions: Optional[Mapping[str, str]] = None, db_centers: Optional[np.ndarray] = None,
                      title: str = "trajectories (top view)") -> Path:
    """Ground-truth camera centres (lines, per condition) and estimates (dots, joined to their GT), x-y plane."""
    plt = _plt()
    conditions = conditions or {n: "queries" for n in gt}
    fig, ax = plt.subplots(figsize=(10, 5))
    if db_centers is not None and len(db_centers):
        ax.plot(db_centers[:, 0], db_centers[:, 1], "s", ms=3, color=COLORS["db"], label="database")
    for i, cond in enumerate(sorted(set(conditions.values()))):
        names = [n for n in gt if conditions.get(n) == cond]
        c = _color(cond, i)
        g = np.array([gt[n].center for n in names])
        # join consecutive ground-truth positions only within a drive (no lines across sequence jumps)
        gap = np.r_[False, np.linalg.norm(np.diff(g[:, :2], axis=0), axis=1) > 3.0]
        gx, gy = g[:, 0].copy(), g[:, 1].copy()
        gx[gap], gy[gap] = np.nan, np.nan
        ax.plot(g[:, 0], g[:, 1], "x", ms=3, color=c, alpha=0.6)
        ax.plot(gx, gy, "-", lw=1, color=c, alpha=0.6, label=f"{cond} ground truth")
        est = [(gt[n].center, p.center) for n in names if (p := estimates.get(n)) is not None]
        if est:
            e = np.array([b for _, b in est])
            ax.plot(e[:, 0], e[:, 1], "o", ms=3, color=c, label=f"{cond} estimate ({len(est)}/{len(names)})")
            for a, b in est:
                ax.plot([a[0], b[0]], [a[1], b[1]], "-", lw=0.5, color="k", alpha=0.4)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return _save(fig, plt, path)


def plot_error_cdf(path, errors: Mapping[str, Sequence[QueryError]], title: str = "localization error CDF") -> Path:
    """Position and rotation error CDFs, one line per (method, condition). Unlocalized queries never reach 1."""
    plt = _plt()
    fig, (ax_t, ax_r) = plt.subplots(1, 2, figsize=(11, 4.2))
    for m, (method, errs) in enumerate(errors.items()):
        for i, cond in enumerate(sorted({e.condition for e in errs})):
            sel = [e for e in errs if e.condition == cond]
            n = len(sel)
            style = ["-", "--", ":", "-."][m % 4]
            for ax, vals, lo in ((ax_t, [e.t_err for e in sel], T_MIN), (ax_r, [e.r_err for e in sel], R_MIN)):
                v = np.sort(np.asarray(vals, np.float64))
                v = np.maximum(v[np.isfinite(v)], lo)  # exact estimates show at the left edge of the log axis
                y = np.arange(1, len(v) + 1) / max(n, 1)
                ax.step(np.concatenate([[lo], v]), np.concatenate([[0], y]), style, where="post",
                        color=_color(cond, i), label=f"{method} / {cond}")
    for (dt, dr) in THRESHOLDS:
        ax_t.axvline(dt, color="0.7", lw=0.8)
        ax_r.axvline(dr, color="0.7", lw=0.8)
    for ax, lab in ((ax_t, "position error [m]"), (ax_r, "rotation error [deg]")):
        ax.set_xscale("log")
        ax.set_xlim(T_MIN if ax is ax_t else R_MIN, 100 if ax is ax_t else 180)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(lab)
        ax.set_ylabel("fraction of queries")
        ax.grid(alpha=0.3, which="both")
    ax_r.legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    return _save(fig, plt, path)


def _save(fig, plt, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(out_dir, gt: Mapping[str, Pose], results: Mapping[str, Mapping[str, Pose]],
             conditions: Mapping[str, str], errors: Mapping[str, Sequence[QueryError]],
             db_centers: Optional[np.ndarray] = None) -> Dict[str, Path]:
    """Trajectory plot per method and one CDF plot for all methods; returns {label: png path}."""
    out_dir = Path(out_dir)
    out = {}
    for method, est in results.items():
        out[f"trajectory_{method}"] = plot_trajectories(out_dir / f"trajectory_{method}.png", gt, est, conditions,
                                                        db_centers, title=f"{method}: trajectories (top view)")
    out["error_cdf"] = plot_error_cdf(out_dir / "error_cdf.png", errors)
    return out
