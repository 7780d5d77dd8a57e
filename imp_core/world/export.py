"""Write synthetic data in the exact layouts of the real downloads, so readers, benchmarks and bags run on them.

- ``export_aachen(world, out)``: Aachen Day-Night v1.1 (``images_upright/`` at the root or under ``images/``,
  COLMAP binary model with ``db/*.jpg`` and ``sequences/gopro3_undistorted/*.png`` names, query lists with
  intrinsics, plus ``gt/query_poses.txt`` with result names for scoring).
- ``export_robotcar(world, out)``: RobotCar Seasons from a synthetic world (one camera, ``rear``).
- ``make_robotcar_rig(out)``: RobotCar Seasons rendered with a left/rear/right camera rig on a car, with the
  extrinsics of the rig; every frame of a traversal has the three images at one timestamp, as in the real data.

RobotCar layouts get ``3D-models/all-merged/all.nvm`` and ``3D-models/overcast-reference.db`` (``.png`` names),
COLMAP text models per submap under ``3D-models/individual/colmap_reconstructions/``, ``intrinsics/``,
``extrinsics/``, and the v2 lists (rear images; train with poses, test without).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from ..datasets import aachen, robotcar
from ..datasets.colmap_io import write_database, write_model, write_poses, write_query_list, write_text_model
from ..datasets.nvm import write_nvm
from ..errors import DatasetError
from ..types import Camera, Pose
from .render import Renderer
from .scene import build_scene, rotation_world_from_cam
from .synthetic import SyntheticWorld, lighting, world_conf

ROBOTCAR_CONDITION = {"day": "overcast-summer", "night": "night"}
ROBOTCAR_T0_US = 1417176400000000  # microsecond stamps like the real dataset's file names
GOPRO = "sequences/gopro3_undistorted"


def _gt(q) -> Pose:
    """The exact pose every query of a synthetic world has."""
    if q.gt_pose is None:
        raise DatasetError(f"query {q.name} of the synthetic world has no ground-truth pose")
    return q.gt_pose


def _copy_image(src: Path, dst: Path) -> None:
    img = cv2.imread(str(src), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"cannot read {src}")
    _write_image(dst, img)


def _write_image(dst: Path, bgr: np.ndarray) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if dst.suffix.lower() == ".jpg" else []
    if not cv2.imwrite(str(dst), bgr, params):
        raise OSError(f"cannot write {dst}")


def export_aachen(world: SyntheticWorld, out, device: str = "nexus5x", images_at_root: bool = True,
                  gopro_every: int = 4, progress: bool = False) -> Path:
    """``db/0003.png`` -> ``db/0003.jpg`` (every ``gopro_every``-th database image instead becomes
    ``sequences/gopro3_undistorted/0003.png``); ``query/night/seq1_0002.png`` ->
    ``query/night/<device>/seq1_0002.jpg``. Images go to ``images_upright/`` (``images_at_root``) or
    ``images/images_upright/``."""
    out = Path(out)
    root = out / aachen.IMAGE_DIRS[0 if images_at_root else 1]
    db = []
    for i, name in enumerate(tqdm(world.db_names, desc="export aachen db", disable=not progress)):
        stem = Path(name).stem
        new = f"{GOPRO}/{stem}.png" if gopro_every and i % gopro_every == gopro_every - 1 else f"db/{stem}.jpg"
        _copy_image(world.image_path(name), root / new)
        db.append((new, world.camera(name), world.pose(name)))
    write_model(out / aachen.MODEL, db)
    gt: Dict[str, Pose] = {}
    for cond in world.conditions:
        entries: Dict[str, Camera] = {}
        for q in world.queries(cond):
            new = f"query/{cond}/{device}/{Path(q.name).stem}.jpg"
            _copy_image(q.path, root / new)
            entries[new] = q.camera
            gt[aachen.result_name(new)] = _gt(q)
        write_query_list(out / aachen.QUERY_LISTS[cond], entries)
    write_poses(out / aachen.GT, gt)
    return out


# ------------------------------------------------------------------------------------------------ RobotCar
def _png(name: str) -> str:
    return name[:-4] + ".png"


def write_robotcar_layout(out: Path, cameras: Dict[str, Camera], extrinsics: Dict[str, Pose],
                          reference: Sequence[Tuple[str, Pose]], train: Dict[str, Pose], test: Sequence[str],
                          submaps: int = 2) -> Path:
    """Everything but the images: ``reference`` = [(images/-relative .jpg name, cam_from_world)], ``train`` =
    {name: cam_from_world}, ``test`` = names. Model and database names end in ``.png`` (as in the real data)."""
    out = Path(out)
    for cam, c in cameras.items():
        robotcar.write_intrinsics(robotcar.intrinsics_path(out, cam), c)
    for cam, e in extrinsics.items():
        robotcar.write_extrinsics(robotcar.extrinsics_path(out, cam), e)

    def cam_of(name: str) -> Camera:
        return cameras[name.split("/")[1]]

    write_nvm(out / robotcar.NVM, [("./" + _png(n), cam_of(n).focal[0], p) for n, p in reference])  # as in all.nvm
    # the real database holds the reference images (and their keypoints); imp only reads the intrinsics
    write_database(out / robotcar.DATABASES[0], [(_png(n), cam_of(n)) for n, _ in reference])
    per = max(1, -(-len(reference) // max(1, submaps)))
    for k in range(0, len(reference), per):
        write_text_model(out / robotcar.INDIVIDUAL / f"{k // per + 1:03d}_aligned",
                         [(_png(n), cam_of(n), p) for n, p in reference[k:k + per]])
    robotcar.write_train_list(out / robotcar.TRAIN_LIST, {_png(n): p for n, p in train.items()})
    # names as in the submission (camera/timestamp, model suffix): readers find the condition from the images
    (out / robotcar.TEST_LIST).write_text("".join(f"{_png(n.split('/', 1)[1])}\n" for n in test))
    return out


def export_robotcar(world: SyntheticWorld, out, camera: str = "rear", progress: bool = False) -> Path:
    """A synthetic world as RobotCar Seasons with one camera: database under ``overcast-reference/<camera>/``,
    day queries as ``overcast-summer``, night as ``night``; even query frames go to the train list (with
    poses), odd ones to the test list."""
    out = Path(out)
    cams = {world.camera(n).to_line() for n in world.db_names + world.query_names()}
    if len(cams) != 1:
        raise ValueError("RobotCar export needs one camera for all images (one intrinsics file per camera)")
    cam = world.camera(world.db_names[0])
    (fx, fy), (cx, cy) = cam.focal, cam.principal_point
    rc_cam = robotcar.query_camera(fx, fy, cx, cy, cam.width, cam.height)

    def ts(name: str) -> int:
        return ROBOTCAR_T0_US + int(round(world.stamp(name) * 1e6))

    reference = []
    for name in tqdm(world.db_names, desc="export robotcar db", disable=not progress):
        new = f"{robotcar.REFERENCE}/{camera}/{ts(name)}.jpg"
        _copy_image(world.image_path(name), out / "images" / new)
        reference.append((new, world.pose(name)))
    train: Dict[str, Pose] = {}
    test: List[str] = []
    for i, q in enumerate(world.queries()):
        new = f"{ROBOTCAR_CONDITION[q.condition]}/{camera}/{ts(q.name)}.jpg"
        _copy_image(q.path, out / "images" / new)
        if i % 2 == 0:
            train[new] = _gt(q)
        else:
            test.append(new)
    optical_in_car = Pose.from_qvec([0.5, -0.5, 0.5, -0.5], [0.5, 0.0, 1.2])  # camera looking along car +x
    return write_robotcar_layout(out, {camera: rc_cam}, {camera: optical_in_car}, reference, train, test)


@dataclass
class RigFixture:
    """What ``make_robotcar_rig`` wrote, with the ground truth the real dataset keeps hidden."""

    root: Path
    cameras: Dict[str, Camera]
    extrinsics: Dict[str, Pose]  # car_from_camera
    query_poses: Dict[str, Pose] = field(default_factory=dict)  # images/-relative name -> cam_from_world
    base_poses: Dict[int, Pose] = field(default_factory=dict)  # timestamp (us) -> map_from_car
    train: List[str] = field(default_factory=list)
    test: List[str] = field(default_factory=list)


RIG_YAWS = {"left": 60.0, "rear": 180.0, "right": -60.0}  # viewing direction in the car frame (x forward, z up)
RIG_POSITIONS = {"left": (1.2, 0.4, 1.6), "rear": (-0.6, 0.0, 1.5), "right": (1.2, -0.4, 1.6)}


def rig_extrinsics(pitch_deg: float = 3.0) -> Dict[str, Pose]:
    return {c: Pose(rotation_world_from_cam(y, pitch_deg), np.array(RIG_POSITIONS[c])) for c, y in RIG_YAWS.items()}


def _car_pose(x: float, y: float, yaw_deg: float) -> Pose:
    a = np.radians(yaw_deg)
    return Pose(np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]]), np.array([x, y, 0.0]))


def make_robotcar_rig(out, conditions: Sequence[str] = ("overcast-summer", "sun"), size: Tuple[int, int] = (400, 300),
                      stations: int = 10, frames: int = 6, seed: int = 0, preset: str = "tiny",
                      progress: bool = False) -> RigFixture:
    """Render the synthetic street seen from a car with left/rear/right cameras in the RobotCar Seasons layout.

    The reference traversal drives the lane centre (``stations`` frames); each condition is one traversal of
    ``frames`` frames with lateral offsets and heading changes, under that condition's lighting ("night*"
    conditions get night lighting). Rear images of even frames form the train list (with poses), of odd frames
    the test list."""

    out = Path(out)
    conf = world_conf(preset)
    renderer = Renderer(build_scene(conf, seed))
    w, h = size
    # each camera its own lens (a localizer that mixes up the intrinsics gets the poses visibly wrong)
    cams = {"left": Camera("SIMPLE_RADIAL", w, h, np.array([0.55 * w, w / 2 - 3, h / 2 + 2, 0.0])),
            "rear": Camera("SIMPLE_RADIAL", w, h, np.array([0.65 * w, w / 2, h / 2 - 2, 0.0])),
            "right": Camera("SIMPLE_RADIAL", w, h, np.array([0.75 * w, w / 2 + 3, h / 2, 0.0]))}
    ext = rig_extrinsics()
    fx = RigFixture(out, cams, ext)
    L = float(conf["street_length"])
    jobs = []  # (name, cam_from_world, lighting)
    t_us = ROBOTCAR_T0_US
    reference = []
    db_light = lighting("db", np.random.default_rng([seed, 1]))
    for x in np.linspace(0.0, L, stations):
        car = _car_pose(float(x), 0.0, 0.0)
        for cam in cams:
            name = f"{robotcar.REFERENCE}/{cam}/{t_us}.jpg"
            pose = (car * ext[cam]).inverse()
            jobs.append((name, pose, db_light))
            reference.append((name, pose))
        t_us += 500_000
    train, test = {}, []
    for k, cond in enumerate(conditions):
        rng = np.random.default_rng([seed, 100 + k])
        light = lighting("night" if cond.startswith("night") else "day", rng)
        x0 = rng.uniform(1.0, 3.0)
        t_us += 10**9
        for j in range(frames):
            x = min(L - 1.0, x0 + j * (L - 4.0) / max(1, frames - 1))
            car = _car_pose(x, float(rng.uniform(-1.0, 1.0)), float(rng.uniform(-8.0, 8.0)))
            fx.base_poses[t_us] = car
            for cam in cams:
                name = f"{cond}/{cam}/{t_us}.jpg"
                pose = (car * ext[cam]).inverse()
                fx.query_poses[name] = pose
                jobs.append((name, pose, light))
            rear = f"{cond}/rear/{t_us}.jpg"
            if j % 2 == 0:
                train[rear] = fx.query_poses[rear]
            else:
                test.append(rear)
            t_us += 100_000
    for name, pose, light in tqdm(jobs, desc="rendering robotcar rig", disable=not progress):
        rig_cam = cams[name.split("/")[1]]
        rgb = renderer.render(rig_cam.K, w, h, pose, light, supersample=1)
        _write_image(out / "images" / name, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    write_robotcar_layout(out, cams, ext, reference, train, test)
    fx.train, fx.test = list(train), test
    return fx


EXPORTERS: Dict[str, Callable[..., Path]] = {"aachen": export_aachen, "robotcar": export_robotcar}


def export(world: SyntheticWorld, kind: str, out, progress: bool = False) -> Path:
    if kind not in EXPORTERS:
        raise ValueError(f"unknown export layout {kind!r}; available: {', '.join(EXPORTERS)}")
    return EXPORTERS[kind](world, out, progress=progress)
