"""``imp bag make``: a dataset folder -> a ROS 2 bag (mcap) and a ROS 1 ``.bag``, written as it is read.

Per camera: ``sensor_msgs/Image`` (or ``CompressedImage`` on ``<topic>/compressed``) and ``CameraInfo`` stamped
with the image time, in the camera's own optical frame; the camera extrinsics on ``/tf_static`` (base -> camera,
one latched ``tf2_msgs/TFMessage`` at the start); the ground-truth camera pose in ``map`` (``PoseStamped``) when
the dataset knows it. RobotCar Seasons: cameras ``left``, ``rear``, ``right`` on ``/<cam>/image_raw``,
``/<cam>/camera_info``, frames ``<cam>_optical``, extrinsics from ``extrinsics/<cam>_extrinsics.txt``, stamps
from the file names (one timestamp for the three images of a frame, as recorded). Single-camera layouts
(synthetic world, Aachen): ``/camera/image_raw``, ``/camera/camera_info``, frame ``camera_optical``,
``/ground_truth/camera_pose``, and the replay node's default extrinsics.

The parent frame of the extrinsics (``--base-frame``, default ``base_link``) is the dataset's own car frame, with
its axes as the dataset defines them; poses of the base in ``map`` are consistent with it.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence

# The handlers import what they run: `imp --help` imports every command module (imp_core/cli.py) and should not
# pay for torch, Ray or the pipeline behind each command.

FORMATS = ("mcap", "ros1")


@dataclass
class CameraStream:
    name: str
    frame_id: str
    image_topic: str
    info_topic: str
    gt_topic: str
    base_from_cam: object  # imp_core.types.Pose


def streams_and_frames(ds, condition: Optional[str] = None, split: Optional[str] = None,
                       cameras: Optional[Sequence[str]] = None):
    """({camera: CameraStream}, [(stamp_ns, camera, QueryItem)] in time order) for a dataset's queries."""
    from imp_core.datasets.base import DatasetError
    from imp_core.types import Pose, quat_xyzw_to_wxyz

    if ds.kind == "robotcar":
        items = ds.queries(condition, split=split or "all")
        ext = ds.extrinsics
        cams = sorted({q.path.parent.name for q in items})
        if cameras:
            cams = [c for c in cams if c in set(cameras)]
        missing = [c for c in cams if c not in ext]
        if missing:
            from imp_core.datasets.robotcar import extrinsics_path

            raise DatasetError(f"no extrinsics for camera(s) {missing}: {extrinsics_path(ds.root, missing[0])} "
                               "does not exist")
        streams = {c: CameraStream(c, f"{c}_optical", f"/{c}/image_raw", f"/{c}/camera_info", f"/{c}/ground_truth",
                                   ext[c]) for c in cams}
        frames = [(q, q.path.parent.name) for q in items if q.path.parent.name in streams]
    else:
        if split:
            raise ValueError(f"--split applies to RobotCar only ({ds.kind} has one query set)")
        from imp_ros.replay_node import ReplayNode

        e = ReplayNode.PARAMS["camera_extrinsics"].default  # x y z qx qy qz qw: what the replay assumes
        streams = {"camera": CameraStream("camera", "camera_optical", "/camera/image_raw", "/camera/camera_info",
                                          "/ground_truth/camera_pose",
                                          Pose.from_qvec(quat_xyzw_to_wxyz(e[3:]), e[:3]))}
        frames = [(q, "camera") for q in ds.queries(condition)]
    if not frames:
        raise DatasetError(f"{ds.root}: no images to write (condition={condition!r}, cameras={cameras})")
    out = []
    for i, (q, cam) in enumerate(sorted(frames, key=lambda f: (f[0].stamp is None, f[0].stamp or 0.0, f[0].name))):
        stamp = q.stamp if q.stamp is not None else 1.0 + 0.1 * i
        out.append((int(round(stamp * 1e9)), cam, q))
    return streams, out


