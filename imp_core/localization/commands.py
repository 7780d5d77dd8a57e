"""`imp localize`: localize a dataset's queries (or one image) against a map."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

# The handlers import what they run: `imp --help` imports every command module (imp_core/cli.py) and should not
# pay for torch, Ray or the pipeline behind each command.


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "localize", help="localize query images against a map",
        description="Localize the queries of a dataset (synthetic world, Aachen v1.1, RobotCar Seasons), a folder of "
                    "images or single images against a map; models and map are loaded once. Writes results.txt in "
                    "the visuallocalization.net format (name qw qx qy qz tx ty tz, world-to-camera), log.jsonl with "
                    "one JSON object per image (status, reason when not localized, pose, covariance, camera used, "
                    "confidence, inliers, per-stage timings), match overlays for images, and the accuracy table "
                    "when ground truth is known. Unknown cameras are the default for images (--camera auto).")
    p.add_argument("--map", type=Path, required=True, help="map directory (from `imp map build`)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", type=Path, help="dataset root with query lists")
    src.add_argument("--image", type=Path, action="append",
                     help="an image to localize (repeatable); results as for --images")
    src.add_argument("--images", type=Path, help="a folder of images to localize (every .jpg/.png/... under it)")
    p.add_argument("--camera", default="auto",
                   help="intrinsics for --image/--images: 'auto' (default: EXIF focal length when the file has "
                        "one, else the focal length is estimated with the pose), 'estimate' (ignore EXIF, "
                        "always estimate) or a COLMAP camera 'MODEL W H p1 p2 ...' (e.g. 'PINHOLE 640 480 500 500 "
                        "320 240') used as given")
    p.add_argument("--max-image-pixels", type=int, default=None,
                   help="refuse images whose header announces more pixels (default 40e6 or $IMP_MAX_IMAGE_PIXELS)")
    p.add_argument("--downscale-large", action="store_true",
                   help="decode images above --max-image-pixels at 1/2, 1/4, ... size instead of refusing them")
    p.add_argument("--condition", action="append", help="only these query conditions (repeatable)")
    p.add_argument("--config", type=Path, help="YAML with a 'localizer' section (e.g. config/localizer_aachen.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a localizer conf key after --config and the options below, dotted, value as YAML "
                        "(repeatable): coarse.retrieval.top_k=10, coarse.1.min_inliers=40, matcher.name=lightglue, "
                        "acceptance={min_inliers: 30}")
    p.add_argument("--matcher", help="matcher name (default: the one the map was built with); same as "
                                     "--set matcher.name=NAME")
    p.add_argument("--top-k", type=int, help="references per query for global retrieval; same as "
                                             "--set coarse.retrieval.top_k=N")
    p.add_argument("--tracking", action="store_true", help="process sequences in time order with the tracking prior")
    p.add_argument("--device", help="auto, cpu or cuda")
    p.add_argument("--out", type=Path, default=Path("outputs/localize"), help="output directory")
    p.add_argument("--resume", action="store_true",
                   help="--dataset: continue an interrupted run in --out (same map and options): queries already in "
                        "its log.jsonl are kept, the others are localized")
    from .distributed import add_worker_args

    add_worker_args(p)
    p.set_defaults(func=_run)


def localizer_overrides_from_args(args) -> list:
    """The options as dotted overrides of the --config file, in the order they apply (--set last)."""
    over = [("map", str(args.map))]
    if args.matcher:
        over.append(("matcher.name", args.matcher))
    if args.device:
        over.append(("device", args.device))
    if args.top_k:
        over.append(("coarse.retrieval.top_k", args.top_k))
    return over + list(args.set or [])


def localizer_conf_from_args(args) -> dict:
    from .localizer import localizer_conf

    return localizer_conf(args.config, localizer_overrides_from_args(args))


def _run(args) -> int:
    from .batch import check_run_file, localize_queries, order_for_tracking
    from .distributed import open_localizer
    from .localizer import Localizer

    camera = _parse_camera(args.camera) if (args.image or args.images) else None
    if (args.image or args.images) and (args.workers != 1 or args.ray_address or args.resume):
        raise ValueError("--workers, --ray-address and --resume apply to --dataset (images are localized here)")
    conf = localizer_conf_from_args(args)
    if args.image or args.images:
        items = _image_list(args)
        if len(items) == 1:  # the warm-up would run the one image's steps twice (once on noise)
            conf["warmup"] = False
        loc = Localizer(conf, progress=True)
        print(f"matcher: {loc.describe_matcher()}")
        args.out.mkdir(parents=True, exist_ok=True)
        return _run_images(args, loc, camera, items)
    from ..datasets import open_dataset

    ds = open_dataset(args.dataset)
    queries = []
    for cond in (args.condition or [None]):
        queries += ds.queries(cond)
    if args.tracking:
        queries = order_for_tracking(queries)
    from ..mapping.format import read_map_meta

    check_run_file(args.out / "run.json", {"map_id": read_map_meta(args.map).get("map_id"), "tracking": args.tracking,
                                           "localizer": {k: v for k, v in conf.items() if k not in ("map", "device")}},
                   args.resume)
    loc = open_localizer(conf, args.workers, args.ray_address, args.worker_threads, progress=True)
    try:
        results = localize_queries(loc, queries, tracking=args.tracking, log_path=args.out / "log.jsonl",
                                   resume=args.resume)
    finally:
        loc.close()
    from ..eval.formats import write_results
    from ..eval.report import dumps_strict, summarize_run

    write_results(args.out / "results.txt", {n: r.pose for n, r in results.items() if r.pose is not None})
    summary = summarize_run(results, queries, args.out)
    print(summary["table"])
    (args.out / "summary.json").write_text(dumps_strict({k: v for k, v in summary.items() if k != "table"},
                                                        indent=2, default=float))
    print(f"results: {args.out / 'results.txt'}  log: {args.out / 'log.jsonl'}")
    return 0


IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _parse_camera(text: str):
    """'auto', 'estimate' or a COLMAP camera string -> 'auto' | 'estimate' | Camera (CameraError names the bad
    parameter)."""
    from ..types import Camera

    if text in ("auto", "estimate"):
        return text
    return Camera.from_tokens(text.split())


def _image_list(args) -> list:
    if args.images is not None:
        if not args.images.is_dir():
            raise FileNotFoundError(f"--images: folder not found: {args.images}")
        paths = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        if not paths:
            raise ValueError(f"--images: no images ({', '.join(IMAGE_EXTS)}) under {args.images}")
        return [(str(p.relative_to(args.images)), p) for p in paths]
    return [(p.name, p) for p in args.image]


def _run_images(args, loc, camera, items: list) -> int:
    """Localize images one by one with the loaded models and map; write results.txt (visuallocalization.net:
    ``name qw qx qy qz tx ty tz``), log.jsonl (one JSON object per image) and a match overlay per image.
    An image that cannot be read is recorded with its reason and the run goes on."""
    import sys

    import cv2
    from tqdm import tqdm

    from ..eval.formats import write_results
    from ..imageio import read_image_scaled
    from ..types import LocalizationResult
    from .batch import result_record
    from .cameras import camera_for_image
    from .visualize import draw_localization

    poses, errors, lost = {}, [], 0
    overlays = args.out / "overlays"
    overlays.mkdir(exist_ok=True)
    with open(args.out / "log.jsonl", "w") as log:
        for name, path in tqdm(items, desc="localize", unit="img", disable=len(items) < 2):
            source = "given"
            try:
                image, scale = read_image_scaled(path, max_pixels=args.max_image_pixels,
                                                 downscale=args.downscale_large)
                h, w = image.shape[:2]
                if camera in ("auto", "estimate"):
                    cam, source = camera_for_image(path, w, h, use_exif=camera == "auto")
                else:
                    cam = camera.scaled(w / camera.width * 1.0, h / camera.height * 1.0) if scale != 1.0 else camera
                loc.reset()
                res = loc.localize(image, cam, name=name)
            except (OSError, ValueError) as e:  # unreadable, too large, camera/image mismatch: next image
                errors.append(f"{name}: {e}")
                res = LocalizationResult(message=f"input error: {e}")
                image = None
            rec = result_record(name, res)
            rec["camera_source"] = source if image is not None else None
            log.write(json.dumps(rec) + "\n")
            log.flush()
            if res.pose is not None:
                poses[name] = res.pose
            else:
                lost += 1
            if image is not None:
                overlay = overlays / (Path(name).with_suffix("").as_posix().replace("/", "__") + "_matches.png")
                cv2.imwrite(str(overlay), draw_localization(image, res.camera or cam, res)[:, :, ::-1])
            tqdm.write(_summary_line(name, res, source if image is not None else ""))
    write_results(args.out / "results.txt", poses)
    print(f"{len(poses)}/{len(items)} localized; results: {args.out / 'results.txt'} (name qw qx qy qz tx ty tz, "
          f"cam_from_world)  log: {args.out / 'log.jsonl'}  overlays: {overlays}")
    for err in errors:
        print(f"imp localize: error: {err}", file=sys.stderr)
    return 2 if errors else (1 if lost else 0)


def _summary_line(name: str, res, camera_source: str) -> str:
    line = f"{name}: {res.status}"
    if res.pose is not None:
        q, c = res.pose.qvec, res.pose.center
        line += (f" confidence {res.confidence:.2f} inliers {res.num_inliers}/{res.num_matches} qvec(wxyz) "
                 + " ".join(f"{v:.6f}" for v in q) + " t " + " ".join(f"{v:.4f}" for v in res.pose.t)
                 + " centre " + " ".join(f"{v:.3f}" for v in c))
    else:
        line += f" ({res.message}) inliers {res.num_inliers}/{res.num_matches}"
    if res.camera is not None:
        f = res.camera.focal[0]
        line += f" | camera {res.camera.model} f {f:.1f} px " + (
            "(estimated)" if res.focal_estimated else f"({camera_source or 'given'})")
    line += f" | {res.timings.get('total', 0):.0f} ms"
    return line
