"""CLI subcommand ``imp world``: render the synthetic world, optionally export it in a real benchmark layout."""
from __future__ import annotations

import argparse

from .export import EXPORTERS, export
from .synthetic import SyntheticWorld, make_world

HELP = """Render the embedded synthetic street (database drive + day/night query sequences with exact poses,
depth and instance masks) into OUT, in the layout of real benchmarks. An existing complete world with the
same preset and seed is reused. With --export, also write a copy in the Aachen v1.1 or RobotCar Seasons layout."""

EPILOG = """examples:
  imp world --out data/world --preset default --seed 0
  imp world --out /tmp/tiny --preset tiny --export aachen /tmp/tiny_aachen"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("world", help="render the synthetic world (and export it to benchmark layouts)",
                              description=HELP, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="directory of the world (created; reused when complete)")
    p.add_argument("--preset", default="default", choices=["tiny", "default", "city", "city_large"],
                   help="tiny: 16 db + 16 queries for tests; default: 60 db + 80 queries for the demo; city: "
                        "538 db + 192 queries on 5 streets with look-alike facades, weather and a hard night; "
                        "city_large: ~1.5k db images for scale benchmarks")
    p.add_argument("--seed", type=int, default=0, help="random seed of the scene and trajectories (default 0)")
    p.add_argument("--export", nargs=2, metavar=("LAYOUT", "DIR"), action="append", default=[],
                   help="also write the world as LAYOUT (aachen or robotcar) into DIR; repeatable")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--workers", type=int, default=1,
                   help="render in this many processes (default 1; the same files either way)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    for kind, _ in args.export:
        if kind not in EXPORTERS:
            raise SystemExit(f"imp world: unknown --export layout {kind!r}; choose from {', '.join(EXPORTERS)}")
    root = make_world(args.out, preset=args.preset, seed=args.seed, progress=not args.quiet, workers=args.workers)
    world = SyntheticWorld(root)
    print(f"world: {root} ({len(world.db_names)} db, "
          + ", ".join(f"{len(world.query_names(c))} {c}" for c in world.conditions) + " queries)")
    for kind, out in args.export:
        print(f"exported {kind}: {export(world, kind, out, progress=not args.quiet)}")
    return 0
