"""CLI subcommands ``imp dump`` (training data) and ``imp train-matcher`` (GM / IMP / EIMP)."""
from __future__ import annotations

import argparse
import json
import signal

from .homography import dump_homography

# The handlers import what they run: `imp --help` imports every command module (imp_core/cli.py) and should not
# pay for torch, Ray or the pipeline behind each command.

DUMP_HELP = """Extract local features and ground-truth correspondences (depth + poses: 5 px, cycle check, one-to-one)
for image pairs, into one HDF5 file that `imp train-matcher` reads. Sources: the synthetic world (--synthetic) or
the MegaDepth layout (--megadepth ROOT with Undistorted_SfM/ and scene_info/*.npz)."""

DUMP_EPILOG = """examples:
  imp dump --synthetic data/world --out data/train/syn_sift.h5 --features sift --max-keypoints 1024
  imp dump --megadepth /data/MegaDepth --scenes 0015 0022 --out data/train/mega_sift.h5"""

TRAIN_HELP = """Train GM / IMP / EIMP on a dump: matching loss at every iteration (released IMP loss), optional pose
loss (weighted eight-point essential matrix, --pose-weight), Adam, checkpoints in the released format
(OUT/last.pth, OUT/best.pth: load them with the `imp`/`eimp` matchers' `weights`), resume, AMP on CUDA,
OUT/log.jsonl and OUT/curves.png. Held-out pairs report match precision and recall."""

TRAIN_EPILOG = """examples:
  imp train-matcher --preset imp_xfeat --workdir data/matcher_training   # the shipped models/imp_xfeat.pth
  imp train-matcher --data data/train/syn_sift.h5 --out runs/imp_sift --variant imp --steps 20000
  imp train-matcher --data data/train/syn_sift.h5 --out runs/imp_sift --resume
  imp train-matcher --data mega.h5 --out runs/imp_pose --pose-weight 0.5 --pose-warmup 20000"""


