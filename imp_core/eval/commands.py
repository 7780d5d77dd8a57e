"""CLI subcommand ``imp eval``: score result files against a dataset's ground truth."""
from __future__ import annotations

import argparse
from pathlib import Path

# The handlers import what they run: `imp --help` imports every command module (imp_core/cli.py) and should not
# pay for torch, Ray or the pipeline behind each command.

HELP = """Evaluate visuallocalization.net result files (name qw qx qy qz tx ty tz, world-to-camera) against the
ground truth of a dataset directory (synthetic world, or an exported Aachen/RobotCar copy with gt/query_poses.txt).
Prints recall at (0.25 m, 2 deg), (0.5 m, 5 deg), (5 m, 10 deg) and median errors per condition; queries missing
from a result file count as not localized."""

EPILOG = """example:
  imp eval --results outputs/imp_results.txt outputs/sift_results.txt --dataset data/world --plots outputs/eval"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="evaluate localization results against ground truth",
                              description=HELP, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", nargs="+", required=True, metavar="R.txt",
                   help="result file(s); each is one method, named after the file stem")
    p.add_argument("--dataset", required=True, help="dataset directory with ground-truth query poses")
    p.add_argument("--condition", default=None, help="only evaluate this condition (e.g. night)")
    p.add_argument("--plots", default=None, metavar="DIR", help="write trajectory and error-CDF PNGs here")
    p.add_argument("--json", default=None, metavar="FILE", help="write the summary as JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..datasets import DatasetError, open_dataset
    from .formats import read_results
    from .metrics import evaluate_queries, query_errors
    from .report import format_table, write_summary

    ds = open_dataset(args.dataset)
    queries = ds.queries(args.condition)
    if not queries:
        which = f" for condition {args.condition}" if args.condition else ""
        raise SystemExit(f"imp eval: no queries in {args.dataset}{which}")
    if any(q.gt_pose is None for q in queries):
        raise SystemExit(f"imp eval: {args.dataset} has no ground-truth poses for its queries "
                         "(public benchmarks are evaluated on visuallocalization.net)")
    gt = {q.name: q.gt_pose for q in queries if q.gt_pose is not None}  # all of them (checked above)
    conds = {q.name: q.condition for q in queries}
    results, ests, errors = {}, {}, {}
    for r in args.results:
        method = Path(r).stem
        est = read_results(r)
        unknown = [n for n in est if n not in gt]
        if unknown and len(unknown) == len(est):
            raise SystemExit(f"imp eval: no name in {r} matches a query of {args.dataset} (e.g. {unknown[0]!r})")
        ests[method], errors[method] = est, query_errors(est, gt, conds)
        results[method] = evaluate_queries(est, queries)
    print(format_table(results))
    if args.json:
        print(f"summary: {write_summary(args.json, results, {'dataset': str(args.dataset)})}")
    if args.plots:
        import numpy as np

        from .plots import plot_all

        try:
            db = np.array([ds.db_pose(n).center for n in ds.db_names])
        except DatasetError:  # a dataset without a readable reference model still gets its plots
            db = None
        for label, p in plot_all(args.plots, gt, ests, conds, errors, db).items():
            print(f"{label}: {p}")
    return 0
