"""``imp benchmark aachen|robotcar|synthetic --data DIR``: one command from a downloaded dataset to a submission.

Steps: open the dataset as downloaded; build the map of its database (or reuse the one in ``--map``; an
interrupted build resumes from its cache); localize every query of each query set with progress, appending one
JSON line per query to ``<out>/<set>_log.jsonl`` as it goes (a rerun skips the queries already there, so an
interrupted run continues where it stopped); write the submission in the visuallocalization.net format; where
ground truth exists (RobotCar v2 train list, the synthetic world, fixtures) print the recall table at the three
thresholds per condition and write plots.

Query sets: Aachen and synthetic have one (``queries``); RobotCar has ``test`` (robotcar_v2_test.txt, the
submission) and ``train`` (robotcar_v2_train.txt, scored locally), both by default when the lists exist.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..config import ConfigError, load_conf, load_yaml
from ..datasets import robotcar
from ..datasets.base import DatasetError, LocalizationDataset, QueryItem
from ..datasets.detect import open_dataset
from ..eval.formats import write_results
from ..eval.report import dumps_strict, summarize_run
from ..mapping import build_map
from ..mapping.build import build_option_overrides
from ..types import LocalizationResult
from .batch import localize_queries, read_log, record_result
from .distributed import add_worker_args, open_localizer
from .localizer import localizer_conf

KINDS = {"aachen": "aachen_v1.1", "robotcar": "robotcar", "synthetic": "synthetic"}
SUBMISSION = {"aachen": "Aachen-v1.1_imp.txt", "robotcar": "RobotCar-Seasons-v2_imp.txt",
              "synthetic": "synthetic_imp.txt"}
RUN_FILE = "run.json"

HELP = """Run a localization benchmark end to end on a dataset exactly as downloaded: build (or reuse) the map,
localize every query with progress (resumable: results are appended per query, a rerun continues where an
interrupted one stopped), write the submission file for visuallocalization.net, and print the accuracy table per
condition (recall at 0.25 m/2 deg, 0.5 m/5 deg, 5 m/10 deg) where ground truth is known, with plots."""

EPILOG = """examples:
  imp benchmark aachen   --data datasets/aachen_v1.1   --out outputs/aachen   --features aliked --resize-max 1024
  imp benchmark robotcar --data datasets/robotcar      --out outputs/robotcar --features aliked
  imp benchmark robotcar --data datasets/robotcar      --split train --condition night --limit 50
  imp benchmark synthetic --data data/world --features sift --matcher nn"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="map + localize + submission + accuracy for Aachen / RobotCar / synthetic",
                       description=HELP, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=sorted(KINDS), help="which benchmark DIR holds")
    p.add_argument("--data", type=Path, required=True, help="dataset root exactly as downloaded and extracted")
    p.add_argument("--out", type=Path, help="output directory (default outputs/benchmark/<dataset>)")
    p.add_argument("--map", type=Path, help="map directory to reuse or build (default <out>/map)")
    p.add_argument("--rebuild-map", action="store_true", help="rebuild the map even if --map holds one")
    p.add_argument("--restart", action="store_true", help="discard earlier per-query results in --out")
    p.add_argument("--config", type=Path, help="YAML with 'map' and/or 'localizer' sections")
    p.add_argument("--features", help="map features: sift, aliked, disk, xfeat, superpoint")
    p.add_argument("--matcher", help="matcher: nn, lightglue, imp, ...")
    p.add_argument("--max-keypoints", type=int, help="keypoint budget per image")
    p.add_argument("--resize-max", type=int, help="resize the longer image side to this before extraction")
    p.add_argument("--top-k", type=int, default=None, help="references per query from global retrieval (same as "
                                                           "--set localizer.coarse.retrieval.top_k=N)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a conf key after --config and the options above, dotted, value as YAML "
                        "(repeatable): map.features.max_keypoints=4096, localizer.coarse.retrieval.top_k=10")
    p.add_argument("--device", help="auto, cpu or cuda")
    p.add_argument("--split", action="append", choices=["test", "train", "all"],
                   help="RobotCar query sets (repeatable; default: test and train when their lists exist)")
    p.add_argument("--reference", choices=["nvm", "individual"], default="nvm",
                   help="RobotCar reference model: all.nvm + overcast-reference.db (default) or the individual "
                        "COLMAP submaps")
    p.add_argument("--condition", action="append", help="only these conditions (repeatable)")
    p.add_argument("--limit", type=int, default=0, help="only the first N queries of each set (quick checks)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_worker_args(p)
    p.set_defaults(func=_run)


# ------------------------------------------------------------------------------------------------ pieces
def open_benchmark(kind: str, data, reference: str = "nvm") -> LocalizationDataset:
    if kind not in KINDS:
        raise ValueError(f"unknown benchmark {kind!r}; choose from {', '.join(sorted(KINDS))}")
    ds = open_dataset(data, **({"reference": reference} if kind == "robotcar" else {}))
    if ds.kind != KINDS[kind]:
        raise DatasetError(f"{data} holds a {ds.kind} dataset, not {kind}: run `imp benchmark "
                           f"{next(k for k, v in KINDS.items() if v == ds.kind)} --data {data}`")
    return ds


def query_sets(ds: LocalizationDataset, splits: Optional[Sequence[str]] = None,
               conditions: Optional[Sequence[str]] = None, limit: int = 0) -> Dict[str, List[QueryItem]]:
    """{set name: queries}. RobotCar: one set per split; the others: ``queries``."""
    if ds.kind == "robotcar":
        assert isinstance(ds, robotcar.RobotCarDataset)
        if not splits:
            splits = [s for s, f in (("test", robotcar.TEST_LIST), ("train", robotcar.TRAIN_LIST))
                      if (ds.root / f).is_file()] or ["all"]
        sets = {s: ds.queries(split=s) for s in splits}
    else:
        if splits:
            raise ValueError(f"--split applies to RobotCar only ({ds.kind} has one query set)")
        sets = {"queries": ds.queries()}
    if conditions:
        have = {q.condition for qs in sets.values() for q in qs}
        unknown = sorted(set(conditions) - have)
        if unknown:
            raise DatasetError(f"no queries of condition(s) {unknown} in {ds.root} (sets {', '.join(sets)}); "
                               f"conditions there: {', '.join(sorted(have))}")
    for name, qs in sets.items():
        if conditions:
            qs = [q for q in qs if q.condition in set(conditions)]
        sets[name] = qs[:limit] if limit else qs
    for name, qs in sets.items():
        missing = [q for q in qs if not q.path.is_file()]
        if missing:
            raise DatasetError(f"{len(missing)} of {len(qs)} {name} query images are missing, e.g. {missing[0].path} "
                               f"(query {missing[0].name!r}); is every image archive extracted under "
                               f"{getattr(ds, 'image_root', ds.root)}?")
    return sets


def ensure_map(ds: LocalizationDataset, map_dir: Path, conf: dict, rebuild: bool = False,
               progress: bool = True) -> Path:
    """Reuse ``map_dir`` when it holds a map of this dataset's database (same features when asked), else build it
    (resuming an interrupted build)."""
    meta_path = map_dir / "map.json"
    if meta_path.is_file() and not rebuild:
        meta = json.loads(meta_path.read_text())
        src = meta.get("source", "")
        if src and Path(src).resolve() != Path(ds.root).resolve():
            raise DatasetError(f"map {map_dir} was built from {src}, not {ds.root}: pass another --map or "
                               "--rebuild-map")
        want = (conf.get("features") or {}).get("name")
        have = (meta.get("features") or {}).get("name")
        if want and have and want != have:
            raise DatasetError(f"map {map_dir} holds {have} features but --features {want} was asked for: pass "
                               "another --map or --rebuild-map")
        print(f"reusing map {map_dir} ({meta.get('num_images')} images, {meta.get('num_points3D')} points, "
              f"{have} features)")
        return map_dir
    if meta_path.is_file():
        meta_path.unlink()
    return build_map(ds, map_dir, conf, progress=progress)


def localize_resumable(localizer, queries: Sequence[QueryItem], log_path: Path, progress: bool = True,
                       desc: str = "localize") -> Dict[str, LocalizationResult]:
    """Localize each query not yet in ``log_path`` (``localize_queries``: globally, a query that raises is recorded
    as failed; ``localizer`` may be a Ray pool) and append its record in query order; returns the results of all
    queries (earlier runs included)."""
    localize_queries(localizer, queries, progress=progress, log_path=log_path, resume=True, desc=desc)
    done = read_log(log_path)
    return {q.name: record_result(done[q.name]) for q in queries}


def _check_run(out: Path, run: dict, restart: bool, sets: Sequence[str]) -> None:
    """Refuse to mix results of another map/configuration into a resumed run (unless ``restart``)."""
    path = out / RUN_FILE
    if restart:
        for s in sets:
            (out / f"{s}_log.jsonl").unlink(missing_ok=True)
            (out / f"{s}_log.jsonl.pending").unlink(missing_ok=True)  # results a Ray run finished out of order
    elif path.is_file():
        old = json.loads(path.read_text())
        if {k: old.get(k) for k in run} != run and any((out / f"{s}_log.jsonl").is_file() for s in sets):
            diff = [k for k in run if old.get(k) != run[k]]
            raise DatasetError(f"{out} holds results of another run (different {', '.join(diff)}): pass --restart "
                               "to discard them or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run, indent=1))


def run_benchmark(kind: str, data, out, map_dir=None, map_conf: Optional[dict] = None,
                  loc_conf: Optional[dict] = None, splits: Optional[Sequence[str]] = None,
                  conditions: Optional[Sequence[str]] = None, limit: int = 0, reference: str = "nvm",
                  rebuild_map: bool = False, restart: bool = False, progress: bool = True, workers: int = 1,
                  ray_address: Optional[str] = None, worker_threads: int = 1, loc_overrides=None) -> dict:
    """The whole benchmark; returns the summary (also written to ``<out>/summary.json``). ``workers`` > 1 or a
    ``ray_address``: the queries are localized by Ray workers (``localization.distributed``), same results.
    ``loc_conf`` (a dict or YAML file) and ``loc_overrides`` (dotted) make the localizer conf (``localizer_conf``,
    the map given)."""

    out = Path(out)
    ds = open_benchmark(kind, data, reference)
    sets = query_sets(ds, splits, conditions, limit)
    map_dir = Path(map_dir) if map_dir is not None else out / "map"
    ensure_map(ds, map_dir, dict(map_conf or {}), rebuild_map, progress)
    conf = localizer_conf(loc_conf, [*(loc_overrides or []), ("map", str(map_dir))])
    meta = json.loads((map_dir / "map.json").read_text())
    _check_run(out, {"dataset": str(Path(ds.root).resolve()), "map_id": meta.get("map_id"),
                     "localizer": {k: v for k, v in conf.items() if k not in ("map", "device")}}, restart, list(sets))
    loc = open_localizer(conf, workers, ray_address, worker_threads, progress=progress)
    summary: dict = {"dataset": kind, "data": str(ds.root), "map": str(map_dir), "sets": {}}
    tables = []
    try:
        for name, queries in sets.items():
            results = localize_resumable(loc, queries, out / f"{name}_log.jsonl", progress, f"localize {name}")
            poses = {n: r.pose for n, r in results.items() if r.pose is not None}
            scored = bool(queries) and all(q.gt_pose is not None for q in queries)
            if name in ("queries", "test") or (name == "all" and not scored):
                res_path = write_results(out / SUBMISSION[kind], poses)
            else:
                res_path = write_results(out / f"results_{name}.txt", poses)
            s = summarize_run(results, queries, out / name if scored else None)
            entry = {"queries": len(queries), "localized": len(poses), "results": str(res_path),
                     **{k: v for k, v in s.items() if k != "table"}}
            summary["sets"][name] = entry
            head = f"== {kind} {name}: {len(poses)}/{len(queries)} localized -> {res_path}"
            tables.append(head + "\n" + s["table"])
    finally:
        loc.close()
    summary["table"] = "\n\n".join(tables)
    (out / "summary.json").write_text(dumps_strict({k: v for k, v in summary.items() if k != "table"}, indent=1,
                                                   default=_json_default))
    return summary


def _json_default(o):
    """Numbers as floats, anything else as text (``dumps_strict`` writes the non-finite ones as null)."""
    try:
        return float(o)
    except (TypeError, ValueError):
        return str(o)


# ------------------------------------------------------------------------------------------------ CLI
def _confs(args) -> Tuple[dict, dict, list]:
    """(map conf, localizer conf, localizer overrides): the --config file's 'map' and 'localizer' sections, then
    the options as dotted overrides, --set last (``map.KEY=VALUE`` / ``localizer.KEY=VALUE``). The map conf stays
    partial (the build's defaults fill it in; a reused map is checked against what was asked for only); the
    localizer overrides apply once the map is known (``run_benchmark``)."""
    data = load_yaml(args.config) if args.config else {}
    map_over = build_option_overrides(args.features, args.matcher, args.max_keypoints, args.resize_max, args.device)
    loc_over: list = []
    if args.matcher:
        loc_over.append(("matcher.name", args.matcher))
    if args.device:
        loc_over.append(("device", args.device))
    if args.top_k:
        loc_over.append(("coarse.retrieval.top_k", args.top_k))
    for item in args.set or []:
        section, dot, rest = item.partition(".")
        if section not in ("map", "localizer") or not dot:
            raise ConfigError(f"--set {item!r}: expected map.KEY=VALUE or localizer.KEY=VALUE")
        (map_over if section == "map" else loc_over).append(rest)
    map_conf = load_conf(None, data.get("map") or {}, map_over, where="map")
    return map_conf, dict(data.get("localizer") or {}), loc_over


def _run(args) -> int:
    out = args.out or Path("outputs/benchmark") / args.dataset
    map_conf, loc_conf, loc_over = _confs(args)
    summary = run_benchmark(args.dataset, args.data, out, args.map, map_conf, loc_conf, args.split, args.condition,
                            args.limit, args.reference, args.rebuild_map, args.restart, progress=not args.quiet,
                            workers=args.workers, ray_address=args.ray_address, worker_threads=args.worker_threads,
                            loc_overrides=loc_over)
    print(summary["table"])
    print(f"summary: {out / 'summary.json'}")
    return 0
