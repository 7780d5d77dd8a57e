#!/usr/bin/env python
"""Where instance-guided search loses night queries on the city world: for each query, the candidates the localizer
verified (source, whether a reference is at the right place: within 8 m and 40 deg, PnP inliers), and an oracle
check: the 5 database images nearest to the query's true pose matched with the pipeline's matcher (label_nn) and
with nn. If the oracle localizes but the pipeline does not, the coarse search is the limit, not matching.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_recognition_diagnose.py data/city_maps/xfeat_rec15 \\
        --condition night --limit 48 [--rank global]

Prints one JSON line per query and a SUMMARY line (shares of queries): ok (localized within 0.5 m),
right_place_tried, right_place_in_instance_cands, fallback_tried, oracle_label_nn_ok, oracle_nn_ok.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("map", type=Path, help="city map with its recognizer (bench_recognition_city.py makes them)")
    ap.add_argument("--world", type=Path, default=ROOT / "data" / "city")
    ap.add_argument("--condition", default="night")
    ap.add_argument("--limit", type=int, default=48)
    ap.add_argument("--rank", default=None, help="instance stage rank (layout, global); default: the stage's")
    args = ap.parse_args()

    from imp_core.datasets import open_dataset
    from imp_core.localization import Localizer
    from imp_core.matching.base import create_matcher
    from imp_core.stages import Candidate, QueryContext
    from imp_core.types import pose_error

    ds = open_dataset(args.world)
    rec = {"model": str(args.map / "recognition" / "model.pt")}
    if args.rank:
        rec["rank"] = args.rank
    loc = Localizer({"map": str(args.map), "recognition": rec})
    db = {n: ds.pose(n) for n in loc.map.names}
    matchers = {"label_nn": loc.matcher, "nn": create_matcher({"name": "nn", "device": "cpu"})}
    instance = [s for s in loc.stages if s.conf["name"] == "instance"][0]
    log = []
    verify = loc._verify

    def logged(ctx, cand, timings, why=None):
        v = verify(ctx, cand, timings, why)
        log.append((cand.source, cand.references, None if v is None else int(v.pnp.num_inliers)))
        return v

    loc._verify = logged

    def right(name, gt):
        d, a = pose_error(db[name], gt)
        return d < 8 and a < 40

    rows = []
    for q in ds.queries(args.condition)[: args.limit]:
        log.clear()
        loc.reset()
        img = ds.image(q.name)
        r = loc.localize(img, q.camera)
        ok = bool(r.success and pose_error(r.pose, q.gt_pose)[0] < 0.5)
        tried = [(s, any(right(n, q.gt_pose) for n in refs), inl) for s, refs, inl in log]
        near = sorted(db, key=lambda n: pose_error(db[n], q.gt_pose)[0] + 0.05 * pose_error(db[n], q.gt_pose)[1])[:5]
        oracle = {}
        for name, m in matchers.items():
            loc.matcher = m
            ctx = QueryContext(image=img, camera=q.camera, features=loc.extractor.extract(img))
            instance.prepare(ctx)  # recognition: label_nn gets the query's keypoint labels
            ctx.features = loc._apply_budget(ctx.features)  # the keypoints the pipeline keeps (labelled first)
            v = verify(ctx, Candidate(near, 10, "oracle"), {"matching": 0.0, "pnp": 0.0})
            oracle[name] = 0 if v is None else int(v.pnp.num_inliers)
            oracle[name + "_ok"] = bool(v is not None and pose_error(v.pnp.pose, q.gt_pose)[0] < 0.5)
        loc.matcher = matchers["label_nn"]
        rows.append({"q": q.name, "ok": ok, "instances": [int(i) for i, _ in r.instances[:5]], "tried": tried,
                     "oracle": oracle, "message": r.message})
        print(json.dumps(rows[-1]), flush=True)
    n = max(1, len(rows))
    summary = {
        "ok": sum(r["ok"] for r in rows) / n,
        "right_place_tried": sum(any(t[1] for t in r["tried"]) for r in rows) / n,
        "right_place_in_instance_cands": sum(any(t[1] for t in r["tried"] if t[0].startswith("instance"))
                                             for r in rows) / n,
        "fallback_tried": sum(any(t[0] == "retrieval" for t in r["tried"]) for r in rows) / n,
        "oracle_label_nn_ok": sum(r["oracle"]["label_nn_ok"] for r in rows) / n,
        "oracle_nn_ok": sum(r["oracle"]["nn_ok"] for r in rows) / n,
    }
    print("SUMMARY", args.condition, len(rows), json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
