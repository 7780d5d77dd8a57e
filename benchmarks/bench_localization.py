#!/usr/bin/env python
"""Localization accuracy and per-stage latency for each feature/matcher pair, all in one run; or, with
``--confs``, localizer confs side by side in tracking mode (the real-time comparison).

Pairs: for every pair build a map of the synthetic world (or reuse it), localize every query globally (no tracking
prior), and report recall at (0.25 m, 2 deg) / (0.5 m, 5 deg) / (5 m, 10 deg) per condition, median errors,
per-stage latency per frame (extraction, retrieval, matching, PnP: p50 / p95 ms), the peak resident memory
of the process that ran the pair (each pair runs in its own process so peaks do not mix) and whether the reported
covariance is honest (``imp_core.eval.covariance``: NEES of the localized poses' position and rotation errors
against chi-square, 3 dof).

    .venv/bin/python benchmarks/bench_localization.py --world data/world --pairs sift+nn aliked+lightglue
Writes outputs/bench_localization/{results.json, table.txt, error_cdf.png} (error CDFs and the NEES CDF).

Confs (XFeat + mutual NN map of the synthetic world, 640x480 queries in sequence order, each fix seeding the next
frame: tracking, with retrieval when tracking fails): per conf recall per condition, ms per frame p50 / p90 (total
and the extraction / matching / PnP split), the process CPU time per frame, the frame rate (1000 / p50 total) and
the machine's load average before and after the conf ran. Each conf runs in its own process (a conf's ``threads``
is process-wide), images are decoded before timing.

    .venv/bin/python benchmarks/bench_localization.py --confs demo stream realtime
Writes benchmarks/results/bench_localization_realtime.{json,txt} (``--results``).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from imp_core.eval.report import dumps_strict  # noqa: E402

PAIRS = {
    "sift+nn": ({"name": "sift", "max_keypoints": 2048}, {"name": "nn", "ratio_threshold": 0.9}),
    "aliked+lightglue": ({"name": "aliked", "max_keypoints": 2048}, {"name": "lightglue"}),
    "disk+lightglue": ({"name": "disk", "max_keypoints": 2048}, {"name": "lightglue"}),
    "xfeat+nn": ({"name": "xfeat", "max_keypoints": 2048}, {"name": "nn"}),
    "xfeat+lighterglue": ({"name": "xfeat", "max_keypoints": 2048}, {"name": "lighterglue"}),
    # IMP family: imp's shipped weights for the features unless --weights gives a file
    "xfeat+eimp": ({"name": "xfeat", "max_keypoints": 2048}, {"name": "eimp", "features": "xfeat"}),
    "xfeat+imp": ({"name": "xfeat", "max_keypoints": 2048}, {"name": "imp", "features": "xfeat"}),
    "aliked+eimp": ({"name": "aliked", "max_keypoints": 2048}, {"name": "eimp", "features": "aliked"}),
}
# pairs that share features share one map, built with the first matcher listed here (the map does not depend on
# the matcher used to localize against it)
MAP_MATCHER = {"xfeat": {"name": "nn"}, "aliked": {"name": "lightglue"}, "disk": {"name": "lightglue"},
               "sift": {"name": "nn", "ratio_threshold": 0.9}}
STAGES = ("extraction", "retrieval", "matching", "pnp", "total")


def matcher_conf(pair: str, weights=None) -> dict:
    """The localizing matcher of ``pair``: with ``weights``, IMP-family matchers load that checkpoint instead of
    the shipped one (other matchers ignore it)."""
    from imp_core.matching.imp.model import VARIANTS

    mconf = PAIRS[pair][1]
    if weights and mconf["name"] in VARIANTS:
        return {**mconf, "weights": str(weights)}
    return mconf


# --confs: named localizer confs (or any YAML path)
CONFS = {"demo": ROOT / "config" / "localizer_synthetic.yaml", "stream": ROOT / "config" / "localizer_stream.yaml",
         "realtime": ROOT / "config" / "localizer_realtime.yaml"}
SPLIT = ("extraction", "matching", "pnp", "total")


def run_pair(args: dict) -> dict:
    import pycolmap

    from imp_core.datasets import open_dataset
    from imp_core.eval.covariance import consistency, nees, pose_error_vector
    from imp_core.eval.latency import latency_table
    from imp_core.eval.metrics import THRESHOLDS, query_errors, summarize
    from imp_core.localization import Localizer
    from imp_core.localization.batch import localize_queries
    from imp_core.mapping import build_map

    pycolmap.logging.minloglevel = 2
    fconf, mconf = PAIRS[args["pair"]][0], matcher_conf(args["pair"], args.get("weights"))
    ds = open_dataset(args["world"])
    map_dir = Path(args["maps"]) / f"{fconf['name']}_{fconf['max_keypoints']}"
    t = time.time()
    if not (map_dir / "map.json").is_file():
        build_map(ds, map_dir, {"features": fconf, "matcher": MAP_MATCHER[fconf["name"]]}, progress=True)
    build_s = time.time() - t
    loc = Localizer({"map": str(map_dir), "matcher": mconf, "coarse": [{"name": "retrieval", "top_k": args["top_k"]}]})
    queries = ds.queries()
    if args["limit"]:
        queries = [q for c in ds.conditions for q in ds.queries(c)[: args["limit"]]]
    results = localize_queries(loc, queries, tracking=False, progress=True)
    errors = query_errors({n: r.pose for n, r in results.items()}, {q.name: q.gt_pose for q in queries},
                          {q.name: q.condition for q in queries})
    acc = {}
    for cond in sorted({e.condition for e in errors}):
        errs = [e for e in errors if e.condition == cond]
        sm = summarize(errs, THRESHOLDS)
        located = [(results[q.name], q.gt_pose) for q in queries if q.condition == cond
                   and results[q.name].pose is not None and results[q.name].covariance is not None]
        nv = [nees(pose_error_vector(r.pose, gt), r.covariance) for r, gt in located]
        acc[cond] = {"n": sm["count"], "recall": sm["recall"], "localized": sm["localized"],
                     "median_t_m": sm["median_t"], "median_R_deg": sm["median_R"],
                     "errors": [[e.t_err, e.r_err] for e in errs],
                     "covariance": consistency(nv), "nees_position": [v["position"] for v in nv]}
    return {
        "pair": args["pair"],
        "matcher": {k: v for k, v in loc.conf["matcher"].items() if k in ("name", "weights", "features")},
        "matcher_weights": getattr(loc.matcher, "weights", None),
        "map_build_s": build_s,
        "accuracy": acc,
        "latency_ms": {k: v for k, v in latency_table(results).items() if k in STAGES},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "image_size": [queries[0].camera.width, queries[0].camera.height] if queries else None,
    }


def _conf_dict(path: Path) -> dict:
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    return dict(data.get("localizer", data))


def run_conf(args: dict) -> dict:
    """One localizer conf in tracking mode over every query (sequence order); runs in its own process."""
    import os

    import pycolmap
    import torch

    from imp_core.datasets import open_dataset
    from imp_core.eval.metrics import THRESHOLDS, query_errors, summarize
    from imp_core.imageio import read_image
    from imp_core.localization import Localizer
    from imp_core.localization.batch import order_for_tracking
    from imp_core.types import LocalizationResult

    pycolmap.logging.minloglevel = 2
    conf = {**_conf_dict(args["conf"]), "map": args["map"]}
    load_before = os.getloadavg()
    loc = Localizer(conf)
    ds = open_dataset(args["world"])
    queries = order_for_tracking(ds.queries())
    if args["limit"]:  # the first frames of each condition
        keep = {x.name for c in ds.conditions for x in ds.queries(c)[: args["limit"]]}
        queries = [q for q in queries if q.name in keep]
    images = {q.name: read_image(q.path) for q in queries}  # decoding is not the localizer's time
    loc.localize(images[queries[0].name], queries[0].camera)  # warm-up (first-call allocations, lazy imports)
    loc.reset()
    results, cpu_ms = {}, []
    last_seq = None
    for q in queries:
        seq = (q.condition, Path(q.name).stem.rsplit("_", 1)[0])
        if seq != last_seq:  # a new sequence starts without a prior
            loc.reset()
            last_seq = seq
        c = time.process_time()
        try:
            results[q.name] = loc.localize(images[q.name], q.camera, name=q.name, stamp=q.stamp)
        except Exception as e:  # keep going; the failure shows in the recall
            results[q.name] = LocalizationResult(message=f"{type(e).__name__}: {e}")
        cpu_ms.append(1000 * (time.process_time() - c))
    load_after = os.getloadavg()
    errors = query_errors({n: r.pose for n, r in results.items()}, {q.name: q.gt_pose for q in queries},
                          {q.name: q.condition for q in queries})
    acc = {}
    for cond in sorted({e.condition for e in errors}):
        sm = summarize([e for e in errors if e.condition == cond], THRESHOLDS)
        acc[cond] = {"n": sm["count"], "recall": sm["recall"], "localized": sm["localized"],
                     "median_t_m": sm["median_t"], "median_R_deg": sm["median_R"]}
    lat = {}
    for k in SPLIT:
        v = np.array([r.timings.get(k, 0.0 if k != "total" else np.nan) for r in results.values()], np.float64)
        v = v[np.isfinite(v)]
        lat[k] = {"p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90)), "mean": float(v.mean())}
    total = lat["total"]
    return {
        "conf_name": args["name"], "conf_file": str(args["conf"]),
        "conf": {k: v for k, v in conf.items() if k != "map"},
        "matcher": loc.conf["matcher"].get("name"), "features": dict(loc.extractor.conf),
        "threads": torch.get_num_threads(), "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "frames": len(results), "accuracy": acc, "latency_ms": lat,
        "cpu_ms": {"p50": float(np.percentile(cpu_ms, 50)), "p90": float(np.percentile(cpu_ms, 90))},
        "hz_p50": 1000.0 / total["p50"], "hz_mean": 1000.0 / total["mean"],
        "modes": {m: sum(r.mode == m for r in results.values()) for m in ("tracking", "global", "instance")},
        "load_avg_before": list(load_before), "load_avg_after": list(load_after),
        "image_size": [queries[0].camera.width, queries[0].camera.height],
    }


def format_conf_table(rows: list) -> str:
    lines = [f"{'conf':<10} {'thr':>3} {'cond':<6} {'.25m,2°':>8} {'.5m,5°':>8} {'5m,10°':>8} | "
             f"{'total p50/p90':>13} "
             f"{'extract':>11} {'match':>11} {'pnp':>11} {'cpu p50':>7} {'Hz':>5} | load 1/5 min before -> after"]
    for r in rows:
        lat = r["latency_ms"]
        for i, (cond, a) in enumerate(sorted(r["accuracy"].items())):
            rec = " ".join(f"{100 * v:7.1f}%" for v in a["recall"])
            if i == 0:
                split = " ".join(f"{lat[k]['p50']:5.0f}/{lat[k]['p90']:<5.0f}"
                                 for k in ("extraction", "matching", "pnp"))
                tail = (f"| {lat['total']['p50']:6.0f}/{lat['total']['p90']:<6.0f} {split} {r['cpu_ms']['p50']:7.0f} "
                        f"{r['hz_p50']:5.1f} | {r['load_avg_before'][0]:.2f} {r['load_avg_before'][1]:.2f} -> "
                        f"{r['load_avg_after'][0]:.2f} {r['load_avg_after'][1]:.2f}")
            else:
                tail = f"| tracking {r['modes']['tracking']}/{r['frames']} frames"
            name, thr = (r["conf_name"], r["threads"]) if i == 0 else ("", "")
            lines.append(f"{name:<10} {thr:>3} {cond:<6} {rec} {tail}")
    lines.append("ms per frame p50/p90 (wall clock, images decoded beforehand); cpu: process CPU time per frame; "
                 "Hz = 1000 / p50 total; thr: torch threads; load: os.getloadavg() of the machine")
    return "\n".join(lines)


def main_confs(a) -> int:
    import os
    import platform

    from imp_core.datasets import open_dataset
    from imp_core.mapping import build_map
    from imp_core.world.synthetic import use_or_make_world

    use_or_make_world(a.world, preset=a.preset)
    map_dir = a.map or (a.out / "maps" / "xfeat_2048")
    if not (Path(map_dir) / "map.json").is_file():
        fconf, mconf = PAIRS["xfeat+nn"]
        build_map(open_dataset(a.world), map_dir, {"features": fconf, "matcher": mconf}, progress=True)
    from concurrent.futures import ProcessPoolExecutor

    rows = []
    for name in a.confs:
        path = CONFS.get(name, Path(name))
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
            rows.append(ex.submit(run_conf, {"name": name, "conf": str(path), "map": str(map_dir),
                                             "world": str(a.world), "limit": a.limit}).result())
        print(f"[bench] {name}: p50 {rows[-1]['latency_ms']['total']['p50']:.0f} ms, load {os.getloadavg()[0]:.2f}",
              flush=True)
    table = format_conf_table(rows)
    header = (f"{platform.node()}: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
              f"map {map_dir}, {rows[0]['frames']} frames {rows[0]['image_size'][0]}x{rows[0]['image_size'][1]}, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print(header)
    print(table)
    a.results.mkdir(parents=True, exist_ok=True)
    stem = a.results / "bench_localization_realtime"
    (stem.with_suffix(".txt")).write_text(header + "\n" + table + "\n")
    (stem.with_suffix(".json")).write_text(dumps_strict({"machine": header, "rows": rows}, indent=1))
    print(f"wrote {stem.with_suffix('.json')}, {stem.with_suffix('.txt')}")
    return 0


def format_table(rows: list) -> str:
    from imp_core.eval.covariance import CHI2_3DOF_95, CHI2_3DOF_MEDIAN

    lines = [f"{'pair':<18} {'cond':<6} {'n':>3} {'.25m,2°':>8} {'.5m,5°':>8} {'5m,10°':>8} {'med t':>7} {'med R':>7}"
             f" | {'extract':>8} {'retr':>6} {'match':>7} {'pnp':>6} {'total':>7} {'peakMB':>7}"]
    for r in rows:
        lat = r["latency_ms"]
        for cond, a in sorted(r["accuracy"].items()):
            rec = " ".join(f"{100 * v:7.1f}%" for v in a["recall"])
            lt = " ".join(f"{lat.get(s, {}).get('p50', float('nan')):{w}.0f}"
                          for s, w in (("extraction", 8), ("retrieval", 6), ("matching", 7), ("pnp", 6), ("total", 7)))
            lines.append(f"{r['pair']:<18} {cond:<6} {a['n']:>3} {rec} "
                         f"{a['median_t_m']:6.3f}m {a['median_R_deg']:6.2f}°"
                         f" | {lt} {r['peak_rss_mb']:7.0f}")
    lines.append("latency: median ms per frame; peak RSS of the process that built the map and localized")
    lines.append("")
    lines.append(f"{'covariance':<18} {'cond':<6} {'n':>3} {'NEES pos':>9} {'in 95%':>7} {'NEES rot':>9} {'in 95%':>7}")
    for r in rows:
        for cond, a in sorted(r["accuracy"].items()):
            c = a.get("covariance")
            if c:
                lines.append(f"{r['pair']:<18} {cond:<6} {int(c['count']):>3} {c['position_median']:9.2f} "
                             f"{100 * c['position_within_95']:6.1f}% {c['rotation_median']:9.2f} "
                             f"{100 * c['rotation_within_95']:6.1f}%")
    lines.append("NEES: median over the localized poses of e^T C^-1 e (position / rotation block of the reported "
                 f"covariance); honest: {CHI2_3DOF_MEDIAN:.2f} and 95 % within the chi-square bound "
                 f"({CHI2_3DOF_95:.2f}); smaller: conservative, larger: over-confident")
    return "\n".join(lines)


def plot_cdf(rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import chi2

    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    for r in rows:
        for cond, a in sorted(r["accuracy"].items()):
            e = np.array(a["errors"])
            style = {"label": f"{r['pair']} {cond}", "ls": "-" if cond == "day" else "--"}
            for ax, col in zip(axes, (0, 1)):
                v = np.sort(e[:, col])
                ax.plot(v, np.arange(1, len(v) + 1) / len(v), **style)
            v = np.sort(a.get("nees_position", []))
            if len(v):
                axes[2].plot(v, np.arange(1, len(v) + 1) / len(v), **style)
    x = np.logspace(-3, 3, 200)
    axes[2].plot(x, chi2.cdf(x, 3), color="black", lw=2, label="honest (chi-square, 3 dof)")
    axes[2].set(xscale="log", xlabel="position NEES (error vs reported covariance)", xlim=(1e-3, 1e3))
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=7)
    axes[0].set(xscale="log", xlabel="position error [m]", ylabel="fraction of queries", xlim=(1e-3, 10))
    axes[1].set(xscale="log", xlabel="rotation error [deg]", xlim=(1e-2, 20))
    for ax, th in zip(axes, ((0.25, 0.5, 5.0), (2, 5, 10))):
        for t in th:
            ax.axvline(t, color="gray", lw=0.5)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", type=Path, default=ROOT / "data" / "world", help="synthetic world (made if absent)")
    p.add_argument("--preset", default="default", help="preset of a world made here (an existing --world is used as "
                   "it is)")
    p.add_argument("--pairs", nargs="+", default=["sift+nn", "aliked+lightglue"], choices=sorted(PAIRS))
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--limit", type=int, default=0, help="queries per condition (0 = all)")
    p.add_argument("--weights", default=None, help="IMP-family pairs: this checkpoint instead of the shipped one")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_localization")
    p.add_argument("--confs", nargs="+", default=None,
                   help=f"compare localizer confs in tracking mode instead of pairs: {', '.join(CONFS)} or YAML paths")
    p.add_argument("--map", type=Path, default=None,
                   help="--confs: XFeat map of the world (default: built under --out/maps/xfeat_2048)")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results", help="--confs: JSON/table here")
    a = p.parse_args()
    if a.confs:
        return main_confs(a)
    from imp_core.world.synthetic import use_or_make_world

    use_or_make_world(a.world, preset=a.preset)
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    from concurrent.futures import ProcessPoolExecutor

    for pair in a.pairs:  # one fresh process per pair, shut down cleanly (its peak RSS is its own)
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
            rows.append(ex.submit(run_pair, {"pair": pair, "world": str(a.world), "maps": str(a.out / "maps"),
                                             "top_k": a.top_k, "limit": a.limit,
                                             "weights": a.weights}).result())
    table = format_table(rows)
    print(table)
    (a.out / "table.txt").write_text(table + "\n")
    (a.out / "results.json").write_text(dumps_strict(rows, indent=1))
    plot_cdf(rows, a.out / "error_cdf.png")
    print(f"wrote {a.out / 'results.json'}, {a.out / 'error_cdf.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