def register(subparsers) -> None:
    p = subparsers.add_parser("dump", help="features + ground-truth correspondences for matcher training",
                              description=DUMP_HELP, epilog=DUMP_EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--synthetic", metavar="WORLD", help="synthetic world directory (see `imp world`)")
    src.add_argument("--megadepth", metavar="ROOT", help="MegaDepth root (Undistorted_SfM/, scene_info/)")
    src.add_argument("--homography", metavar="DIR", nargs="+",
                     help="folders of photographs: random homography pairs with day->night photometry "
                          "(e.g. /usr/share/backgrounds /usr/share/wallpapers from Debian wallpaper packages); "
                          "resumable")
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--features", default="sift", help="feature extractor name (default sift; superpoint, ...)")
    p.add_argument("--max-keypoints", type=int, default=1024, help="keypoints per image (default 1024)")
    p.add_argument("--max-pairs", type=int, default=None, help="keep at most this many pairs")
    p.add_argument("--min-matches", type=int, default=21, help="drop pairs with fewer GT matches (default 21)")
    p.add_argument("--conditions", nargs="+", default=["day"], help="synthetic: query conditions to add")
    p.add_argument("--scenes", nargs="+", default=None, help="MegaDepth: scene ids (default: all in scene_info)")
    p.add_argument("--scene-info", default=None, help="MegaDepth: scene_info directory (default ROOT/scene_info)")
    p.add_argument("--pairs-per-scene", type=int, default=200, help="MegaDepth: pairs per scene (default 200)")
    p.add_argument("--min-overlap", type=float, default=0.1)
    p.add_argument("--max-overlap", type=float, default=0.8)
    p.add_argument("--pairs-per-photo", type=int, default=40, help="homography: pairs per photo (default 40)")
    p.add_argument("--max-photos", type=int, default=None, help="homography: use the first N photos (sorted)")
    p.add_argument("--device", default="auto", help="feature extraction device: auto, cpu, cuda")
    p.set_defaults(func=run_dump)

    t = subparsers.add_parser("train-matcher", help="train GM / IMP / EIMP on a dump",
                              description=TRAIN_HELP, epilog=TRAIN_EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--preset", default=None,
                   help="a shipped recipe (imp_xfeat, imp_aliked): renders/dumps its data under --workdir, trains "
                        "in stages (resumable), exports models/<name>.pth and docs/models/<name>.md")
    t.add_argument("--workdir", default="data/matcher_training", help="--preset: worlds, dumps and runs")
    t.add_argument("--no-export", action="store_true", help="--preset: train only")
    t.add_argument("--data", nargs="+", default=None, help="dump file(s) from `imp dump` (same features)")
    t.add_argument("--out", default=None, help="run directory (checkpoints, log, curves)")
    t.add_argument("--variant", default="imp", choices=["gm", "imp", "eimp"])
    t.add_argument("--conf", default=None, help="YAML with trainer conf overrides (keys of trainer.default_conf)")
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--keypoints", type=int, default=None, help="keypoints per image (default 1024)")
    t.add_argument("--layers", type=int, default=None, help="iterations (default 15; fewer for quick runs)")
    t.add_argument("--pose-weight", type=float, default=None, help="> 0 adds the pose loss")
    t.add_argument("--pose-warmup", type=int, default=None, help="steps before the pose loss starts")
    t.add_argument("--init-weights", default=None, help="start from a checkpoint (e.g. official weights)")
    t.add_argument("--device", default=None, help="auto, cpu, cuda")
    t.add_argument("--num-workers", type=int, default=None,
                   help="DataLoader worker processes (default 0: pairs are sampled in the training process)")
    t.add_argument("--amp", default=None, choices=["true", "false", "bf16", "fp16"],
                   help="CUDA autocast (default true: bfloat16 where the GPU has it, else float16)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.pth")
    t.set_defaults(func=run_train)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_dump(args: argparse.Namespace) -> int:
    conf = {"features": {"name": args.features, "max_keypoints": args.max_keypoints, "device": args.device},
            "max_pairs": args.max_pairs, "min_matches": args.min_matches}
    if args.homography:
        signal.signal(signal.SIGTERM, _interrupt)  # close the HDF5 file cleanly: the dump resumes later
        res = dump_homography(args.homography, args.out, {"features": conf["features"],
                                                          "min_matches": args.min_matches,
                                                          "pairs_per_photo": args.pairs_per_photo,
                                                          "max_photos": args.max_photos})
    elif args.synthetic:
        from .dump import dump_synthetic

        res = dump_synthetic(args.synthetic, args.out, conf, args.conditions)
    else:
        from .megadepth import dump_megadepth

        res = dump_megadepth(args.megadepth, args.out, args.scenes, conf, args.scene_info, args.min_overlap,
                             args.max_overlap, args.pairs_per_scene)
    print(f"dump: {args.out}: {res['images']} images, {res['pairs']} of {res['pairs_tried']} pairs kept")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from ..config import load_yaml
    from .trainer import train

    amp = {"true": True, "false": False}.get(args.amp, args.amp)
    runtime = {k: v for k, v in (("device", args.device), ("num_workers", args.num_workers), ("amp", amp))
               if v is not None}
    if args.preset:
        from .recipe import run_preset

        # a preset is a recipe: flags that would change what it trains are refused, not silently dropped; the
        # machine's flags (device, workers, autocast) are taken
        recipe_flags = {"--data": args.data, "--out": args.out, "--conf": args.conf, "--batch-size": args.batch_size,
                        "--lr": args.lr, "--keypoints": args.keypoints, "--layers": args.layers,
                        "--pose-weight": args.pose_weight, "--pose-warmup": args.pose_warmup,
                        "--init-weights": args.init_weights, "--resume": args.resume or None,
                        "--variant": None if args.variant == "imp" else args.variant}
        given = [k for k, v in recipe_flags.items() if v is not None]
        if given:
            raise SystemExit(f"imp train-matcher --preset {args.preset}: {', '.join(given)} would change the recipe "
                             "(a preset resumes by itself); drop them, or train on dumps with --data/--out")
        res = run_preset(args.preset, args.workdir, steps=args.steps, export=not args.no_export, runtime=runtime)
        print(json.dumps({k: v for k, v in res.items() if k != "log"}, default=str))
        return 0
    if not args.data or not args.out:
        raise SystemExit("imp train-matcher: give --preset NAME, or --data DUMP [DUMP ...] and --out DIR")

    conf = load_yaml(args.conf) if args.conf else {}
    for key, val in (("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr),
                     ("n_keypoints", args.keypoints), ("pose_weight", args.pose_weight),
                     ("pose_warmup", args.pose_warmup), ("init_weights", args.init_weights)):
        if val is not None:
            conf[key] = val
    conf.update(runtime)
    conf["variant"] = args.variant
    if args.layers is not None:
        conf.setdefault("model", {})["n_layers"] = args.layers
    res = train(args.data, args.out, conf, resume=args.resume)
    vals = [r for r in res["log"] if "precision" in r]
    print(json.dumps({"out": res["out"], "step": res["step"], "best_val_loss": res["best_val_loss"],
                      "last_eval": vals[-1] if vals else None}))
    return 0
