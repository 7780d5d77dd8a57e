"""Multi-camera bags (e.g. from ``imp bag make`` on RobotCar Seasons): every image topic is played on its own
topic, each image with the CameraInfo of its own camera at its stamp, its ground truth when the bag has it, and the
bag's ``/tf_static`` (camera extrinsics) republished once.

Cameras follow the image_transport convention: ``<ns>/image_raw`` (or ``<ns>/image_raw/compressed``) goes with
``<ns>/camera_info`` and, when present, ``<ns>/ground_truth`` (PoseStamped of the camera in ``map``). Several
cameras may share one timestamp (RobotCar's three cameras do): CameraInfo is paired per camera, never by stamp
alone.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple

from imp_ros import bags
from imp_ros import conversions as cv
from imp_ros.frame import Frame

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


def camera_namespace(image_topic: str) -> str:
    t = image_topic[: -len("/compressed")] if image_topic.endswith("/compressed") else image_topic
    return t.rsplit("/", 1)[0] if "/" in t.strip("/") else ""


def image_topics(path, topics: Optional[Dict[str, str]] = None) -> List[str]:
    """Image topics of a bag (``topics``: its {topic: msgtype} when already read)."""
    return sorted(t for t, m in (topics or bags.bag_topics(path)).items() if m in IMAGE_TYPES)


def is_multi_camera(path) -> bool:
    return len(image_topics(path)) > 1


def bag_frames(path, remap: Optional[Dict[str, str]] = None, warn=None) -> Iterator:
    """Frames (``imp_ros.frame.Frame``) of every camera in bag order; ``image_topic``/``info_topic`` say where
    each is played (after ``remap``); the first frame carries the bag's static transforms."""
    remap = dict(remap or {})
    topics = bags.bag_topics(path)
    images = image_topics(path, topics)
    cams: Dict[str, Tuple[str, str]] = {}  # image topic -> (info topic, gt topic)
    for t in images:
        ns = camera_namespace(t)
        info, gt = f"{ns}/camera_info", f"{ns}/ground_truth"
        if topics.get(info) != "sensor_msgs/msg/CameraInfo":
            raise bags.BagError(f"bag {path}: image topic {t} has no CameraInfo on {info} (topics: {sorted(topics)})")
        cams[t] = (info, gt if topics.get(gt) == "geometry_msgs/msg/PoseStamped" else "")
    infos: Dict[Tuple[str, int], object] = {}
    latest: Dict[str, object] = {}
    gts: Dict[Tuple[str, int], object] = {}
    static: Dict[str, object] = {}  # the bag's /tf_static: the last TransformStamped per child frame
    side = sorted({i for i, _ in cams.values()} | {g for _, g in cams.values() if g})
    for topic, stamp, m in bags.read_bag(path, side + (["/tf_static"] if "/tf_static" in topics else []), warn=warn):
        if topic == "/tf_static":
            static.update((t.child_frame_id, t) for t in m.transforms)
        elif topic.endswith("/camera_info"):
            infos[(topic, stamp)] = m
            latest.setdefault(topic, m)
        else:
            gts[(topic, stamp)] = cv.msg_to_pose(m.pose)
    i = 0
    for topic, stamp, m in bags.read_bag(path, images, warn=warn):
        info_t, gt_t = cams[topic]
        info = infos.get((info_t, stamp)) or latest.get(info_t)
        yield Frame(i, stamp, msg=m, info=info, map_from_cam=gts.get((gt_t, stamp)) if gt_t else None,
                    image_topic=remap.get(topic, topic), info_topic=remap.get(info_t, info_t),
                    static_tf=list(static.values()) if i == 0 else None)
        i += 1
