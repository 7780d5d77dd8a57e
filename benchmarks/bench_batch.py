#!/usr/bin/env python
"""Batch localization throughput: one process against Ray with 1, 2 and 4 workers (issue 14 §3).

Every configuration localizes the same queries of the synthetic world globally (as ``imp benchmark`` does), each in
a fresh process: ``process`` is today's path (one ``Localizer`` here, ``--process-threads`` torch threads), ``ray N``
starts a private local Ray instance (``--ray-address local``) with N workers of ``--worker-threads`` threads each,
every worker opening the map from its path. Reported per configuration: start-up (Ray + every worker's map, or the
one localizer), the localization phase, queries per second over that phase and end to end, the machine's load
average (1/5 min) before and after, the CPU time per query (driver + workers: what Ray costs on top, independent
of the load) and a hash of the results file, which must be the same for every configuration. On a shared machine
the wall-clock numbers follow the scheduler (other sessions' load), hence the load average next to them.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_batch.py                       # 80 queries, xfeat + nn
    .venv/bin/python benchmarks/bench_batch.py --workers 1 2 4 --limit 20 --features sift

Writes benchmarks/results/bench_batch.{json,txt,png}.
"""
from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from imp_core.eval.report import dumps_strict  # noqa: E402

FEATURES = {"xfeat": ({"name": "xfeat", "max_keypoints": 2048}, {"name": "nn"}),
            "sift": ({"name": "sift", "max_keypoints": 2048}, {"name": "nn", "ratio_threshold": 0.9})}
STAGES = ("extraction", "retrieval", "matching", "pnp", "total")


def run_config(args: dict) -> dict:
    """One configuration, in its own process: start-up, then every query; timings, load and the results' hash."""
    if args["workers"] == 0:  # the same OpenMP/BLAS limits as a Ray worker gets (set before numpy/torch load)
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[k] = str(args["process_threads"])
    import torch

    from imp_core.datasets import open_dataset
    from imp_core.eval.formats import write_results
    from imp_core.eval.latency import latency_table
    from imp_core.localization.batch import localize_queries
    from imp_core.localization.distributed import open_localizer

    if args["workers"] == 0:
        torch.set_num_threads(args["process_threads"])
    ds = open_dataset(args["world"])
    queries = ds.queries()
    if args["limit"]:
        queries = [q for c in ds.conditions for q in ds.queries(c)[: args["limit"]]]
    conf = {"map": args["map"], "device": "cpu", "coarse": [{"name": "retrieval", "top_k": args["top_k"]}]}
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    if args["workers"] == 0:
        loc = open_localizer(conf, progress=False)
    else:
        loc = open_localizer(conf, args["workers"], "local", args["worker_threads"], progress=False)
    t1 = time.perf_counter()
    info = loc.worker_info() if args["workers"] else None
    c1 = time.process_time()
    try:
        results = localize_queries(loc, queries, progress=True, desc=args["name"])
    finally:
        t2 = time.perf_counter()
        c2 = time.process_time()
        after = loc.worker_info() if args["workers"] else None
        loc.close()
    # CPU time of the localization phase: this process, plus every worker's (the same work whatever the load)
    cpu_s = (c2 - c1) + (sum(b["cpu_s"] - a["cpu_s"] for a, b in zip(info, after)) if info else 0.0)
    t3 = time.perf_counter()
    load_after = os.getloadavg()
    out = Path(args["out"]) / f"{args['name'].replace(' ', '_')}.txt"
    write_results(out, {n: r.pose for n, r in results.items() if r.pose is not None})
    return {
        "config": args["name"], "workers": args["workers"], "queries": len(queries),
        "localized": sum(r.success for r in results.values()),
        "threads_per_worker": ([i["torch_threads"] for i in info] if info else [torch.get_num_threads()]),
        "startup_s": t1 - t0, "localize_s": t2 - t1, "shutdown_s": t3 - t2, "end_to_end_s": t3 - t0,
        "qps": len(queries) / (t2 - t1), "qps_end_to_end": len(queries) / (t3 - t0),
        "cpu_ms_per_query": 1000 * cpu_s / max(1, len(queries)), "driver_cpu_s": c2 - c1,
        "load_avg_before": list(load_before[:2]), "load_avg_after": list(load_after[:2]),
        "results_sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "thread_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
        # per-query stage times measured inside the localizer (wherever it ran): p50 ms
        "stage_p50_ms": {k: v["p50"] for k, v in latency_table(results).items() if k in STAGES},
    }


def ensure_map(world: Path, maps: Path, features: str) -> Path:
    import pycolmap

    from imp_core.datasets import open_dataset
    from imp_core.mapping import build_map

    fconf, mconf = FEATURES[features]
    map_dir = maps / f"{features}_{fconf['max_keypoints']}"
    if not (map_dir / "map.json").is_file():
        pycolmap.logging.minloglevel = 2
        build_map(open_dataset(world), map_dir, {"features": fconf, "matcher": mconf}, progress=True)
    return map_dir


