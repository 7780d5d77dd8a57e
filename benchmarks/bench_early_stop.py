#!/usr/bin/env python
"""How early can IMP/EIMP stop? Per-iteration pose quality of the shipped weights, and stop rules replayed on it.

For every world pair (``bench_matchers.world_pairs``: day and night queries with their most covisible database
image, intrinsics and ground truth) the model runs all its iterations once; after each one the checkpoint head
(``--checkpoint-sinkhorn`` scalings) gives mutual matches (p = 0.1) and, with >= 25 of them, the relative pose
(essential matrix, 1 px, as the matcher's pose check). Recorded per iteration: inliers, inlier ratio and the pose
error against the ground truth (max of rotation and translation-direction angles). The stop rules of
``iterative.py`` (localization mode) are then replayed on these records: two agreeing poses at consecutive
checkpoints (1.5 degrees) and/or one confident pose (``stop_inliers``, ``stop_inlier_ratio``), for several
checkpoint sets. Reported per rule and size: mean iterations run, mean pose checks, and the share of pairs whose
stopping pose is within 5 degrees (the pose of the last iteration for pairs that never stop). Timing is
``bench_matchers.py``'s job; this script is what chose the matcher's defaults, on a training world::

    OMP_NUM_THREADS=1 python benchmarks/bench_early_stop.py --world /tmp/world11 --seed 11 --pairs-limit 40

(``--seed 11``: render training world 11 when ``--world`` is missing; the benchmarks' seed-0 world is kept for
evaluation). Writes ``<out>/bench_early_stop_<features>.{json,txt}``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_matchers as bm  # noqa: E402  (pairs and features, defined once)

from imp_core.eval.report import dumps_strict  # noqa: E402

#: (checkpoints, stop_inliers, stop_inlier_ratio); None checkpoints = every iteration from index 2
RULES = [
    ("agree, sharing its (3 5 7)", [3, 5, 7], None, 1.0),
    ("agree, 2..n-2", None, None, 1.0),
    ("agree or 100 / 0.40, 2..n-2", None, 100, 0.40),
    ("agree or 100 / 0.45, 2..n-2", None, 100, 0.45),
    ("agree or 150 / 0.50, 2..n-2", None, 150, 0.50),
    ("agree or 100 / 0.60, 2..n-2", None, 100, 0.60),
    ("agree or 100 / 0.45, 2 3 5 7", [2, 3, 5, 7], 100, 0.45),
    ("agree or 100 / 0.45, 1..n-2", list(range(1, 8)), 100, 0.45),
    ("never (all iterations)", [], None, 1.0),
]


def collect(pairs: List[bm.Pair], features: str, sizes: Sequence[int], sinkhorn: Optional[int],
            checks: Sequence[str] = ("USAC_MAGSAC:1000",)) -> List[Dict]:
    """Per size, pair, iteration and pose check (``checks``: "METHOD:ITERATIONS", the OpenCV estimator and its
    iteration cap): the checkpoint's matches and pose."""
    import time

    from tqdm import tqdm

    from imp_core.matching.base import create_matcher
    from imp_core.matching.imp.geometry import PairGeometry
    from imp_core.matching.imp.iterative import _row_pairs
    from imp_core.matching.imp.matcher import batch_features

    model = create_matcher({"name": "imp", "features": features, "early_stop": False}).model
    parsed = [(c, *c.split(":")) for c in checks]  # (name, OpenCV estimator, iteration cap)
    recs = []
    for n in sizes:
        for p in tqdm(pairs, desc=f"{n} keypoints", unit="pair"):
            f0, f1 = p.features[n]
            geos = {c: PairGeometry(p.cam0, p.cam1, 1.0, method=method, max_iterations=int(cap))
                    for c, method, cap in parsed}
            with torch.no_grad():
                st = model.encode(batch_features(f0, [f1], "cpu"))
                for i in range(model.n_layers):
                    st = model.iterate(st, i)
                    last = i == model.n_layers - 1
                    prob = model.assign(st, i, None if last else sinkhorn)
                    idx, _ = _row_pairs(*model.matches(st, prob, 0.2 if last else 0.1), 0)
                    for chk, geo in geos.items():
                        t0 = time.thread_time()
                        pose = geo.estimate(f0.keypoints[idx[:, 0]], f1.keypoints[idx[:, 1]]) if len(idx) >= 25 \
                            else None
                        r: Dict[str, Any] = {"size": n, "pair": p.name, "kind": p.kind, "it": i, "matches": len(idx),
                                             "check": chk, "check_ms": 1000 * (time.thread_time() - t0)}
                        if pose is not None:
                            r.update(inliers=int(pose.inliers.sum()), ratio=pose.inlier_ratio, pose=pose,
                                     err=bm.relative_pose_error_deg(pose, p.gt))
                        recs.append(r)
    return recs


