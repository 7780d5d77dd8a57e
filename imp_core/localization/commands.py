"""`imp localize`: localize a dataset's queries (or one image) against a map."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "localize", help="localize query images against a map",
        description="Localize the queries of a dataset (synthetic world, Aachen v1.1, RobotCar Seasons) or a single "
                    "image against a map. Writes results in the visuallocalization.net format (name qw qx qy qz tx "
                    "ty tz, world-to-camera), a JSON-lines log with inliers and per-stage timings, and prints the "
                    "accuracy table when ground truth is known.")
    p.add_argument("--map", type=Path, required=True, help="map directory (from `imp map build`)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", type=Path, help="dataset root with query lists")
    src.add_argument("--image", type=Path, help="a single image (needs --camera)")
    p.add_argument("--camera", help="COLMAP camera for --image: 'MODEL W H p1 p2 ...'")
    p.add_argument("--condition", action="append", help="only these query conditions (repeatable)")
    p.add_argument("--config", type=Path, help="YAML with a 'localizer' section")
    p.add_argument("--matcher", help="matcher name (overrides the config)")
    p.add_argument("--top-k", type=int, help="references per query for global retrieval")
    p.add_argument("--tracking", action="store_true", help="process sequences in time order with the tracking prior")
    p.add_argument("--device", help="auto, cpu or cuda")
    p.add_argument("--out", type=Path, default=Path("outputs/localize"), help="output directory")
    p.set_defaults(func=_run)


def localizer_conf_from_args(args) -> dict:
    from .localizer import load_config

    conf = load_config(args.config) if args.config else {}
    conf["map"] = str(args.map)
    if args.matcher:
        conf["matcher"] = {"name": args.matcher}
    if args.device:
        conf["device"] = args.device
    if args.top_k:
        stages = conf.get("coarse") or [{"name": "tracking"}, {"name": "retrieval"}]
        for s in stages:
            if s.get("name") == "retrieval":
                s["top_k"] = args.top_k
        conf["coarse"] = stages
    return conf


def _run(args) -> int:

    from ..types import Camera
    from .batch import localize_queries, order_for_tracking
    from .localizer import Localizer

    loc = Localizer(localizer_conf_from_args(args), progress=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.image:
        if not args.camera:
            raise SystemExit("--image needs --camera 'MODEL W H params...'")
        from ..imageio import read_image

        camera = Camera.from_tokens(args.camera.split())
        image = read_image(args.image)
        res = loc.localize(image, camera, name=args.image.name)
        import cv2

        from .visualize import draw_localization

        overlay = args.out / f"{args.image.stem}_matches.png"
        cv2.imwrite(str(overlay), draw_localization(image, camera, res)[:, :, ::-1])
        print(f"match overlay: {overlay}")
        print(f"{args.image.name}: {res.status} inliers {res.num_inliers}/{res.num_matches} "
              f"total {res.timings.get('total', 0):.0f} ms")
        if res.pose is not None:
            q, t = res.pose.qvec, res.pose.t
            print("cam_from_world qvec(wxyz) " + " ".join(f"{v:.6f}" for v in q) + " t " +
                  " ".join(f"{v:.4f}" for v in t) + "  centre " + " ".join(f"{v:.3f}" for v in res.pose.center))
        return 0 if res.success else 1
    from ..datasets import open_dataset

    ds = open_dataset(args.dataset)
    queries = []
    for cond in (args.condition or [None]):
        queries += ds.queries(cond)
    if args.tracking:
        queries = order_for_tracking(queries)
    results = localize_queries(loc, queries, tracking=args.tracking, log_path=args.out / "log.jsonl")
    from ..eval.formats import write_results
    from .report import summarize_run

    write_results(args.out / "results.txt", {n: r.pose for n, r in results.items() if r.pose is not None})
    summary = summarize_run(results, queries, args.out)
    print(summary["table"])
    (args.out / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "table"}, indent=2,
                                                      default=float))
    print(f"results: {args.out / 'results.txt'}  log: {args.out / 'log.jsonl'}")
    return 0
