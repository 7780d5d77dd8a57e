"""The versioned on-disk map format and its loader.

A map directory holds::

    map.json          {"format": "imp-map", "version": 1, "map_id", "features": conf, "global": conf, ...}
    reconstruction/   COLMAP binary model of the database (cameras, images, points3D, rigs, frames)
    features.h5       per database image: keypoints, descriptors (fp16), scores, point3D_ids (-1 = none)
    global.npz        names, descriptors (one global descriptor per image, rows in `names` order) + model arrays
    labels.h5         optional (recognition): per image keypoint instance labels, written by `imp instances`

Everything a frame needs is loaded once here (features, 3D points, descriptors), not per query.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from ..types import Camera, Features, Pose
from .features_io import list_features, name_from_key, read_features

MAP_FORMAT = "imp-map"
MAP_VERSION = 1


class MapError(RuntimeError):
    """A map directory is missing, corrupt, from another version or built with other features."""


def read_map_meta(map_dir: Union[str, Path]) -> dict:
    map_dir = Path(map_dir)
    meta_path = map_dir / "map.json"
    if not map_dir.is_dir():
        raise MapError(f"map directory not found: {map_dir}")
    if not meta_path.is_file():
        raise MapError(f"{map_dir} is not an imp map: {meta_path.name} is missing (build one with `imp map build`)")
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise MapError(f"corrupt map metadata {meta_path}: {e}") from e
    if meta.get("format") != MAP_FORMAT:
        raise MapError(f"{meta_path}: format is {meta.get('format')!r}, expected {MAP_FORMAT!r}")
    if meta.get("version") != MAP_VERSION:
        raise MapError(
            f"{meta_path}: map version {meta.get('version')} is not supported by this imp (expects {MAP_VERSION}); "
            "rebuild the map with `imp map build`"
        )
    for key in ("map_id", "features"):
        if key not in meta:
            raise MapError(f"{meta_path}: missing key {key!r}")
    return meta


class LocalizationMap:
    """A loaded map: database features with their 3D points, cameras, poses and global descriptors."""

    def __init__(self, map_dir: Path, meta: dict, reconstruction, names: List[str], feats: Dict[str, Features],
                 p3d_ids: Dict[str, np.ndarray], global_names: List[str], global_desc: np.ndarray,
                 global_arrays: Dict[str, np.ndarray]):
        self.dir = Path(map_dir)
        self.meta = meta
        self.reconstruction = reconstruction
        self.names = names
        self._feats = feats
        self._p3d_ids = p3d_ids
        self._global_arrays = global_arrays
        order = {n: i for i, n in enumerate(global_names)}
        missing = [n for n in names if n not in order]
        if missing and len(global_desc):
            raise MapError(f"{self.dir / 'global.npz'} lacks descriptors for {missing[:3]}...")
        self.global_descriptors = (global_desc[[order[n] for n in names]] if len(global_desc)
                                   else np.zeros((len(names), 0), np.float32))
        self._name_to_id = {img.name: iid for iid, img in reconstruction.images.items()}
        ids, xyz = [], []
        for pid, p in reconstruction.points3D.items():
            ids.append(pid)
            xyz.append(p.xyz)
        order_ids = np.argsort(np.asarray(ids, dtype=np.int64))
        self._pt_ids = np.asarray(ids, dtype=np.int64)[order_ids]
        self._pt_xyz = (np.asarray(xyz, dtype=np.float64).reshape(-1, 3))[order_ids]
        self._covis_cache: Dict[str, List[str]] = {}
        # per-frame lookups answered from memory: poses and keypoint 3D coordinates are computed once
        self._poses: Dict[str, Pose] = {}
        self._kp_xyz: Dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, map_dir: Union[str, Path], expected_features: Optional[str] = None,
             progress: bool = False) -> "LocalizationMap":
        import pycolmap

        map_dir = Path(map_dir)
        meta = read_map_meta(map_dir)
        kind = meta["features"].get("name")
        if expected_features is not None and kind != expected_features:
            raise MapError(
                f"map {map_dir} was built with {kind!r} features but the localizer is configured for "
                f"{expected_features!r}; rebuild the map or change the features config"
            )
        rec_dir = map_dir / "reconstruction"
        if not (rec_dir / "images.bin").is_file() and not (rec_dir / "images.txt").is_file():
            raise MapError(f"map {map_dir}: COLMAP model missing in {rec_dir}")
        try:
            rec = pycolmap.Reconstruction(str(rec_dir))
        except Exception as e:  # pycolmap raises plain RuntimeError/ValueError on corrupt files
            raise MapError(f"map {map_dir}: cannot read COLMAP model {rec_dir}: {e}") from e
        feat_path = map_dir / "features.h5"
        if not feat_path.is_file():
            raise MapError(f"map {map_dir}: {feat_path.name} is missing")
        try:
            stored = set(list_features(feat_path))
        except Exception as e:  # h5py raises OSError (bad signature) or others on random bytes
            raise MapError(f"map {map_dir}: corrupt features file {feat_path}: {e}") from e
        names = sorted(img.name for img in rec.images.values() if img.has_pose)
        lacking = [n for n in names if n not in stored]
        if lacking:
            raise MapError(f"map {map_dir}: {feat_path} has no features for {len(lacking)} images, "
                           f"e.g. {lacking[0]}")
        labels = _read_labels(map_dir / "labels.h5")
        feats, p3d = {}, {}
        it = names
        if progress:
            from tqdm import tqdm

            it = tqdm(names, desc="loading map", unit="img")
        for n in it:
            try:
                f, extra = read_features(feat_path, n, with_extra=("point3D_ids",))
            except Exception as e:  # read_features names the file; h5py's own errors may not
                msg = str(e) if str(feat_path) in str(e) else f"corrupt features file {feat_path}: {e}"
                raise MapError(f"map {map_dir}: {msg}") from e
            if f.kind and f.kind != kind:
                raise MapError(f"map {map_dir}: image {n} has {f.kind!r} features, map says {kind!r}")
            if n in labels and len(labels[n]) == len(f):
                f.labels = labels[n]
            feats[n] = f
            p3d[n] = extra.get("point3D_ids", np.full(len(f), -1, np.int64)).astype(np.int64)
        gpath = map_dir / "global.npz"
        gnames: List[str] = []
        gdesc = np.zeros((0, 0), np.float32)
        garrays: Dict[str, np.ndarray] = {}
        if gpath.is_file():
            try:
                with np.load(gpath, allow_pickle=False) as z:
                    gnames = [str(s) for s in z["names"]]
                    gdesc = z["descriptors"].astype(np.float32)
                    garrays = {k: z[k] for k in z.files if k not in ("names", "descriptors")}
            except Exception as e:  # zipfile.BadZipFile, EOFError, ValueError (pickled arrays), KeyError, OSError
                raise MapError(f"map {map_dir}: corrupt global descriptors {gpath}: "
                               f"{type(e).__name__}: {e}") from e
            if gdesc.ndim != 2 or len(gdesc) != len(gnames):
                raise MapError(f"map {map_dir}: corrupt global descriptors {gpath}: {len(gnames)} names but "
                               f"descriptors of shape {gdesc.shape}")
        return cls(map_dir, meta, rec, names, feats, p3d, gnames, gdesc, garrays)

    # ------------------------------------------------------------------ accessors
    @property
    def map_id(self) -> str:
        return str(self.meta["map_id"])

    @property
    def feature_conf(self) -> dict:
        return dict(self.meta["features"])

    @property
    def global_conf(self) -> dict:
        return dict(self.meta.get("global") or {})

    def global_arrays(self) -> Dict[str, np.ndarray]:
        return self._global_arrays

    def has(self, name: str) -> bool:
        return name in self._feats

    def features(self, name: str) -> Features:
        try:
            return self._feats[name]
        except KeyError:
            raise KeyError(f"image {name!r} is not in map {self.dir}") from None

    def point3D_ids(self, name: str) -> np.ndarray:
        return self._p3d_ids[name]

    def _image(self, name: str):
        if name not in self._name_to_id:
            raise KeyError(f"image {name!r} is not in map {self.dir}")
        return self.reconstruction.images[self._name_to_id[name]]

    def camera(self, name: str) -> Camera:
        img = self._image(name)
        return Camera.from_pycolmap(self.reconstruction.cameras[img.camera_id])

    def pose(self, name: str) -> Pose:
        if name not in self._poses:
            self._poses[name] = Pose.from_pycolmap(self._image(name).cam_from_world())
        return self._poses[name]

    def all_points3D(self):
        return self._pt_ids, self._pt_xyz

    def points3D_xyz(self, ids: Sequence[int]) -> np.ndarray:
        """xyz of 3D point ids; NaN rows for ids that are -1 or unknown."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.full((len(ids), 3), np.nan)
        if len(self._pt_ids) == 0:
            return out
        pos = np.clip(np.searchsorted(self._pt_ids, ids), 0, len(self._pt_ids) - 1)
        ok = (ids >= 0) & (self._pt_ids[pos] == ids)
        out[ok] = self._pt_xyz[pos[ok]]
        return out

    def keypoint_xyz(self, name: str) -> np.ndarray:
        """(N, 3) world point of each keypoint of a database image, NaN where it has none (cached; read-only)."""
        if name not in self._kp_xyz:
            xyz = self.points3D_xyz(self._p3d_ids[name])
            xyz.setflags(write=False)
            self._kp_xyz[name] = xyz
        return self._kp_xyz[name]

    def covisible(self, name: str, k: int = 10) -> List[str]:
        """Database images sharing the most 3D points with ``name`` (best first, excluding itself)."""
        if name not in self._covis_cache:
            ids = self._p3d_ids[name]
            counts: Dict[int, int] = {}
            for pid in ids[ids >= 0]:
                if not self.reconstruction.exists_point3D(int(pid)):
                    continue
                for el in self.reconstruction.point3D(int(pid)).track.elements:
                    counts[el.image_id] = counts.get(el.image_id, 0) + 1
            me = self._name_to_id[name]
            ranked = sorted(((c, i) for i, c in counts.items() if i != me), reverse=True)
            self._covis_cache[name] = [self.reconstruction.images[i].name for _, i in ranked]
        return self._covis_cache[name][:k]

    def centers(self) -> np.ndarray:
        return np.stack([self.pose(n).center for n in self.names]) if self.names else np.zeros((0, 3))

    def __repr__(self) -> str:
        return (f"LocalizationMap({self.dir}, id={self.map_id}, {len(self.names)} images, "
                f"{len(self._pt_ids)} points, features={self.meta['features'].get('name')})")


def _read_labels(path: Path) -> Dict[str, np.ndarray]:
    """Optional keypoint instance labels: one dataset per image (name with '/' replaced by '|')."""
    if not path.is_file():
        return {}
    import h5py

    out = {}
    try:
        with h5py.File(str(path), "r") as f:
            for k in f.keys():
                out[name_from_key(k)] = f[k][()].astype(np.int32)
    except Exception as e:
        raise MapError(f"corrupt keypoint labels {path}: {e}") from e
    return out