def format_table(rows: list, meta: dict) -> str:
    lines = [f"{'config':<10} {'thr':>4} {'queries':>7} {'ok':>4} {'start s':>8} {'loc s':>7} {'q/s':>6} "
             f"{'q/s e2e':>8} {'speed-up':>8} {'cpu ms/q':>8} | "
             f"{'extr':>5} {'match':>5} {'pnp':>4} {'total':>5} ms p50 | "
             f"load 1/5 min before -> after"]
    base = rows[0]["qps"] if rows else 1.0
    for r in rows:
        thr = "x".join(str(t) for t in sorted(set(r["threads_per_worker"])))
        lines.append(f"{r['config']:<10} {thr:>4} {r['queries']:>7} {r['localized']:>4} {r['startup_s']:8.1f} "
                     f"{r['localize_s']:7.1f} {r['qps']:6.2f} {r['qps_end_to_end']:8.2f} {r['qps'] / base:7.2f}x "
                     f"{r['cpu_ms_per_query']:8.0f} | "
                     + " ".join(f"{r['stage_p50_ms'].get(k, float('nan')):{w}.0f}"
                                for k, w in (("extraction", 5), ("matching", 5), ("pnp", 4), ("total", 5)))
                     + f" | {r['load_avg_before'][0]:.2f} {r['load_avg_before'][1]:.2f} -> "
                     f"{r['load_avg_after'][0]:.2f} {r['load_avg_after'][1]:.2f}")
    same = len({r["results_sha256"] for r in rows}) == 1
    lines.append(f"{meta['cpus']} CPUs; map {meta['map']}; start: Ray instance + every worker's map (or the one "
                 f"localizer); q/s over the localization phase; e2e incl. start-up and shutdown; cpu ms/q: CPU time of "
                 f"the phase (driver + workers) per query; stage p50: wall ms inside the localizer; thr: torch "
                 f"threads per worker; results files identical across configurations: {'yes' if same else 'NO'}")
    return "\n".join(lines)


def plot(rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    names = [r["config"] for r in rows]
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["qps"] for r in rows], 0.4, label="localization phase")
    ax.bar([i + 0.2 for i in x], [r["qps_end_to_end"] for r in rows], 0.4, label="end to end (with start-up)")
    for i, r in enumerate(rows):
        ax.annotate(f"load {r['load_avg_before'][0]:.1f}", (i, max(r["qps"], r["qps_end_to_end"])),
                    ha="center", va="bottom", fontsize=8)
    ax.set(xticks=list(x), xticklabels=names, ylabel="queries / s",
           title=f"batch localization, {rows[0]['queries']} queries, {os.cpu_count()} CPUs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", type=Path, default=ROOT / "data" / "world", help="synthetic world (made if missing)")
    p.add_argument("--map", type=Path, help="map to use (default: built once under --work/maps)")
    p.add_argument("--features", choices=sorted(FEATURES), default="xfeat", help="features of the built map")
    p.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench_batch")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="Ray worker counts")
    p.add_argument("--worker-threads", type=int, default=1)
    p.add_argument("--process-threads", type=int, default=1,
                   help="torch (and OpenMP/BLAS) threads of the one-process run, as a worker's --worker-threads")
    p.add_argument("--limit", type=int, default=0, help="only the first N queries of each condition")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_batch")
    args = p.parse_args()

    from imp_core.world.synthetic import use_or_make_world

    use_or_make_world(args.world)
    map_dir = args.map or ensure_map(args.world, args.work / "maps", args.features)
    runs = [("process", 0)] + [(f"ray {n}", n) for n in args.workers]
    ctx = mp.get_context("spawn")
    rows = []
    for name, workers in runs:
        job = {"name": name, "workers": workers, "world": str(args.world), "map": str(map_dir),
               "limit": args.limit, "top_k": args.top_k, "worker_threads": args.worker_threads,
               "process_threads": args.process_threads, "out": str(args.work / "results")}
        with ctx.Pool(1) as pool:
            row = pool.apply(run_config, (job,))
        rows.append(row)
        print(f"{name}: {row['qps']:.2f} q/s ({row['localize_s']:.1f} s for {row['queries']} queries, start-up "
              f"{row['startup_s']:.1f} s), load {row['load_avg_before'][0]:.2f} -> {row['load_avg_after'][0]:.2f}",
              flush=True)
    meta = {"cpus": os.cpu_count(), "map": str(map_dir), "world": str(args.world),
            "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"), "top_k": args.top_k,
            "worker_threads": args.worker_threads, "process_threads": args.process_threads,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    table = format_table(rows, meta)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(dumps_strict({"meta": meta, "rows": rows}, indent=1))
    args.out.with_suffix(".txt").write_text(table + "\n")
    plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')}, .txt, .png")
    return 0 if len({r["results_sha256"] for r in rows}) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
