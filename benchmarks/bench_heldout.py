#!/usr/bin/env python
"""Matcher weights side by side on one training run's held-out pairs (e.g. the GM ablation against IMP).

The trainer's own evaluation (``imp_core.training.trainer.evaluate``): the run's dumps, held-out split, keypoint
and match sampling (``RUN/conf.json``), last iteration's mutual matches with p > ``match_threshold``: precision
(ignored keypoints excluded), recall and the match loss. Model cards quote each run's held-out numbers at training
time; their held-out sets differ between runs (other dumps, other sampling), so weights compare only here, on one::

    python benchmarks/bench_heldout.py --run WORKDIR/runs/gm_xfeat \\
        imp=imp_core/matching/imp/weights/imp_xfeat.pth gm=imp_core/matching/imp/weights/gm_xfeat.pth

Each argument is VARIANT=PATH (gm, imp or eimp; eimp evaluates as imp: pooling is an inference-time decision).
``--keypoints N --max-inliers M`` samples the same held-out pairs with another keypoint / match count (the shipped
XFeat weights trained at 512 keypoints; inference gives them 1024 or 2048).
Writes ``<out>/bench_heldout_<run name>.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from imp_core.eval.report import dumps_strict  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="training run directory (with conf.json)")
    p.add_argument("weights", nargs="+", help="VARIANT=PATH, e.g. imp=imp_core/matching/imp/weights/imp_xfeat.pth")
    p.add_argument("--keypoints", type=int, default=None,
                   help="keypoints per image instead of the run's (e.g. 1024, what inference sees)")
    p.add_argument("--max-inliers", type=int, default=None, help="at most this many matched (default the run's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_heldout")
    a = p.parse_args()

    import torch

    from imp_core.matching.imp.checkpoint import load_model
    from imp_core.matching.imp.model import VARIANTS
    from imp_core.training.trainer import evaluate, make_datasets, run_conf

    torch.set_num_threads(a.threads)
    try:
        conf, data = run_conf(a.run, {k: v for k, v in (("n_keypoints", a.keypoints),
                                                        ("max_inliers", a.max_inliers)) if v is not None})
    except FileNotFoundError as e:
        raise SystemExit(f"--run {e}") from None
    specs = []
    for s in a.weights:
        variant, sep, path = s.partition("=")
        if not sep or variant not in VARIANTS:
            raise SystemExit(f"weights must be VARIANT=PATH with VARIANT one of {VARIANTS}, got {s!r}")
        if not Path(path).is_file():
            raise SystemExit(f"{path} does not exist")
        specs.append(("imp" if variant == "eimp" else variant, path))
    _, val = make_datasets(data, conf)
    if val is None:
        raise SystemExit(f"{a.run}: the run has no held-out pairs")
    loader = torch.utils.data.DataLoader(val, batch_size=int(conf["batch_size"]), shuffle=False)
    rows = []
    for variant, path in specs:
        model, _ = load_model(path, variant)
        t0 = time.perf_counter()
        r = evaluate(model.eval(), loader, "cpu", float(conf["match_threshold"]))
        rows.append({"variant": variant, "weights": path, **r, "seconds": time.perf_counter() - t0})
        print(json.dumps(rows[-1]), flush=True)
    lines = [f"Held-out pairs of `{a.run.name}` ({len(val)} pairs, {conf['n_keypoints']} keypoints, at most "
             f"{conf['max_inliers']} matched; p > {conf['match_threshold']})", "",
             "| variant | weights | precision | recall | loss | matches |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | `{r['weights']}` | {r['precision']:.3f} | {r['recall']:.3f} | {r['val_loss']:.3f} | "
              f"{r['matches']} |" for r in rows]
    text = "\n".join(lines)
    print(text)
    a.out.mkdir(parents=True, exist_ok=True)
    sampled = "" if a.keypoints is None and a.max_inliers is None else \
        f"_{conf['n_keypoints']}kp_{conf['max_inliers']}"
    stem = a.out / f"bench_heldout_{a.run.name}{sampled}"
    stem.with_suffix(".json").write_text(dumps_strict({"run": str(a.run), "pairs": len(val), "rows": rows}, indent=1))
    stem.with_suffix(".md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
