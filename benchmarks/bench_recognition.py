#!/usr/bin/env python
"""LBR on the synthetic world, in one run: global instances from the map, recognition quality per condition
(mIoU, top-1 instance accuracy) and night localization recall, instance-guided vs plain global retrieval.

Steps (each reuses what an earlier run left in the output directory):
1. world (``make_world``, preset default) and a map of its database (``build_map``; SIFT + NN + VLAD by default:
   the setting where local-feature retrieval suffers at night);
2. ``annotate_map``: cluster the map's 3D points into instances, masks, index, keypoint labels; the clusters are
   checked against the world's ground-truth facade ids (purity);
3. train the recognition network on the database images (day only, night-style augmentation), or take --model
   (whose stored instance definition then labels this map);
4. recognition mIoU / top-1 on day and night queries (ground truth from query depth + pose, same label space);
5. localize the night queries globally (no tracking) with each coarse variant: "retrieval" (the map's global
   descriptors, top-k cluster), "instance" (LBR progressive search, retrieval fallback), and optionally
   "instance" + the label-aware matcher; recall at (0.25 m, 2 deg) / (0.5 m, 5 deg) / (5 m, 10 deg).

    .venv/bin/python benchmarks/bench_recognition.py --out outputs/bench_recognition
Writes OUT/{results.json, table.txt, recognition.png}.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imp_core.eval.metrics import THRESHOLDS  # noqa: E402
from imp_core.eval.report import dumps_strict  # noqa: E402

# map build confs (features, matcher, global descriptor) selectable with --features
MAP_CONFS = {
    "sift": {"features": {"name": "sift", "max_keypoints": 2048}, "matcher": {"name": "nn", "ratio_threshold": 0.9},
             "global": {"name": "vlad", "num_clusters": 32}},
    "aliked": {"features": {"name": "aliked", "max_keypoints": 1024}, "matcher": {"name": "lightglue"}},
}


def cluster_purity(world, lmap, map_dir) -> dict:
    """Map points labelled with the world's facade ids (majority over their observations) vs our clusters."""
    from imp_core.recognition.instances import load_point_labels
    from imp_core.recognition.masks import keypoint_labels

    pids, plab, _ = load_point_labels(map_dir)
    lut = dict(zip(pids.tolist(), plab.tolist()))
    votes: dict = {}
    for name in lmap.names:
        gl = keypoint_labels(lmap.features(name).keypoints, world.instance_mask(name))
        for pid, g in zip(lmap.point3D_ids(name), gl):
            if pid >= 0:
                votes.setdefault(int(pid), []).append(int(g))
    pairs = np.array([(lut[p], np.bincount(v).argmax()) for p, v in votes.items() if p in lut])
    fac = pairs[pairs[:, 1] > 0]
    purity = sum(np.bincount(fac[fac[:, 0] == c, 1]).max() for c in np.unique(fac[:, 0])) / max(1, len(fac))
    # completeness: share of each facade's points in its dominant cluster
    compl = sum(np.bincount(fac[fac[:, 1] == g, 0]).max() for g in np.unique(fac[:, 1])) / max(1, len(fac))
    return {"points": int(len(pairs)), "facade_points": int(len(fac)), "gt_facades": int(len(np.unique(fac[:, 1]))),
            "purity": float(purity), "completeness": float(compl)}


