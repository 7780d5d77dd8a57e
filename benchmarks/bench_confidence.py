#!/usr/bin/env python
"""Does the localizer's confidence keep wrong poses from passing as OK? (issue 9, item 4)

Localizes every query of the synthetic world (day and night) against maps of several feature/matcher pairs,
records the pose the localizer's search ends with, reported or not (with its second look for a pose it would not
report), its quality measures (inlier count, inlier ratio, coverage, rotation std) and its error, and then counts
the wrong poses (> 5 deg or > 10 % of the scene depth) that pass as OK:

- before: the old gate (>= 20 inliers);
- after: the confidence gate (``acceptance.min_confidence``) with the model in imp_core/localization/confidence.py.

``--no-second-look`` localizes without the localizer's second look (on by default) and ``--threshold`` sets the
confidence threshold of the search as well as of the table (``--no-second-look --threshold 0.5``: the defaults
before 2026-12-05). ``--weights FILE`` localizes IMP-family pairs with another
checkpoint and ``--conditions night`` keeps one condition; the table gives the confidence of the right poses (min /
p10 / median), what a candidate matcher must not lower.

``--fit`` fits the logistic confidence model on these records (synthetic world only) and prints its coefficients;
``--save`` writes it, and ``--model FILE`` tabulates that model on other records (``--records``: other worlds,
without localizing again), e.g. fitted on training worlds and judged on held-out ones.

    .venv/bin/python benchmarks/bench_confidence.py --world data/world --pairs sift+nn xfeat+nn
Writes outputs/bench_confidence/{records.json, table.txt}.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_localization import PAIRS, matcher_conf  # noqa: E402  (the feature/matcher pairs, defined once)

from imp_core.eval.report import dumps_strict  # noqa: E402
from imp_core.localization.localizer import _Why  # noqa: E402


def wrong(rec: dict) -> bool:
    """> 5 deg or > 10 % of the scene depth (median depth of the inlier 3D points) off."""
    return rec["r_err"] > 5.0 or rec["t_err"] > 0.1 * rec["depth"]


def collect(world: Path, maps: Path, pair: str, top_k: int, weights: Optional[str] = None,
            conditions: Optional[Sequence[str]] = None, second_look: Optional[bool] = None,
            min_confidence: Optional[float] = None) -> list:
    """Records of every query of ``world`` localized against ``pair``'s map, with the localizer's defaults unless
    ``second_look`` / ``min_confidence`` are given (the search's pose depends on both: a trusted pose ends it)."""
    import pycolmap
    from tqdm import tqdm

    from imp_core.datasets import open_dataset
    from imp_core.imageio import read_image
    from imp_core.localization import Localizer
    from imp_core.mapping import build_map

    pycolmap.logging.minloglevel = 2
    fconf, shipped = PAIRS[pair]
    mconf = matcher_conf(pair, weights)  # localizing; the map is built with the pair's shipped matcher
    ds = open_dataset(world)
    map_dir = maps / pair.replace("+", "_")
    if not (map_dir / "map.json").is_file():
        build_map(ds, map_dir, {"features": fconf, "matcher": shipped}, progress=True)
    # the localizer's own acceptance (confidence gate, min_inliers, second look): the pose recorded is the one its
    # search ends with, reported or not (Localizer._search), and the table applies the gates to it afterwards
    lconf = {"map": str(map_dir), "matcher": mconf, "coarse": [{"name": "retrieval", "top_k": top_k}]}
    if second_look is not None:
        lconf["second_look"] = {"enabled": second_look}
    if min_confidence is not None:
        lconf["acceptance"] = {"min_confidence": min_confidence}
    loc = Localizer(lconf)
    out = []
    centers = {n: loc.map.pose(n).center for n in loc.map.names}
    queries = [q for q in ds.queries() if not conditions or q.condition in conditions]
    for q in tqdm(queries, desc=pair, unit="img"):
        image = read_image(q.path)
        for camera in (q.camera, None):  # given intrinsics, and unknown (focal estimated)
            loc.reset()
            ctx = loc.query_context(image, camera)  # one extraction serves the search and the negatives
            best = loc._search(ctx, {"matching": 0.0, "pnp": 0.0}, _Why())
            rec = {"pair": pair, "name": q.name, "condition": q.condition,
                   "status": "OK" if best is not None and loc._reports(best) else "LOST",
                   "kind": "retrieval" if camera is not None else "retrieval, unknown focal"}
            if best is not None:
                rec.update(_errors(best, q.gt_pose))
            out.append(rec)
            # hard negatives: the 5 most similar database images at least NEG_DIST away from the query, so that
            # (nearly) every pose from them is wrong; what separates these from true poses is what the gate needs.
            # Their second look stays among such images.
            far = [n for n in loc.map.names if np.linalg.norm(centers[n] - q.gt_pose.center) > NEG_DIST]
            neg = _verify_refs(loc, ctx, _ranked(loc, ctx, far)[:5], set(far))
            if neg is not None:
                out.append({"pair": pair, "name": q.name, "condition": q.condition,
                            "kind": "far references" + (", unknown focal" if camera is None else ""),
                            **_errors(neg, q.gt_pose)})
    return out


NEG_DIST = 20.0  # metres (the synthetic street is 60 m long; cameras see about 10-20 m ahead)


def _errors(scored, gt) -> dict:
    """Errors of a search's pose (``Localizer.Scored``) against ``gt``, its quality measures and whether the second
    look found it."""
    from imp_core.types import pose_error

    pnp = scored.verified.pnp
    t_err, r_err = pose_error(pnp.pose, gt)
    points3D = pnp.inlier_points3D
    depth = float(np.median(gt.transform(points3D)[:, 2])) if points3D is not None and len(points3D) else 1.0
    return {"t_err": t_err, "r_err": r_err, "depth": abs(depth), **scored.quality,
            "second_look": scored.verified.candidate.source == "second look"}


def _ranked(loc, ctx, names):
    """``names`` sorted by global-descriptor similarity to the query of ``ctx`` (most similar first; the search
    on ``ctx`` has computed its descriptor already)."""
    stage = next(s for s in loc.stages if s.conf["name"] == "retrieval")
    keep = set(names)
    return [n for n in stage.ranking(ctx) if n in keep]


def _verify_refs(loc, ctx, refs, among):
    """The pose from ``refs`` as the localizer scores it, with its second look (among the images ``among``) when
    it would not be reported; None when no pose."""
    from imp_core.stages import Candidate

    if not refs:
        return None
    timings = {"matching": 0.0, "pnp": 0.0}
    v = loc._verify(ctx, Candidate(refs, 0, "negatives"), timings)
    if v is None:
        return None
    return loc.conclude(ctx, loc.score(v), timings, among=among)


def fit(records: list, features: Sequence[str], l2: float = 1e-2) -> dict:
    """L2-regularised logistic regression (Newton) of 'right pose' on the confidence ``features``, over the poses
    with >= 20 inliers (the ones the gate decides on)."""
    from imp_core.localization.confidence import confidence_features

    rs = [r for r in records if "r_err" in r and r["num_inliers"] >= 20]
    X = np.array([confidence_features(r, features) for r in rs])
    y = np.array([0.0 if wrong(r) else 1.0 for r in rs])
    A = np.concatenate([np.ones((len(X), 1)), X], 1)
    w = np.zeros(A.shape[1])
    reg = l2 * np.diag(np.r_[0, np.ones(len(w) - 1)])
    for _ in range(100):
        p = 1 / (1 + np.exp(-A @ w))
        w -= np.linalg.solve((A * (p * (1 - p))[:, None]).T @ A / len(y) + reg, A.T @ (p - y) / len(y) + reg @ w)
    return {"features": list(features), "bias": round(float(w[0]), 3), "weights": [round(float(v), 3) for v in w[1:]]}


def table(records: list, threshold: float, model: Optional[dict] = None) -> str:
    """Per pair, condition and kind of run: wrong poses passing as OK and recall at (0.5 m, 5 deg), with the old
    gate (>= 20 inliers) and with the confidence gate as well."""
    from imp_core.eval.metrics import THRESHOLDS
    from imp_core.localization.confidence import confidence_score

    t_right, r_right = THRESHOLDS[0]
    lines = [f"{'pair':<18} {'cond':<6} {'run':<32} {'n':>4} {'wrongOK before':>15} {'>5deg OK before':>16} "
             f"{'wrongOK after':>14} {'>5deg OK after':>15} {'recall .5m,5deg before':>23} {'after':>6} "
             f"{'conf right min/p10/med':>24}"]
    keys = sorted({(r["pair"], r["condition"], r.get("kind", "")) for r in records})
    for pair, cond, kind in keys:
        rs = [r for r in records if r["pair"] == pair and r["condition"] == cond and r.get("kind", "") == kind]
        wb = wa = rb = ra = r5b = r5a = 0
        right = []  # confidence of the poses within the finest threshold that pass the old gate
        for r in rs:
            if "r_err" not in r:
                continue
            before = r["num_inliers"] >= 20
            score = confidence_score(r, model) if before else 0.0
            after = before and score >= threshold
            if before and r["t_err"] <= t_right and r["r_err"] <= r_right:
                right.append(score)
            bad = wrong(r)
            good = r["t_err"] <= 0.5 and r["r_err"] <= 5.0
            wb += before and bad
            wa += after and bad
            r5b += before and r["r_err"] > 5
            r5a += after and r["r_err"] > 5
            rb += before and good
            ra += after and good
        n = len(rs)
        conf = (f"{min(right):.3f} / {float(np.percentile(right, 10)):.3f} / {float(np.median(right)):.3f}"
                if right else "-")
        lines.append(f"{pair:<18} {cond:<6} {kind:<32} {n:>4} {wb:>15} {r5b:>16} {wa:>14} {r5a:>15} "
                     f"{100 * rb / n:>22.1f}% {100 * ra / n:>5.1f}% {conf:>24}")
    lines.append(f"wrong = > 5 deg or > 10 % of the scene depth off; confidence threshold {threshold}; "
                 "'far references' runs are hard negatives (references >= 20 m away): every OK there is a failure; "
                 "conf right: the confidence of the poses within (0.25 m, 2 deg) with >= 20 inliers")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", type=Path, default=ROOT / "data" / "world", help="synthetic world (made if absent)")
    p.add_argument("--maps", type=Path, default=None, help="map folder (default: <out>/maps)")
    p.add_argument("--pairs", nargs="+", default=["sift+nn", "xfeat+nn"], choices=sorted(PAIRS))
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--weights", default=None, help="IMP-family pairs: localize with this checkpoint (the map is "
                   "built with the shipped one; e.g. a candidate's confidence on right night poses)")
    p.add_argument("--conditions", nargs="+", default=None, help="only these query conditions (e.g. night)")
    p.add_argument("--second-look", action=argparse.BooleanOptionalAction, default=None,
                   help="localize with the localizer's second_look on / off (default: the localizer's, on: a pose it "
                   "would not report is verified again against the references near it)")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_confidence")
    p.add_argument("--reuse", action="store_true", help="reuse out/records.json instead of localizing again")
    p.add_argument("--records", type=Path, nargs="+", help="read these records.json files (e.g. of several worlds) "
                   "instead of localizing")
    p.add_argument("--threshold", type=float, help="confidence threshold of the search and the table (default: the "
                   "localizer's; the old default was --threshold 0.5 --no-second-look)")
    p.add_argument("--model", default="default", help="confidence model to tabulate: a name in confidence.CONF_MODELS "
                   "or a JSON file written by --save (e.g. fitted on other worlds' records)")
    p.add_argument("--fit", action="store_true", help="fit the confidence model on the records, print it and use it "
                   "for the table (instead of --model)")
    p.add_argument("--features", nargs="+", default=None, help="inputs of the fitted model (default: --model's): "
                   "any of imp_core.localization.confidence.FEATURES")
    p.add_argument("--save", type=Path, help="with --fit: write the model as JSON (the localizer's "
                   "acceptance.confidence_model takes the file)")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    rec_path = a.out / "records.json"
    files = a.records or ([rec_path] if a.reuse and rec_path.is_file() else [])
    if files:
        # records are strict JSON: a measure that was not finite (a rotation std without covariance) is null
        records = [{k: (math.nan if v is None else v) for k, v in r.items()}
                   for f in files for r in json.loads(f.read_text())]
    else:
        from imp_core.world.synthetic import use_or_make_world

        use_or_make_world(a.world)
        records = []
        for pair in a.pairs:
            records += collect(a.world, a.maps or a.out / "maps", pair, a.top_k, a.weights, a.conditions,
                               a.second_look, a.threshold)
        rec_path.write_text(dumps_strict(records, indent=0))
    from imp_core.localization.confidence import confidence_model
    from imp_core.localization.localizer import Localizer

    model = confidence_model(a.model)
    if a.fit:
        model = fit(records, a.features or model["features"])
        print("fitted confidence model:", json.dumps(model))
        if a.save:
            a.save.write_text(json.dumps(model, indent=1) + "\n")
    t = table(records, a.threshold if a.threshold is not None else
              Localizer.default_conf["acceptance"]["min_confidence"], model)
    print(t)
    (a.out / "table.txt").write_text(t + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