def make_bag(data, out, condition: Optional[str] = None, split: Optional[str] = None,
             formats: Sequence[str] = FORMATS, compressed: bool = False, encoding: str = "rgb8",
             cameras: Optional[Sequence[str]] = None, max_frames: int = 0, base_frame: str = "base_link",
             map_frame: str = "map", overwrite: bool = False, progress: bool = True) -> Dict[str, Path]:
    """Write the bags; returns {format: path} (mcap: the ROS 2 bag directory ``out``; ros1: ``out.bag``)."""
    import shutil

    from tqdm import tqdm

    from imp_core.datasets import open_dataset
    from imp_core.imageio import read_image
    from imp_ros import conversions as cv
    from imp_ros.bags import BagSink, query_messages

    ds = open_dataset(data)
    streams, frames = streams_and_frames(ds, condition, split, cameras)
    if max_frames:
        stamps = sorted({s for s, _, _ in frames})[:max_frames]
        frames = [f for f in frames if f[0] <= stamps[-1]]
    out = Path(out)
    targets = {}
    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f"unknown bag format {fmt!r}; choose from {FORMATS}")
        path = out if fmt == "mcap" else out.with_name(out.name + ".bag")
        if path.exists():
            if not overwrite:
                raise ValueError(f"{path} exists: remove it, choose another --out, or pass --overwrite")
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        targets[fmt] = path
    img_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    topics = {"/tf_static": "tf2_msgs/msg/TFMessage"}
    has_gt = {c for _, c, q in frames if q.gt_pose is not None}
    for c, s in streams.items():
        topics[s.image_topic + ("/compressed" if compressed else "")] = img_type
        topics[s.info_topic] = "sensor_msgs/msg/CameraInfo"
        if c in has_gt:
            topics[s.gt_topic] = "geometry_msgs/msg/PoseStamped"
    from tf2_msgs.msg import TFMessage

    sink = BagSink(targets, topics, latched=["/tf_static"])
    try:
        t0 = frames[0][0]
        sink.write("/tf_static", t0, TFMessage(transforms=[
            cv.pose_to_transform(s.base_from_cam, base_frame, s.frame_id, t0) for s in streams.values()]))
        for stamp, cam, q in tqdm(frames, desc=f"bag {out.name}", unit="img", disable=not progress):
            s = streams[cam]
            for msg in query_messages(q, read_image(q.path), stamp, s.frame_id, s.image_topic, s.info_topic,
                                      s.gt_topic, encoding, compressed, map_frame):
                sink.write(*msg)
    except BaseException:
        sink.close()
        for p in targets.values():  # no half-written bag that looks complete
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        raise
    sink.close()
    return targets


# ------------------------------------------------------------------------------------------------ CLI
HELP = """Turn a dataset folder into bags: a RobotCar Seasons condition (left/rear/right cameras with their own
intrinsics, optical frames and extrinsics on /tf_static) or the queries of any other supported layout. Writes a
ROS 2 bag (mcap) and a ROS 1 bag; the replay node plays either."""

EPILOG = """examples:
  imp bag make --data datasets/robotcar --condition night --out bags/robotcar_night --compressed
  imp bag make --data data/world --condition day --out bags/synthetic_day --format mcap
  replay --ros-args -p source:=bags/robotcar_night -p lockstep:=true"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bag", help="make ROS bags from datasets")
    bsub = p.add_subparsers(dest="bag_cmd", required=True)
    m = bsub.add_parser("make", help="dataset folder -> ROS 2 mcap + ROS 1 bag", description=HELP, epilog=EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("--data", type=Path, required=True, help="dataset root (RobotCar Seasons, synthetic, Aachen)")
    m.add_argument("--out", type=Path, required=True, help="bag path: OUT/ (ROS 2 mcap) and OUT.bag (ROS 1)")
    m.add_argument("--condition", help="only this condition (RobotCar: night, dawn, ...; synthetic: day, night)")
    m.add_argument("--split", choices=["all", "test", "train"],
                   help="RobotCar images: all of the condition (default), or those of the v2 test/train list")
    m.add_argument("--cameras", nargs="+", help="RobotCar cameras to include (default left rear right)")
    m.add_argument("--format", nargs="+", choices=FORMATS, default=list(FORMATS), help="bag formats to write")
    m.add_argument("--compressed", action="store_true", help="JPEG CompressedImage instead of raw Image")
    m.add_argument("--encoding", default="rgb8", help="raw Image encoding (rgb8, bgr8, mono8, ...)")
    m.add_argument("--max-frames", type=int, default=0, help="only the first N timestamps")
    m.add_argument("--base-frame", default="base_link", help="parent frame of the camera extrinsics")
    m.add_argument("--overwrite", action="store_true", help="replace existing bags")
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.set_defaults(func=_make)


def _make(args) -> int:
    try:
        import rclpy  # noqa: F401
    except ImportError:
        raise SystemExit("imp bag make needs the ROS 2 Python packages (rclpy, sensor_msgs): see the README setup")
    paths = make_bag(args.data, args.out, args.condition, args.split, args.format, args.compressed, args.encoding,
                     args.cameras, args.max_frames, args.base_frame, overwrite=args.overwrite,
                     progress=not args.quiet)
    from imp_ros.bags import bag_topics

    for fmt, path in paths.items():
        topics = bag_topics(path)
        print(f"{fmt}: {path}  topics: " + ", ".join(f"{t} ({m.split('/')[-1]})" for t, m in sorted(topics.items())))
    return 0