def recall(results, queries) -> dict:
    from imp_core.eval.metrics import query_errors, summarize

    errs = query_errors({q.name: results[q.name].pose if results[q.name].success else None for q in queries},
                        {q.name: q.gt_pose for q in queries})
    sm = summarize(errs, THRESHOLDS)
    out = {f"{t}m_{a}deg": r for (t, a), r in zip(THRESHOLDS, sm["recall"])}
    out["median_m"] = sm["median_t"]
    out["localized"] = sm["localized"] / max(sm["count"], 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=Path, default=None, help="synthetic world (default: OUT/world, made if missing)")
    ap.add_argument("--map", type=Path, default=None, help="map of the world (default: OUT/map, built if missing)")
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_recognition")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--features", default="sift", choices=sorted(MAP_CONFS), help="map conf when it is built here")
    ap.add_argument("--matcher", default="nn", help="matcher of the retrieval/instance comparison")
    ap.add_argument("--num-instances", type=int, default=32)
    ap.add_argument("--mode", default="xy", help="clustered axes (the synthetic world is z-up)")
    ap.add_argument("--model", type=Path, default=None, help="trained recognition model (skip training)")
    ap.add_argument("--centroids-from", type=Path, default=None,
                    help="annotated map whose instances to reuse (the one --model was trained on)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--rec-th", type=int, default=100, help="inliers accepting an instance cluster (LBR Aachen: 100)")
    ap.add_argument("--limit", type=int, default=None, help="queries per condition")
    ap.add_argument("--no-label-nn", action="store_true", help="skip instance + the label-aware matcher (LBR)")
    args = ap.parse_args()

    import pycolmap

    from imp_core.datasets import open_dataset
    from imp_core.eval.recognition.evaluate import evaluate_per_condition
    from imp_core.localization import Localizer
    from imp_core.localization.batch import localize_queries
    from imp_core.mapping import LocalizationMap, build_map
    from imp_core.recognition.database import map_image_loader, write_db_descriptors
    from imp_core.recognition.instances import annotate_map
    from imp_core.recognition.recognizer import Recognizer
    from imp_core.training.recognition.pipeline import train_on_map
    from imp_core.world import use_or_make_world

    pycolmap.logging.minloglevel = 2
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    world_dir = args.world or out / "world"
    use_or_make_world(world_dir, preset=args.preset, seed=0)
    ds = open_dataset(world_dir)
    map_dir = args.map or out / "map"
    if not (map_dir / "map.json").is_file():
        build_map(ds, map_dir, MAP_CONFS[args.features], progress=True)
    report: dict = {"world": str(world_dir), "map": str(map_dir), "args": {k: str(v) for k, v in vars(args).items()}}

    # a given model brings its own instance definition (the clusters of the map it was trained on)
    source = args.centroids_from or args.model
    index = annotate_map(map_dir, {"num_instances": args.num_instances, "mode": args.mode,
                                   "centroids_from": str(source) if source else None})
    lmap = LocalizationMap.load(map_dir)
    report["instances"] = {"num_instances": index.num_instances, **cluster_purity(ds, lmap, map_dir),
                           "images_per_instance": float(np.mean([len(v) for v in index.instance_images.values()]))}
    print("instances:", report["instances"], flush=True)

    if args.model is None:
        t = time.time()
        res = train_on_map(map_dir, out / "recognition", {"steps": args.steps, "batch_size": args.batch_size},
                           annotate=False)
        model = res["model"]
        report["training"] = {"steps": res["steps"], "seconds": round(time.time() - t, 1),
                              "final_loss": res["log"][-1]["total"] if res["log"] else None}
    else:
        model = args.model
    rec = Recognizer({"model": str(model)})
    write_db_descriptors(map_dir, lmap.names, rec, map_image_loader(map_dir))

    report["recognition"] = evaluate_per_condition(rec, ds, map_dir, ["day", "night"], args.limit)
    for c, s in report["recognition"].items():
        print(f"recognition {c}: mIoU {100 * s['mIoU']:.1f} top-1 {100 * s['top1']:.1f}", flush=True)

    night = ds.queries("night")[: args.limit]
    retrieval = {"name": "retrieval", "top_k": args.top_k, "min_inliers": 50}
    instance = {"name": "instance", "model": str(model), "k_can": args.top_k, "rec_th": args.rec_th, "nv_th": 50,
                "fallback": retrieval}
    variants = {f"retrieval+{args.matcher}": ([retrieval], args.matcher),
                f"instance+{args.matcher}": ([instance], args.matcher)}
    if not args.no_label_nn:
        variants["instance+label_nn"] = ([instance], "label_nn")
    report["localization_night"] = {}
    for key, (coarse, matcher) in variants.items():
        loc = Localizer({"map": str(map_dir), "matcher": {"name": matcher}, "coarse": coarse,
                         "acceptance": {"min_inliers": 20, "max_candidates": 8}})
        t = time.time()
        results = localize_queries(loc, night, tracking=False, progress=True)
        r = recall(results, night)
        r["seconds_per_query"] = (time.time() - t) / max(1, len(night))
        r["modes"] = {m: sum(1 for x in results.values() if x.success and x.mode == m) for m in ("instance", "global")}
        loc.close()
        report["localization_night"][key] = r
        print(key, r, flush=True)
    report["seconds"] = time.time() - t0
    (out / "results.json").write_text(dumps_strict(report, indent=2))
    table = format_table(report)
    (out / "table.txt").write_text(table)
    print(table)
    plot(report, out / "recognition.png")
    return 0


def format_table(rep: dict) -> str:
    i = rep["instances"]
    lines = [f"instances: {i['num_instances']} clusters of {i['points']} map points; facade purity "
             f"{100 * i['purity']:.1f}%, completeness {100 * i['completeness']:.1f}% ({i['gt_facades']} GT facades)",
             "", "recognition    mIoU   top-1  pixel-acc  images"]
    for c, s in rep["recognition"].items():
        lines.append(f"{c:<12} {100 * s['mIoU']:6.1f} {100 * s['top1']:7.1f} {100 * s['pixel_acc']:9.1f} "
                     f"{s['images']:7d}")
    lines += ["", "night localization      " + "  ".join(f"{t}m/{a}deg" for t, a in THRESHOLDS) + "  median_m  s/query"]
    for k, r in rep["localization_night"].items():
        vals = "  ".join(f"{100 * r[f'{t}m_{a}deg']:>{len(f'{t}m/{a}deg')}.1f}" for t, a in THRESHOLDS)
        lines.append(f"{k:<23} {vals}  {r['median_m']:8.3f}  {r['seconds_per_query']:7.2f}")
    return "\n".join(lines) + "\n"


def plot(rep: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    conds = list(rep["recognition"])
    x = np.arange(len(conds))
    a.bar(x - 0.2, [100 * rep["recognition"][c]["mIoU"] for c in conds], 0.4, label="mIoU")
    a.bar(x + 0.2, [100 * rep["recognition"][c]["top1"] for c in conds], 0.4, label="top-1 instance")
    a.set_xticks(x, conds)
    a.set_ylabel("%")
    a.set_title("recognition on synthetic queries")
    a.set_ylim(0, 125)
    a.legend(loc="upper center", ncol=2)
    keys = list(rep["localization_night"])
    labels = [f"{t} m, {d}°" for t, d in THRESHOLDS]
    w = 0.8 / max(1, len(keys))
    for k, key in enumerate(keys):
        r = rep["localization_night"][key]
        b.bar(np.arange(3) + (k - (len(keys) - 1) / 2) * w, [100 * r[f"{t}m_{d}deg"] for t, d in THRESHOLDS], w,
              label=key)
    b.set_xticks(np.arange(3), labels)
    b.set_ylabel("night queries localized (%)")
    b.set_title("night queries: instance-guided vs global retrieval")
    b.set_ylim(0, 125)
    b.legend(loc="upper center", ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
