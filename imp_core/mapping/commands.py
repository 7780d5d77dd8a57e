"""`imp map build` / `imp map info`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

# The handlers import what they run: `imp --help` imports every command module (imp_core/cli.py) and should not
# pay for torch, Ray or the pipeline behind each command.


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("map", help="build or inspect a localization map",
                       description="Build a localization map from database images (triangulation when the "
                                   "dataset knows the database poses, SfM otherwise) or print a map's summary.")
    msub = p.add_subparsers(dest="map_cmd", required=True)
    b = msub.add_parser("build", help="build a map from a dataset or an image folder",
                        description="Extract local features, match covisible pairs, triangulate (known poses) or "
                                    "run SfM (images only), and write a versioned map directory. Resumes an "
                                    "interrupted build from its cache.")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", type=Path, help="dataset root (synthetic world, Aachen v1.1, RobotCar Seasons)")
    src.add_argument("--images", type=Path, help="folder of images without poses (SfM mode)")
    b.add_argument("--out", type=Path, required=True, help="map directory to write")
    b.add_argument("--config", type=Path, help="YAML with a 'map' section (features, matcher, pairs, ...)")
    b.add_argument("--features", help="feature conf name: sift, aliked, disk, xfeat, superpoint")
    b.add_argument("--matcher", help="matcher conf name: nn, lightglue, imp, ...")
    b.add_argument("--max-keypoints", type=int, help="keypoint budget per image")
    b.add_argument("--resize-max", type=int, help="resize the longer image side down to this before extraction "
                                                  "(default 1024; 0 = full resolution); keypoints are stored at full "
                                                  "resolution")
    b.add_argument("--device", default=None, help="auto, cpu or cuda")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a map conf key after --config and the options above, dotted, value as YAML "
                        "(repeatable): features.max_keypoints=4096, pairs.num_neighbors=10, global.num_clusters=64")
    b.add_argument("--recognition", action="store_true",
                   help="also train the map's own instance recognizer (see `imp recognition train`); the localizer "
                        "then uses instance-guided search on this map by default")
    b.add_argument("--budget-min", type=float, default=None,
                   help="with --recognition: training time in minutes (default 15)")
    b.set_defaults(func=_build)
    i = msub.add_parser("info", help="print a map's metadata")
    i.add_argument("map", type=Path)
    i.set_defaults(func=_info)
    u = msub.add_parser("upgrade", help="bring a map written by an earlier imp to the current layout (in place)",
                        description="Write the map's index.h5 (poses, cameras, 3D points and tracks in arrays: the "
                                    "localizer then starts without reading the COLMAP model or every image's "
                                    "features) and, where descriptors are stored as float32, rewrite features.h5 "
                                    "with float16 descriptors. Safe to rerun.")
    u.add_argument("map", type=Path)
    u.set_defaults(func=_upgrade)


def build_conf_from_args(args) -> dict:
    """The build conf: defaults <- the --config file's 'map' section (or the file) <- the options as dotted
    overrides (--features is features.name=..., so another feature type starts from its own defaults)."""
    from ..config import load_conf
    from .build import DEFAULT_BUILD_CONF, build_option_overrides

    over = build_option_overrides(args.features, args.matcher, args.max_keypoints, args.resize_max, args.device)
    return load_conf(DEFAULT_BUILD_CONF, args.config, over + list(args.set or []), section="map", where="map")


def _build(args) -> int:
    from ..datasets import open_dataset
    from .build import ImageFolder, build_map

    if args.budget_min is not None and not args.recognition:
        raise SystemExit("imp map build: --budget-min needs --recognition")
    source = open_dataset(args.dataset) if args.dataset else ImageFolder(args.images)
    conf = build_conf_from_args(args)
    out = build_map(source, args.out, conf)
    meta = json.loads((out / "map.json").read_text())
    print(f"map written to {out}: {meta['num_images']} images, {meta['num_points3D']} 3D points, "
          f"mode {meta['mode']}, features {meta['features']['name']}")
    if args.recognition:
        from ..recognition.map_recognizer import DEFAULT_BUDGET_MIN
        from ..training.recognition.pipeline import build_recognizer

        card = build_recognizer(out, DEFAULT_BUDGET_MIN if args.budget_min is None else args.budget_min)
        print(f"recognizer written to {out / 'recognition'}: {card['instances']['num_instances']} instances, "
              f"{card['training']['steps']} steps in {card['training']['seconds']:.0f} s")
    return 0


def _info(args) -> int:
    from .format import read_map_meta

    print(json.dumps(read_map_meta(args.map), indent=2))
    return 0


def _upgrade(args) -> int:
    from .format import upgrade_map

    done = upgrade_map(args.map)
    print(f"map {args.map} upgraded: {done['index']} written ({done['images']} images, {done['points3D']} 3D points, "
          f"{done['index_s']:.1f} s)" + ("; features.h5 rewritten with float16 descriptors"
                                         if done["features_rewritten"] else ""))
    return 0
