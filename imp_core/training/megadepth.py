"""MegaDepth layout (``Undistorted_SfM`` + D2-Net ``scene_info/*.npz``) -> training dump.

``scene_info/<scene>.npz`` holds ``image_paths``, ``depth_paths`` (relative to the MegaDepth root; empty or None
for images without depth), ``intrinsics`` (3x3 each), ``poses`` (4x4 cam_from_world) and ``overlap_matrix``.
Depth maps are HDF5 files with a ``depth`` dataset. Pairs with ``min_overlap <= overlap <= max_overlap`` (0.1-0.8,
as released) are dumped. The original D2-Net files store object arrays; they are decoded by a restricted
unpickler that only builds plain data and numpy arrays (``safe_npz``), so no code in a user's file ever runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import h5py
import numpy as np

from ..imageio import read_image
from ..types import Pose
from .dump import ImageSource, write_dump
from .safe_npz import load_npz


def read_scene_info(path: Path) -> Dict[str, Any]:
    info = load_npz(path)
    for k in ("image_paths", "depth_paths", "intrinsics", "poses", "overlap_matrix"):
        if k not in info:
            raise KeyError(f"{path}: missing array {k!r} (have {sorted(info)})")
    return info


def _path(p: Any) -> Optional[str]:
    if p is None:
        return None
    s = str(p)
    return None if s in ("", "None") else s


def _valid_path(p: Any) -> str:
    """``_path`` of an entry that ``scene_pairs`` let through (image and depth paths set)."""
    s = _path(p)
    if s is None:
        raise ValueError(f"scene info entry without a path: {p!r}")
    return s


def read_depth(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"MegaDepth depth map not found: {path}")
    with h5py.File(path, "r") as h5:
        if "depth" not in h5:
            raise KeyError(f"{path}: no 'depth' dataset")
        return np.asarray(h5["depth"], np.float32)


def scene_pairs(info: Mapping[str, Any], min_overlap: float, max_overlap: float,
                max_pairs: Optional[int], seed: int) -> List[Tuple[int, int]]:
    ov = np.asarray(info["overlap_matrix"], np.float64)
    valid = np.array([_path(p) is not None and _path(d) is not None
                      for p, d in zip(info["image_paths"], info["depth_paths"])])
    ii, jj = np.nonzero(np.triu((ov >= min_overlap) & (ov <= max_overlap), 1))
    pairs = [(int(i), int(j)) for i, j in zip(ii, jj) if valid[i] and valid[j]]
    if max_pairs and len(pairs) > max_pairs:
        rng = np.random.default_rng(seed)
        pairs = [pairs[k] for k in sorted(rng.choice(len(pairs), max_pairs, replace=False))]
    return pairs


def dump_megadepth(root, out, scenes: Optional[Sequence[str]] = None, conf: Optional[Mapping[str, Any]] = None,
                   scene_info_dir=None, min_overlap: float = 0.1, max_overlap: float = 0.8,
                   pairs_per_scene: Optional[int] = 200, seed: int = 0) -> Dict[str, int]:
    """Dump MegaDepth scenes (default: every ``scene_info/*.npz``) into one training file."""
    root = Path(root)
    sdir = Path(scene_info_dir) if scene_info_dir else root / "scene_info"
    if not sdir.is_dir():
        raise FileNotFoundError(f"scene_info directory not found: {sdir}")
    files = sorted(sdir.glob("*.npz")) if not scenes else [sdir / f"{s}.npz" for s in scenes]
    images: Dict[str, Tuple[Path, Path, np.ndarray, Pose]] = {}
    pairs: List[Tuple[str, str]] = []
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"scene info not found: {f}")
        info = read_scene_info(f)
        for i, j in scene_pairs(info, min_overlap, max_overlap, pairs_per_scene, seed):
            for k in (i, j):
                name = _valid_path(info["image_paths"][k])
                if name not in images:
                    T = np.asarray(info["poses"][k], np.float64)
                    images[name] = (root / name, root / _valid_path(info["depth_paths"][k]),
                                    np.asarray(info["intrinsics"][k], np.float64).reshape(3, 3), Pose.from_matrix(T))
            pairs.append((_valid_path(info["image_paths"][i]), _valid_path(info["image_paths"][j])))

    source = ImageSource(lambda n: read_image(images[n][0]), lambda n: read_depth(images[n][1]),
                         lambda n: images[n][2], lambda n: images[n][3])
    return write_dump(Path(out), sorted(images), pairs, source, conf or {}, f"megadepth:{root.resolve()}")
