"""Write a synthetic world in the Aachen Day-Night v1.1 or RobotCar Seasons layout (JPEG images, COLMAP model,
query lists, and ``gt/query_poses.txt`` with result-file names), so readers and replays run on real layouts."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict

import cv2
from tqdm import tqdm

from ..paths import safe_join
from ..types import Camera
from . import aachen, robotcar
from .colmap_io import write_model, write_poses, write_query_list
from .synthetic import SyntheticWorld

ROBOTCAR_CONDITION = {"day": "overcast-summer", "night": "night"}
ROBOTCAR_T0_US = 1417176400000000  # microsecond stamps like the real dataset's file names


def _copy_jpg(src: Path, dst: Path) -> None:
    img = cv2.imread(str(src), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"cannot read {src}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(dst), img, [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f"cannot write {dst}")


def export_aachen(world: SyntheticWorld, out, device: str = "nexus5x", progress: bool = False) -> Path:
    """``db/0003.png`` -> ``db/0003.jpg``; ``query/night/seq1_0002.png`` -> ``query/night/<device>/seq1_0002.jpg``."""
    out = Path(out)
    root = out / aachen.IMAGES
    db = []
    for name in tqdm(world.db_names, desc="export aachen db", disable=not progress):
        new = str(Path(name).with_suffix(".jpg"))
        _copy_jpg(world.image_path(name), safe_join(root, new, what="database image name"))
        db.append((new, world.camera(name), world.pose(name)))
    write_model(out / aachen.MODEL, db)
    gt = {}
    for cond in world.conditions:
        entries: Dict[str, Camera] = {}
        for q in world.queries(cond):
            new = f"query/{cond}/{device}/{Path(q.name).stem}.jpg"
            _copy_jpg(q.path, safe_join(root, new, what="query image name"))
            entries[new] = q.camera
            gt[aachen.result_name(new)] = q.gt_pose
        write_query_list(out / aachen.QUERY_LISTS[cond], entries)
    write_poses(out / aachen.GT, gt)
    return out


def export_robotcar(world: SyntheticWorld, out, camera: str = "rear", progress: bool = False) -> Path:
    """Database under ``overcast-reference/<camera>/``, day queries as overcast-summer, night as night."""
    out = Path(out)
    cams = {world.camera(n).to_line() for n in world.db_names + world.query_names()}
    if len(cams) != 1:
        raise ValueError("RobotCar export needs one camera for all images (one intrinsics file per camera)")
    cam = world.camera(world.db_names[0])
    (fx, fy), (cx, cy) = cam.focal, cam.principal_point
    if abs(fx - fy) > 1e-6 * fx:
        raise ValueError("RobotCar intrinsics need fx == fy")
    rc_cam = Camera("SIMPLE_RADIAL", cam.width, cam.height, [fx, cx, cy, 0.0])
    robotcar.write_intrinsics(out / "intrinsics" / f"{camera}_intrinsics.txt", rc_cam)

    def ts(name: str) -> int:
        return ROBOTCAR_T0_US + int(round(world.stamp(name) * 1e6))

    db = []
    for name in tqdm(world.db_names, desc="export robotcar db", disable=not progress):
        new = f"{robotcar.REFERENCE}/{camera}/{ts(name)}.jpg"
        _copy_jpg(world.image_path(name), safe_join(out / "images", new, what="database image name"))
        db.append((new, rc_cam, world.pose(name)))
    write_model(out / robotcar.MODEL, db)
    gt = {}
    for q in world.queries():
        new = f"{ROBOTCAR_CONDITION[q.condition]}/{camera}/{ts(q.name)}.jpg"
        _copy_jpg(q.path, safe_join(out / "images", new, what="query image name"))
        gt[robotcar.result_name(new)] = q.gt_pose
    write_poses(out / robotcar.GT, gt)
    return out


EXPORTERS: Dict[str, Callable[..., Path]] = {"aachen": export_aachen, "robotcar": export_robotcar}


def export(world: SyntheticWorld, kind: str, out, progress: bool = False) -> Path:
    if kind not in EXPORTERS:
        raise ValueError(f"unknown export layout {kind!r}; available: {', '.join(EXPORTERS)}")
    return EXPORTERS[kind](world, out, progress=progress)

