"""Benchmark text files and COLMAP models: query lists with intrinsics, pose files, reference models.

- query list: ``name MODEL width height p1 p2 ...`` per line (COLMAP camera conventions);
- pose file: ``name qw qx qy qz tx ty tz`` per line (cam_from_world, as in visuallocalization.net results);
- model: a COLMAP reconstruction (binary or text) read and written with pycolmap.
Lines starting with ``#`` and blank lines are skipped. Bad lines raise ``DatasetError`` naming ``file:line``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Tuple

import numpy as np

from ..errors import DatasetError
from ..types import Camera, Pose


def _lines(path: Path) -> Iterator[Tuple[int, List[str]]]:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"file {path} does not exist")
    with open(path, "r", encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if line and not line.startswith("#"):
                yield i, line.split()


def read_query_list(path) -> Dict[str, Camera]:
    """``name MODEL w h params`` lines -> {name: Camera} (file order kept)."""
    out: Dict[str, Camera] = {}
    for i, tok in _lines(path):
        if len(tok) < 5:
            raise DatasetError(f"{path}:{i}: expected 'name MODEL width height params...', got {' '.join(tok)!r}")
        try:
            cam = Camera.from_tokens(tok[1:])
        except (ValueError, IndexError) as e:
            raise DatasetError(f"{path}:{i}: bad camera for {tok[0]!r}: {e}") from None
        if tok[0] in out:
            raise DatasetError(f"{path}:{i}: query {tok[0]!r} listed twice")
        out[tok[0]] = cam
    return out


def write_query_list(path, cameras: Mapping[str, Camera]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for name, cam in cameras.items():
            f.write(f"{name} {cam.to_line()}\n")
    return path


def read_poses(path) -> Dict[str, Pose]:
    """``name qw qx qy qz tx ty tz`` lines -> {name: cam_from_world Pose}."""
    out: Dict[str, Pose] = {}
    for i, tok in _lines(path):
        if len(tok) != 8:
            raise DatasetError(f"{path}:{i}: expected 'name qw qx qy qz tx ty tz' (8 fields), got {len(tok)}")
        try:
            vals = np.array([float(v) for v in tok[1:]])
        except ValueError:
            raise DatasetError(f"{path}:{i}: non-numeric pose for {tok[0]!r}") from None
        if not np.all(np.isfinite(vals)) or np.linalg.norm(vals[:4]) < 1e-8:
            raise DatasetError(f"{path}:{i}: invalid quaternion or translation for {tok[0]!r}")
        if tok[0] in out:
            raise DatasetError(f"{path}:{i}: {tok[0]!r} listed twice")
        out[tok[0]] = Pose.from_qvec(vals[:4], vals[4:])
    return out


def write_poses(path, poses: Mapping[str, Pose]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for name, pose in poses.items():
            q, t = pose.qvec, pose.t
            f.write(f"{name} " + " ".join(f"{v:.10f}" for v in (*q, *t)) + "\n")
    return path


def read_model_poses(model_dir) -> Dict[str, Tuple[Camera, Pose]]:
    """A COLMAP model (binary or text) -> {image name: (Camera, cam_from_world)} for images with a pose."""
    import pycolmap

    model_dir = Path(model_dir)
    found = [p for p in ("cameras.bin", "cameras.txt") if (model_dir / p).is_file()]
    if not found:
        raise DatasetError(f"no COLMAP model in {model_dir} (looked for cameras.bin / cameras.txt)")
    try:
        rec = pycolmap.Reconstruction(str(model_dir))
    except Exception as e:  # pycolmap raises plain RuntimeErrors/ValueErrors on corrupt files
        raise DatasetError(f"cannot read COLMAP model {model_dir}: {e}") from None
    cams = {cid: Camera.from_pycolmap(c) for cid, c in rec.cameras.items()}
    out = {}
    for img in rec.images.values():
        if img.has_pose:
            out[img.name] = (cams[img.camera_id], Pose.from_pycolmap(img.cam_from_world()))
    return out


def _camera_key(cam: Camera) -> tuple:
    """Cameras with equal keys are written as one COLMAP camera."""
    return (cam.model, cam.width, cam.height, tuple(np.round(cam.params, 9)))


def _reconstruction(entries: Iterable[Tuple[str, Camera, Pose]], share_cameras: bool = True):
    """A pycolmap Reconstruction with cameras and posed images (no 3D points)."""
    import pycolmap

    rec = pycolmap.Reconstruction()
    cam_ids: Dict[object, int] = {}  # camera key (shared cameras) or image id -> camera id
    for image_id, (name, cam, pose) in enumerate(entries, 1):
        key = _camera_key(cam) if share_cameras else image_id
        if key not in cam_ids:
            pc = cam.to_pycolmap()
            pc.camera_id = len(cam_ids) + 1
            rec.add_camera_with_trivial_rig(pc)
            cam_ids[key] = pc.camera_id
        img = pycolmap.Image(name=name, camera_id=cam_ids[key], image_id=image_id)
        rec.add_image_with_trivial_frame(img, pose.to_pycolmap())
    return rec


def write_model(model_dir, entries: Iterable[Tuple[str, Camera, Pose]], share_cameras: bool = True) -> Path:
    """Write a COLMAP binary model with cameras and posed images (no 3D points)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    _reconstruction(entries, share_cameras).write_binary(str(model_dir))
    return model_dir


