"""CLI subcommands for recognition (``register(subparsers)`` is called by ``imp_core.cli``):

    imp instances MAP [--num-instances N] [--mode xyz] [--model CKPT] [--image-dir DIR]
    imp train-recognition MAP OUT [--steps N] [--batch-size B] [--size W H] [--no-resume]
    imp eval-recognition DATASET MAP --model CKPT [--conditions day night] [--json OUT]
    imp recognition train --map DIR [--budget-min M] [--num-instances N] [--mode xyz] [--image-dir DIR] [--resume]
    imp recognition info --map DIR
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

# The handlers import what they run: `imp --help` imports every command module (imp_core/cli.py) and should not
# pay for torch, Ray or the pipeline behind each command.


def register(subparsers) -> None:
    p = subparsers.add_parser("instances", help="derive global instances of a map (masks, index, keypoint labels)")
    p.add_argument("map", type=Path, help="map directory (from `imp map build`)")
    p.add_argument("--num-instances", type=int, default=None, help="number of 3D point clusters")
    p.add_argument("--mode", default=None, help="clustered axes: xyz (default), or two of them (e.g. xz)")
    p.add_argument("--fill-radius", type=float, default=None, help="mask fill radius, fraction of the diagonal")
    p.add_argument("--centroids-from", type=Path, default=None,
                   help="annotated map, or a model trained on one, whose instances to reuse (same place, other map)")
    p.add_argument("--model", type=Path, default=None,
                   help="recognition checkpoint: also store its global descriptors of the database images")
    p.add_argument("--image-dir", type=Path, default=None,
                   help="database images (default: the dataset the map was built from)")
    p.set_defaults(func=cmd_instances)

    p = subparsers.add_parser("train-recognition", help="train the instance recognition network on a map")
    p.add_argument("map", type=Path, help="annotated map directory (run `imp instances` first)")
    p.add_argument("out", type=Path, help="output directory (model.pt, log, checkpoint; resumed if present)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), default=None, help="training image size")
    p.add_argument("--encoder", default=None, help="encoder name (small, resnext101_32x4d)")
    p.add_argument("--image-dir", type=Path, default=None)
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if a checkpoint exists")
    p.add_argument("--annotate", action="store_true",
                   help="afterwards store the trained model's db descriptors in the map (as `imp instances --model`)")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("eval-recognition", help="recognition mIoU / top-1 on dataset queries (depth GT)")
    p.add_argument("dataset", type=Path, help="dataset with query depth (synthetic world)")
    p.add_argument("map", type=Path, help="annotated map directory")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--conditions", nargs="+", default=["day", "night"])
    p.add_argument("--limit", type=int, default=None, help="queries per condition")
    p.add_argument("--json", type=Path, default=None, help="write the scores here")
    p.set_defaults(func=cmd_eval)

    _register_recognition(subparsers)


def _register_recognition(subparsers) -> None:
    p = subparsers.add_parser(
        "recognition", help="a map's own instance recognizer (train, install, info); the localizer uses it when "
                            "present",
        description="Train the instance recognition network on a map's own images: instances are clusters of the "
                    "map's 3D points, training uses day-to-night augmentation for a wall-clock budget, and the "
                    "model + a model card go into MAP/recognition/. The localizer and the ROS node then run "
                    "instance-guided search (label-aware matching, retrieval fallback) on that map by default.")
    rs = p.add_subparsers(dest="recognition_cmd", required=True)
    t = rs.add_parser("train", help="train (or retrain) the recognizer of a map")
    t.add_argument("--map", type=Path, required=True, help="map directory (from `imp map build`)")
    t.add_argument("--budget-min", type=float, default=None,
                   help="training time in minutes (default 15; more gives better recognition)")
    t.add_argument("--num-instances", type=int, default=None,
                   help="3D point clusters (default: about one per 4 database images, 4..512)")
    t.add_argument("--mode", default=None, help="clustered axes: xyz, or two of them (default: xy for z-up "
                                                "synthetic worlds, xyz otherwise)")
    t.add_argument("--image-dir", type=Path, default=None,
                   help="database images (default: the dataset or image folder the map was built from)")
    t.add_argument("--resume", action="store_true", help="continue an interrupted training of this map")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.set_defaults(func=cmd_recognition_train)
    n = rs.add_parser("install", help="make a trained recognizer (one that carries its instances) the recognizer "
                                      "of another map of the same place, without training")
    n.add_argument("--map", type=Path, required=True, help="map directory (from `imp map build`)")
    n.add_argument("--model", type=Path, required=True,
                   help="recognition model trained on a map of this place (e.g. OTHER_MAP/recognition/model.pt, or "
                        "models/recognition_synthetic.pt for the default synthetic world)")
    n.add_argument("--image-dir", type=Path, default=None,
                   help="database images (default: the dataset or image folder the map was built from)")
    n.set_defaults(func=cmd_recognition_install)
    i = rs.add_parser("info", help="print a map's recognition model card")
    i.add_argument("--map", type=Path, required=True)
    i.set_defaults(func=cmd_recognition_info)


def cmd_recognition_train(args: argparse.Namespace) -> int:
    from ..training.recognition.pipeline import build_recognizer
    from .map_recognizer import DEFAULT_BUDGET_MIN, card_markdown

    card = build_recognizer(args.map, DEFAULT_BUDGET_MIN if args.budget_min is None else args.budget_min,
                            num_instances=args.num_instances, mode=args.mode, image_dir=args.image_dir,
                            resume=args.resume, threads=args.threads)
    print(card_markdown(card))
    return 0


def cmd_recognition_install(args: argparse.Namespace) -> int:
    from .map_recognizer import card_markdown, install_recognizer

    card = install_recognizer(args.map, args.model, image_dir=args.image_dir)
    print(card_markdown(card))
    return 0 if card["used_by_localizer"] else 1


def cmd_recognition_info(args: argparse.Namespace) -> int:
    from .map_recognizer import card_markdown, map_recognizer_conf, read_model_card

    card = read_model_card(args.map)
    if card is None:
        print(f"map {args.map} has no recognizer (train one with `imp recognition train --map {args.map}`)")
        return 1
    print(card_markdown(card))
    print("used by the localizer: " + ("yes" if map_recognizer_conf(args.map) else "no (inconsistent, see warning)"))
    return 0


def cmd_instances(args: argparse.Namespace) -> int:
    from .database import map_image_loader
    from .instances import annotate_map

    conf = {k: v for k, v in {"num_instances": args.num_instances, "mode": args.mode,
                              "fill_radius": args.fill_radius,
                              "centroids_from": str(args.centroids_from) if args.centroids_from else None}.items()
            if v is not None}
    rec = loader = None
    if args.model is not None:
        from .recognizer import Recognizer

        rec = Recognizer({"model": str(args.model)})
        loader = map_image_loader(args.map, args.image_dir)
    index = annotate_map(args.map, conf, rec, loader)
    seen = index.instance_images
    print(f"{args.map}: {index.num_instances} instances, {len(seen)} visible in {len(index.image_instances)} images"
          + (f"; descriptors from {args.model}" if rec else ""))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ..training.recognition.pipeline import train_on_map

    conf = {k: v for k, v in {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr}.items()
            if v is not None}
    if args.size:
        conf["augment"] = {"size": list(args.size)}
    if args.encoder:
        conf["network"] = {"encoder": args.encoder}
    res = train_on_map(args.map, args.out, conf, image_dir=args.image_dir, resume=not args.no_resume,
                       annotate=args.annotate)
    last = res["log"][-1] if res["log"] else {}
    print(f"model: {res['model']} ({res['steps']} steps, {res['seconds']:.0f} s, "
          f"final loss {last.get('total', float('nan')):.3f})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ..datasets import open_dataset
    from ..eval.recognition.evaluate import evaluate_per_condition
    from .recognizer import Recognizer

    scores = evaluate_per_condition(Recognizer({"model": str(args.model)}), open_dataset(args.dataset), args.map,
                                    args.conditions, args.limit)
    for cond, s in scores.items():
        print(f"{cond:>6}: mIoU {100 * s['mIoU']:.1f}  top-1 {100 * s['top1']:.1f}  pixel acc "
              f"{100 * s['pixel_acc']:.1f}  ({s['images']} images)")
    if args.json:
        args.json.write_text(json.dumps(scores, indent=2))
    return 0
