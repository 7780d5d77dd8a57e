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

from ..types import Camera, Pose
from .base import DatasetError


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


def write_model(model_dir, entries: Iterable[Tuple[str, Camera, Pose]], share_cameras: bool = True) -> Path:
    """Write a COLMAP binary model with cameras and posed images (no 3D points)."""
    import pycolmap

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    rec = pycolmap.Reconstruction()
    cam_ids: Dict[tuple, int] = {}
    for image_id, (name, cam, pose) in enumerate(entries, 1):
        key = (cam.model, cam.width, cam.height, tuple(np.round(cam.params, 9))) if share_cameras else image_id
        if key not in cam_ids:
            pc = cam.to_pycolmap()
            pc.camera_id = len(cam_ids) + 1
            rec.add_camera_with_trivial_rig(pc)
            cam_ids[key] = pc.camera_id
        img = pycolmap.Image(name=name, camera_id=cam_ids[key], image_id=image_id)
        rec.add_image_with_trivial_frame(img, pose.to_pycolmap())
    rec.write_binary(str(model_dir))
    return model_dir