# COLMAP's camera model ids (src/colmap/sensor/models.h) for the models imp handles.
COLMAP_MODEL_IDS = {0: "SIMPLE_PINHOLE", 1: "PINHOLE", 2: "SIMPLE_RADIAL", 3: "RADIAL", 4: "OPENCV"}


def read_database_cameras(db_path) -> Dict[str, Camera]:
    """{image name: Camera} from a COLMAP database (``cameras`` and ``images`` tables), opened read-only.

    Used for the intrinsics of models that carry none of their own (NVM), as hloc does for RobotCar."""
    import sqlite3

    db_path = Path(db_path)
    if not db_path.is_file():
        raise DatasetError(f"COLMAP database {db_path} does not exist")
    try:
        con = sqlite3.connect(f"file:{db_path.resolve()}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise DatasetError(f"cannot open COLMAP database {db_path}: {e}") from None
    try:
        cams: Dict[int, Camera] = {}
        for cid, model, w, h, blob in con.execute("SELECT camera_id, model, width, height, params FROM cameras"):
            if model not in COLMAP_MODEL_IDS:
                raise DatasetError(f"{db_path}: camera {cid} has COLMAP model id {model}; imp reads "
                                   + ", ".join(f"{k} ({v})" for k, v in COLMAP_MODEL_IDS.items()))
            try:
                cams[cid] = Camera(COLMAP_MODEL_IDS[model], int(w), int(h), np.frombuffer(blob, dtype=np.float64))
            except ValueError as e:
                raise DatasetError(f"{db_path}: camera {cid}: {e}") from None
        out: Dict[str, Camera] = {}
        for name, cid in con.execute("SELECT name, camera_id FROM images"):
            if cid not in cams:
                raise DatasetError(f"{db_path}: image {name!r} refers to camera {cid}, which is not in the database")
            out[name] = cams[cid]
    except sqlite3.DatabaseError as e:
        raise DatasetError(f"{db_path} is not a readable COLMAP database (tables cameras/images): {e}") from None
    finally:
        con.close()
    return out


def write_database(db_path, entries: Iterable[Tuple[str, Camera]]) -> Path:
    """A COLMAP database with the real tables (pycolmap): one camera per distinct intrinsics, one image per entry
    (no keypoints). For fixtures in dataset layouts that ship a database (RobotCar ``overcast-reference.db``)."""
    import pycolmap

    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    if db_path.exists():
        db_path.unlink()
    cam_ids: Dict[object, int] = {}  # camera key (shared cameras) or image id -> camera id
    with pycolmap.Database.open(str(db_path)) as db:
        for image_id, (name, cam) in enumerate(entries, 1):
            key = _camera_key(cam)
            if key not in cam_ids:
                pc = cam.to_pycolmap()
                pc.camera_id = len(cam_ids) + 1
                db.write_camera(pc, use_camera_id=True)
                cam_ids[key] = pc.camera_id
            db.write_image(pycolmap.Image(name=name, camera_id=cam_ids[key], image_id=image_id), use_image_id=True)
    del db
    import gc
    import sqlite3

    gc.collect()  # pycolmap closes its handle on collection; then fold the WAL back into the one file
    con = sqlite3.connect(str(db_path))
    con.execute("PRAGMA journal_mode=DELETE")
    con.close()
    return db_path


def write_text_model(model_dir, entries: Iterable[Tuple[str, Camera, Pose]]) -> Path:
    """A COLMAP text model in the legacy layout of published datasets (cameras.txt, images.txt, points3D.txt;
    no rigs/frames files) with posed images and no points."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    for f in ("cameras.bin", "images.bin", "points3D.bin", "rigs.bin", "frames.bin"):
        (model_dir / f).unlink(missing_ok=True)  # COLMAP would read a binary model there first
    _reconstruction(entries).write_text(str(model_dir))
    for f in ("rigs.txt", "frames.txt"):
        (model_dir / f).unlink(missing_ok=True)
    return model_dir