def replay(recs: List[Dict], size: int, n_layers: int, checkpoints: Optional[Sequence[int]],
           stop_inliers: Optional[int], ratio: float, stop_deg: float = 1.5) -> Dict[str, float]:
    """One stop rule on the records of one size: mean iterations, mean pose checks, poses < 5 deg."""
    from imp_core.matching.imp.geometry import relative_poses_agree

    cks = set(range(2, n_layers - 1) if checkpoints is None else checkpoints) - {n_layers - 1}
    by: Dict[str, Dict[int, Dict]] = {}
    for r in recs:
        if r["size"] == size:
            by.setdefault(r["pair"], {})[r["it"]] = r

    def agree(a, b) -> bool:
        return a is not None and relative_poses_agree(a["pose"], b["pose"], stop_deg)

    its, checks, errs = [], [], []
    for d in by.values():
        prev, n_checks, stop = None, 0, None
        for i in range(n_layers - 1):
            if i not in cks:
                continue
            r = d[i]
            n_checks += 1
            if "pose" in r and (agree(prev, r) or (stop_inliers is not None and r["inliers"] >= stop_inliers
                                                and r["ratio"] >= ratio)):
                stop = (i + 1, r["err"])
                break
            prev = r if "pose" in r else None
        if stop is None:
            stop = (n_layers, d[n_layers - 1].get("err", 180.0))
        its.append(stop[0])
        checks.append(n_checks)
        errs.append(stop[1])
    e = np.array(errs)
    return {"pairs": len(e), "iterations": float(np.mean(its)), "checks": float(np.mean(checks)),
            "pose_ok_5deg": int((e < 5).sum()), "median_err_deg": float(np.median(e))}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=11, help="world seed to render when --world is missing")
    ap.add_argument("--features", default="xfeat", choices=["xfeat", "aliked"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--pairs-limit", type=int, default=40)
    ap.add_argument("--checkpoint-sinkhorn", type=int, default=5, help="Sinkhorn scalings of checkpoint heads")
    ap.add_argument("--checks", nargs="+", default=["USAC_DEFAULT:1000"],
                    help="pose checks to compare, METHOD:ITERATIONS (OpenCV estimator, geometry.PAIR_RANSAC_METHODS, "
                    "and its iteration cap; the matcher's is USAC_DEFAULT:1000); the first is the per-iteration "
                    "table's, every one gets the stop rules")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    from imp_core.world.synthetic import use_or_make_world

    use_or_make_world(a.world, preset="default", seed=a.seed)
    pairs = bm.world_pairs(a.world, a.pairs_limit)
    bm.extract_pairs(pairs, a.features, a.sizes, 1024, "cpu")
    checks = a.checks
    all_recs = collect(pairs, a.features, a.sizes, a.checkpoint_sinkhorn, checks)
    n_layers = 1 + max(r["it"] for r in all_recs)
    recs = [r for r in all_recs if r["check"] == checks[0]]
    lines = [f"world {a.world} ({len(pairs)} pairs), {a.features}, checkpoint heads with {a.checkpoint_sinkhorn} "
             f"Sinkhorn scalings, pose checks {checks[0]} (OpenCV estimator:iteration cap)", "",
             "per iteration: poses < 5 deg, median inliers, median inlier ratio"]
    for n in a.sizes:
        row = []
        for i in range(n_layers):
            rs = [r for r in recs if r["size"] == n and r["it"] == i]
            ok = sum(r.get("err", 180) < 5 for r in rs)
            row.append(f"{i}: {ok}/{len(rs)} {np.median([r.get('inliers', 0) for r in rs]):.0f} "
                       f"{np.median([r.get('ratio', 0) for r in rs]):.2f}")
        lines.append(f"  {n}: " + " | ".join(row))
    lines += ["", f"{'rule':<32} {'keypoints':>9} {'pose check':>18} {'iterations':>10} {'checks':>7} "
              f"{'pose < 5 deg':>13} {'median':>7} {'ms/check':>9}"]
    summary = []
    for name, cks, inl, ratio in RULES:
        for n in a.sizes:
            for chk in checks:
                rc = [r for r in all_recs if r["check"] == chk]
                s = replay(rc, n, n_layers, cks, inl, ratio)
                s["ms_per_check"] = float(np.median([r["check_ms"] for r in rc
                                                     if r["size"] == n and r["matches"] >= 25]))
                summary.append({"rule": name, "keypoints": n, "pose_check": chk, **s})
                lines.append(f"{name:<32} {n:>9} {chk:>18} {s['iterations']:>10.2f} {s['checks']:>7.2f} "
                             f"{s['pose_ok_5deg']:>6}/{s['pairs']:<6} {s['median_err_deg']:>6.2f}° "
                             f"{s['ms_per_check']:>9.1f}")
    text = "\n".join(lines)
    print(text)
    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.out / f"bench_early_stop_{a.features}"
    stem.with_suffix(".txt").write_text(text + "\n")
    stem.with_suffix(".json").write_text(dumps_strict({"summary": summary, "records": [
        {k: v for k, v in r.items() if k != "pose"} for r in all_recs]}))
    print(f"wrote {stem}.txt, .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
