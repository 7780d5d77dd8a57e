"""The versioned on-disk map format and its loader.

A map directory holds::

    map.json          {"format": "imp-map", "version": 1, "map_id", "features": conf, "global": conf, ...}
    reconstruction/   COLMAP binary model of the database (cameras, images, points3D, rigs, frames)
    features.h5       per database image: keypoints, descriptors (fp16), scores, point3D_ids (int32, -1 = none)
    global.npz        names, descriptors (one global descriptor per image, rows in `names` order) + model arrays
    index.h5          what a loaded map keeps in memory, in arrays: image names, poses, cameras, the 3D points and
                      their tracks (point -> images); written by `imp map build` / `imp map upgrade`
    labels.h5         optional (recognition): per image keypoint instance labels, written by `imp instances`

Loading keeps memory independent of the number of keypoints in the map: only the index (poses, cameras, 3D points,
tracks) and the global descriptors are read eagerly. Keypoints and descriptors stay in features.h5 (kept open) and
are read when a frame needs an image, into an LRU cache bounded in MB (``cache_mb``). A map without index.h5 (built
before it existed) still loads: the index is derived from the COLMAP model and features.h5 at start-up (slower; the
log says to run `imp map upgrade`, which writes it).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
from numpy.typing import ArrayLike

from ..errors import ImpError
from ..types import Camera, Features, Pose
from .features_io import FeatureStore, h5_key

logger = logging.getLogger(__name__)

MAP_FORMAT = "imp-map"
MAP_VERSION = 1
INDEX_FILE = "index.h5"
INDEX_VERSION = 1
DEFAULT_CACHE_MB = 256.0  # per-image features kept in memory (~0.6 MB per image at 2048 x 64-d)
_INDEX_ARRAYS = ("image_ids", "R", "t", "camera_size", "camera_params", "camera_num_params", "image_size",
                 "num_keypoints", "point_ids", "point_xyz", "track_ptr", "track_images")


class MapError(ImpError, RuntimeError):
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


# ---------------------------------------------------------------------------------------------------- index
def _compact_ids(ids: np.ndarray) -> np.ndarray:
    """3D point ids per keypoint as int32 (COLMAP ids are small); int64 only where an id does not fit."""
    ids = np.asarray(ids)
    if ids.dtype == np.int32:
        return ids
    if len(ids) == 0 or (ids.max() <= np.iinfo(np.int32).max and ids.min() >= -1):
        return ids.astype(np.int32)
    return ids.astype(np.int64)


def index_from_reconstruction(rec, store: FeatureStore, names: Sequence[str], kind: str,
                              progress: bool = False) -> Dict[str, Any]:
    """The map index (see the module docstring) of a COLMAP model and its features file.

    Reads each image's point3D_ids and attributes (never its descriptors). Raises ``MapError`` naming the file
    for a missing/corrupt image group or an image with other features than ``kind``."""
    n = len(names)
    by_name = {img.name: img for img in rec.images.values()}
    image_ids = np.zeros(n, np.int64)
    R = np.zeros((n, 3, 3))
    t = np.zeros((n, 3))
    models: List[str] = []
    cam_size = np.zeros((n, 2), np.int64)
    cam_params: List[np.ndarray] = []
    image_size = np.zeros((n, 2), np.int64)
    num_kp = np.zeros(n, np.int64)
    obs_ids, obs_img = [], []
    f = store.open()
    it = range(n)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="indexing map", unit="img")
    for i in it:
        name = names[i]
        img = by_name[name]
        image_ids[i] = img.image_id
        pose = img.cam_from_world()
        R[i] = np.asarray(pose.rotation.matrix())
        t[i] = np.asarray(pose.translation)
        cam = rec.cameras[img.camera_id]
        models.append(cam.model.name)
        cam_size[i] = (cam.width, cam.height)
        cam_params.append(np.asarray(cam.params, np.float64))
        try:
            g = f[h5_key(name)]
            image_size[i] = tuple(g.attrs["image_size"])
            k = str(g.attrs.get("kind", ""))
            num_kp[i] = g["keypoints"].shape[0]
            ids = g["point3D_ids"][()] if "point3D_ids" in g else np.full(num_kp[i], -1, np.int64)
        except (OSError, RuntimeError, KeyError, ValueError) as e:
            raise MapError(f"corrupt features file {store.path} (image {name!r}): {e}; rebuild the map with "
                           "`imp map build`") from e
        if k and k != kind:
            raise MapError(f"map {store.path.parent}: image {name} has {k!r} features, map says {kind!r}")
        ok = ids >= 0
        obs_ids.append(ids[ok].astype(np.int64))
        obs_img.append(np.full(int(ok.sum()), i, np.int32))
    pids = np.fromiter(rec.points3D.keys(), np.int64, count=rec.num_points3D())
    xyz = np.array([p.xyz for p in rec.points3D.values()], np.float64).reshape(-1, 3)
    order = np.argsort(pids, kind="stable")
    pids, xyz = pids[order], xyz[order]
    obs_ids_a = np.concatenate(obs_ids) if obs_ids else np.zeros(0, np.int64)
    obs_img_a = np.concatenate(obs_img) if obs_img else np.zeros(0, np.int32)
    ptr, track_images = _tracks(pids, obs_ids_a, obs_img_a)
    width = max((len(p) for p in cam_params), default=0)
    params = np.zeros((n, width))
    for i, p in enumerate(cam_params):
        params[i, :len(p)] = p
    return {"names": list(names), "kind": kind, "image_ids": image_ids, "R": R, "t": t, "camera_model": models,
            "camera_size": cam_size, "camera_params": params,
            "camera_num_params": np.array([len(p) for p in cam_params], np.int64), "image_size": image_size,
            "num_keypoints": num_kp, "point_ids": pids, "point_xyz": xyz, "track_ptr": ptr,
            "track_images": track_images}


def _tracks(point_ids: np.ndarray, obs_ids: np.ndarray, obs_img: np.ndarray):
    """CSR point -> observing images (``track_images[ptr[p]:ptr[p+1]]``) from per-observation (point id, image)."""
    pos = np.searchsorted(point_ids, obs_ids)
    pos_c = np.minimum(pos, max(len(point_ids) - 1, 0))
    ok = (pos < len(point_ids)) & (point_ids[pos_c] == obs_ids) if len(point_ids) else np.zeros(len(obs_ids), bool)
    rows, imgs = pos[ok], obs_img[ok]
    order = np.argsort(rows, kind="stable")
    ptr = np.zeros(len(point_ids) + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=len(point_ids)), out=ptr[1:])
    return ptr, imgs[order].astype(np.int32)


def write_index(path: Union[str, Path], index: Dict[str, Any], meta: Dict[str, Any]) -> None:
    """Write the index atomically (a temporary file renamed into place), tagged with the map's id and date."""
    import h5py

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    str_t = h5py.string_dtype("utf-8")
    with h5py.File(str(tmp), "w") as f:
        f.attrs["index_version"] = INDEX_VERSION
        f.attrs["map_id"] = str(meta.get("map_id", ""))
        f.attrs["created"] = str(meta.get("created", ""))
        f.attrs["model_sizes"] = _model_sizes(path.parent)
        f.attrs["kind"] = str(index["kind"])
        f.create_dataset("names", data=np.array(index["names"], dtype=object), dtype=str_t)
        f.create_dataset("camera_model", data=np.array(index["camera_model"], dtype=object), dtype=str_t)
        for k in _INDEX_ARRAYS:
            f.create_dataset(k, data=np.asarray(index[k]))
    os.replace(tmp, path)


def _model_sizes(map_dir: Path) -> str:
    """Sizes of the COLMAP model files: an index written for another model (edited, rebuilt) is not used."""
    rec = map_dir / "reconstruction"
    return json.dumps({p.name: p.stat().st_size for p in sorted(rec.glob("*")) if p.is_file()}, sort_keys=True)


def read_index(path: Path, meta: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The index in ``path``, or None when it belongs to another build of the map (stale: ignored, re-derived)."""
    import h5py

    try:
        with h5py.File(str(path), "r") as f:
            if (int(f.attrs.get("index_version", -1)) != INDEX_VERSION
                    or str(f.attrs.get("map_id", "")) != str(meta.get("map_id", ""))
                    or str(f.attrs.get("created", "")) != str(meta.get("created", ""))
                    or str(f.attrs.get("model_sizes", "")) != _model_sizes(path.parent)):
                logger.warning("map index %s belongs to another build of the map (or another imp): ignored; run "
                               "`imp map upgrade %s` to rewrite it", path, path.parent)
                return None
            out: Dict[str, Any] = {"kind": str(f.attrs["kind"])}
            out["names"] = [s.decode() if isinstance(s, bytes) else str(s) for s in f["names"][()]]
            out["camera_model"] = [s.decode() if isinstance(s, bytes) else str(s) for s in f["camera_model"][()]]
            for k in _INDEX_ARRAYS:
                out[k] = f[k][()]
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise MapError(f"corrupt map index {path}: {e}; delete it and run `imp map upgrade {path.parent}` to "
                       "rewrite it") from e
    n = len(out["names"])
    if any(len(out[k]) != n for k in ("image_ids", "R", "t", "camera_size", "image_size", "num_keypoints")) or \
            len(out["track_ptr"]) != len(out["point_ids"]) + 1 or \
            (len(out["track_ptr"]) and out["track_ptr"][-1] != len(out["track_images"])):
        raise MapError(f"corrupt map index {path}: inconsistent array lengths; delete it and run "
                       f"`imp map upgrade {path.parent}` to rewrite it")
    return out


# ---------------------------------------------------------------------------------------------------- the map
class _Entry:
    """One database image in the cache: its features, 3D point ids and (lazily) keypoint world coordinates."""

    __slots__ = ("feats", "p3d", "xyz", "nbytes")

    def __init__(self, feats: Features, p3d: np.ndarray):
        self.feats = feats
        self.p3d = p3d
        self.xyz: Optional[np.ndarray] = None
        self.nbytes = (feats.keypoints.nbytes + feats.descriptors.nbytes + feats.scores.nbytes + p3d.nbytes
                       + (feats.labels.nbytes if feats.labels is not None else 0))


class LocalizationMap:
    """A loaded map: database poses, cameras, 3D points and global descriptors in memory; per-image features
    read from disk on demand through an LRU cache of ``cache_mb`` MB."""

    def __init__(self, map_dir: Path, meta: dict, index: Dict[str, Any], store: FeatureStore,
                 global_names: List[str], global_desc: np.ndarray, global_arrays: Dict[str, np.ndarray],
                 labels_path: Optional[Path] = None, cache_mb: Optional[float] = None):
        self.dir = Path(map_dir)
        self.meta = meta
        self.names: List[str] = list(index["names"])
        self._index = {n: i for i, n in enumerate(self.names)}
        self._kind = str(index["kind"])
        self._image_ids = np.asarray(index["image_ids"], np.int64)
        self._R = np.asarray(index["R"], np.float64)
        self._t = np.asarray(index["t"], np.float64)
        self._cam_model = list(index["camera_model"])
        self._cam_size = np.asarray(index["camera_size"], np.int64)
        self._cam_params = np.asarray(index["camera_params"], np.float64)
        self._cam_np = np.asarray(index["camera_num_params"], np.int64)
        self._image_size = np.asarray(index["image_size"], np.int64)
        self._pt_ids = np.asarray(index["point_ids"], np.int64)
        self._pt_xyz = np.asarray(index["point_xyz"], np.float64).reshape(-1, 3)
        self._track_ptr = np.asarray(index["track_ptr"], np.int64)
        self._track_images = np.asarray(index["track_images"], np.int32)
        for a in (self._pt_ids, self._pt_xyz):
            a.setflags(write=False)
        self._store = store
        self._labels_path = labels_path
        self._global_arrays = global_arrays
        order = {n: i for i, n in enumerate(global_names)}
        missing = [n for n in self.names if n not in order]
        if missing and len(global_desc):
            raise MapError(f"{self.dir / 'global.npz'} lacks descriptors for {missing[:3]}...")
        if not len(global_desc):
            self.global_descriptors = np.zeros((len(self.names), 0), np.float32)
        elif list(global_names) == self.names:
            self.global_descriptors = global_desc
        else:
            self.global_descriptors = global_desc[[order[n] for n in self.names]]
        self.cache_bytes = int(max(float(DEFAULT_CACHE_MB if cache_mb is None else cache_mb), 0.0) * 2**20)
        self._cache: "OrderedDict[str, _Entry]" = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.RLock()
        self._stats = {"hits": 0, "misses": 0, "evictions": 0, "read_ms": 0.0}
        self._covis: Dict[int, np.ndarray] = {}
        self._rec = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, map_dir: Union[str, Path], expected_features: Optional[str] = None,
             progress: bool = False, cache_mb: Optional[float] = None) -> "LocalizationMap":
        """Open a map. ``cache_mb``: memory for per-image features read on demand (default ``DEFAULT_CACHE_MB``;
        0 keeps only the image read last)."""
        map_dir = Path(map_dir)
        meta = read_map_meta(map_dir)
        kind = meta["features"].get("name")
        if expected_features is not None and kind != expected_features:
            raise MapError(
                f"map {map_dir} was built with {kind!r} features but the localizer is configured for "
                f"{expected_features!r}; rebuild the map or change the features config"
            )
        feat_path = map_dir / "features.h5"
        if not feat_path.is_file():
            raise MapError(f"map {map_dir}: {feat_path.name} is missing")
        try:
            store = FeatureStore(feat_path)
            stored = set(store.keys())
        except Exception as e:  # h5py raises OSError (bad signature, truncated file) or others on random bytes
            raise MapError(f"map {map_dir}: corrupt or truncated features file {feat_path}: {e}; rebuild the map "
                           "with `imp map build` (or restore the file)") from e
        index = None
        index_path = map_dir / INDEX_FILE
        if index_path.is_file():
            index = read_index(index_path, meta)
            if index is not None and index["kind"] != kind:
                raise MapError(f"map {map_dir}: {index_path} indexes {index['kind']!r} features, map.json says "
                               f"{kind!r}; run `imp map upgrade {map_dir}`")
            if index is not None and any(h5_key(n) not in stored for n in index["names"]):
                logger.warning("map index %s names images that %s lacks: ignored; run `imp map upgrade %s`",
                               index_path, feat_path.name, map_dir)
                index = None
        if index is None:
            t0 = time.perf_counter()
            rec = _read_reconstruction(map_dir)
            names = sorted(img.name for img in rec.images.values() if img.has_pose)
            _check_stored(map_dir, feat_path, names, stored)
            index = index_from_reconstruction(rec, store, names, kind, progress)
            del rec
            _trim_heap()
            logger.info("map %s has no %s: derived its index in %.1f s; run `imp map upgrade %s` to write it and "
                        "start faster", map_dir, INDEX_FILE, time.perf_counter() - t0, map_dir)
        labels_path: Optional[Path] = map_dir / "labels.h5"
        if labels_path is not None and labels_path.is_file():
            _check_labels(labels_path)
        else:
            labels_path = None
        gnames, gdesc, garrays = _read_global(map_dir)
        return cls(map_dir, meta, index, store, gnames, gdesc, garrays, labels_path, cache_mb)

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

    @property
    def reconstruction(self):
        """The COLMAP model (pycolmap), read on first use: localization itself never needs it."""
        if self._rec is None:
            self._rec = _read_reconstruction(self.dir)
        return self._rec

    def global_arrays(self) -> Dict[str, np.ndarray]:
        return self._global_arrays

    def has(self, name: str) -> bool:
        return name in self._index

    def _idx(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"image {name!r} is not in map {self.dir}") from None

    def _entry(self, name: str) -> _Entry:
        with self._lock:
            e = self._cache.get(name)
            if e is not None:
                self._cache.move_to_end(name)
                self._stats["hits"] += 1
                return e
            i = self._idx(name)
            t0 = time.perf_counter()
            size = (int(self._image_size[i, 0]), int(self._image_size[i, 1]))
            try:
                feats, extra = self._store.read(name, ("point3D_ids",), image_size=size, kind=self._kind)
            except (KeyError, ValueError, OSError) as ex:
                msg = str(ex).strip("'\"")
                if str(self._store.path) not in msg:
                    msg = f"corrupt features file {self._store.path}: {msg}"
                raise MapError(f"map {self.dir}: {msg}; rebuild the map with `imp map build`") from ex
            p3d = _compact_ids(extra.get("point3D_ids", np.full(len(feats), -1, np.int32)))
            if len(p3d) != len(feats):
                raise MapError(f"map {self.dir}: corrupt features file {self._store.path}: image {name!r} has "
                               f"{len(feats)} keypoints but {len(p3d)} point3D_ids")
            if self._labels_path is not None:
                lab = _read_label(self._labels_path, name)
                if lab is not None and len(lab) == len(feats):
                    feats.labels = lab
            e = _Entry(feats, p3d)
            self._stats["misses"] += 1
            self._stats["read_ms"] += 1000 * (time.perf_counter() - t0)
            self._cache[name] = e
            self._cached_bytes += e.nbytes
            self._evict()
            return e

    def _evict(self) -> None:
        while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= old.nbytes
            self._stats["evictions"] += 1

    def features(self, name: str) -> Features:
        return self._entry(name).feats

    def point3D_ids(self, name: str) -> np.ndarray:
        """3D point id of each keypoint of a database image (-1 = none); int32 (int64 only for huge ids)."""
        return self._entry(name).p3d

    def cache_info(self) -> Dict[str, Any]:
        """Per-image feature cache: entries, bytes held, the bound, hits, misses, evictions, ms spent reading."""
        with self._lock:
            return {"entries": len(self._cache), "bytes": self._cached_bytes, "limit_bytes": self.cache_bytes,
                    **self._stats}

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()
            self._cached_bytes = 0

    def camera(self, name: str) -> Camera:
        i = self._idx(name)
        return Camera(self._cam_model[i], int(self._cam_size[i, 0]), int(self._cam_size[i, 1]),
                      self._cam_params[i, :self._cam_np[i]].copy())

    def pose(self, name: str) -> Pose:
        i = self._idx(name)
        return Pose(self._R[i], self._t[i])

    def all_points3D(self):
        return self._pt_ids, self._pt_xyz

    def points3D_xyz(self, point_ids: ArrayLike) -> np.ndarray:
        """xyz of 3D point ids; NaN rows for ids that are -1 or unknown."""
        ids = np.asarray(point_ids, dtype=np.int64)
        out = np.full((len(ids), 3), np.nan)
        if len(self._pt_ids) == 0:
            return out
        pos = np.clip(np.searchsorted(self._pt_ids, ids), 0, len(self._pt_ids) - 1)
        ok = (ids >= 0) & (self._pt_ids[pos] == ids)
        out[ok] = self._pt_xyz[pos[ok]]
        return out

    def keypoint_xyz(self, name: str) -> np.ndarray:
        """(N, 3) world point of each keypoint of a database image, NaN where it has none (read-only; held in the
        image's cache entry, so it is freed with it)."""
        with self._lock:
            e = self._entry(name)
            if e.xyz is None:
                xyz = self.points3D_xyz(e.p3d)
                xyz.setflags(write=False)
                e.xyz = xyz
                if self._cache.get(name) is e:
                    e.nbytes += xyz.nbytes
                    self._cached_bytes += xyz.nbytes
                    self._evict()
            return e.xyz

    def covisible(self, name: str, k: int = 10) -> List[str]:
        """Database images sharing the most 3D points with ``name`` (best first, excluding itself)."""
        i = self._idx(name)
        ranked = self._covis.get(i)
        if ranked is None:
            ids = self.point3D_ids(name)
            ids = ids[ids >= 0].astype(np.int64)
            pos = np.searchsorted(self._pt_ids, ids)
            if len(self._pt_ids):
                pos_c = np.minimum(pos, len(self._pt_ids) - 1)
                rows = pos_c[self._pt_ids[pos_c] == ids]
            else:
                rows = np.zeros(0, np.int64)
            start, stop = self._track_ptr[rows], self._track_ptr[rows + 1]
            lens = stop - start
            flat = np.repeat(start - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(lens.sum())
            counts = np.bincount(self._track_images[flat], minlength=len(self.names))
            counts[i] = 0
            cand = np.nonzero(counts)[0]
            # most shared points first; ties: the larger COLMAP image id first (as sorting (count, id) descending)
            ranked = cand[np.lexsort((-self._image_ids[cand], -counts[cand]))].astype(np.int32)
            self._covis[i] = ranked
        return [self.names[j] for j in ranked[:k]]

    def centers(self) -> np.ndarray:
        """(N, 3) camera centres of ``names`` in world coordinates."""
        return -np.einsum("nji,nj->ni", self._R, self._t) if self.names else np.zeros((0, 3))

    def close(self) -> None:
        """Close the features file and drop the cache (the map cannot be used afterwards)."""
        self.clear_cache()
        self._store.close()

    def __repr__(self) -> str:
        return (f"LocalizationMap({self.dir}, id={self.map_id}, {len(self.names)} images, "
                f"{len(self._pt_ids)} points, features={self.meta['features'].get('name')})")


# ---------------------------------------------------------------------------------------------------- helpers
def _read_reconstruction(map_dir: Path):
    import pycolmap

    rec_dir = map_dir / "reconstruction"
    if not (rec_dir / "images.bin").is_file() and not (rec_dir / "images.txt").is_file():
        raise MapError(f"map {map_dir}: COLMAP model missing in {rec_dir}")
    try:
        return pycolmap.Reconstruction(str(rec_dir))
    except Exception as e:  # pycolmap raises plain RuntimeError/ValueError on corrupt files
        raise MapError(f"map {map_dir}: cannot read COLMAP model {rec_dir}: {e}") from e


def _trim_heap() -> None:
    """Hand the memory the COLMAP model freed back to the OS (glibc keeps freed small blocks in its heap: without
    this a 10k-image map read without index.h5 held 2.4 GB after start-up)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _check_stored(map_dir: Path, feat_path: Path, names: Sequence[str], stored: set) -> None:
    lacking = [n for n in names if h5_key(n) not in stored]
    if lacking:
        raise MapError(f"map {map_dir}: {feat_path} has no features for {len(lacking)} images, "
                       f"e.g. {lacking[0]}")


def _read_global(map_dir: Path):
    gpath = map_dir / "global.npz"
    gnames: List[str] = []
    gdesc = np.zeros((0, 0), np.float32)
    garrays: Dict[str, np.ndarray] = {}
    if gpath.is_file():
        try:
            with np.load(gpath, allow_pickle=False) as z:
                gnames = [str(s) for s in z["names"]]
                gdesc = z["descriptors"].astype(np.float32, copy=False)
                garrays = {k: z[k] for k in z.files if k not in ("names", "descriptors")}
        except Exception as e:  # zipfile.BadZipFile, EOFError, ValueError (pickled arrays), KeyError, OSError
            raise MapError(f"map {map_dir}: corrupt global descriptors {gpath}: "
                           f"{type(e).__name__}: {e}") from e
        if gdesc.ndim != 2 or len(gdesc) != len(gnames):
            raise MapError(f"map {map_dir}: corrupt global descriptors {gpath}: {len(gnames)} names but "
                           f"descriptors of shape {gdesc.shape}")
    return gnames, gdesc, garrays


def _check_labels(path: Path) -> None:
    """labels.h5 is read per image on demand (opened each time: `imp instances` may rewrite it meanwhile)."""
    import h5py

    try:
        with h5py.File(str(path), "r") as f:
            list(f.keys())
    except Exception as e:
        raise MapError(f"corrupt keypoint labels {path}: {e}") from e


def _read_label(path: Path, name: str) -> Optional[np.ndarray]:
    import h5py

    try:
        with h5py.File(str(path), "r") as f:
            k = h5_key(name)
            return f[k][()].astype(np.int32) if k in f else None
    except Exception as e:
        raise MapError(f"corrupt keypoint labels {path} (image {name!r}): {e}") from e


# ---------------------------------------------------------------------------------------------------- upgrade
def upgrade_map(map_dir: Union[str, Path], progress: bool = True) -> Dict[str, Any]:
    """Bring a map written by an earlier imp to the current layout, in place and restartably: write index.h5
    (fast start-up) and, where descriptors are stored as float32, rewrite features.h5 with float16 descriptors
    and int32 point ids. Returns what was done."""
    map_dir = Path(map_dir)
    meta = read_map_meta(map_dir)
    kind = meta["features"].get("name")
    feat_path = map_dir / "features.h5"
    if not feat_path.is_file():
        raise MapError(f"map {map_dir}: {feat_path.name} is missing")
    done: Dict[str, Any] = {"map": str(map_dir), "features_rewritten": False}
    try:
        rewrite = _needs_compaction(feat_path)
    except Exception as e:
        raise MapError(f"map {map_dir}: corrupt or truncated features file {feat_path}: {e}; rebuild the map with "
                       "`imp map build`") from e
    if rewrite:
        _compact_features(feat_path, progress)
        done["features_rewritten"] = True
    store = FeatureStore(feat_path)
    try:
        rec = _read_reconstruction(map_dir)
        names = sorted(img.name for img in rec.images.values() if img.has_pose)
        _check_stored(map_dir, feat_path, names, set(store.keys()))
        t0 = time.perf_counter()
        index = index_from_reconstruction(rec, store, names, kind, progress)
    finally:
        store.close()
    write_index(map_dir / INDEX_FILE, index, meta)
    done.update({"index": str(map_dir / INDEX_FILE), "index_s": round(time.perf_counter() - t0, 2),
                 "images": len(names), "points3D": int(len(index["point_ids"]))})
    return done


def _needs_compaction(path: Path) -> bool:
    import h5py

    with h5py.File(str(path), "r") as f:
        for k in f.keys():
            return f[k]["descriptors"].dtype != np.float16
    return False


def _compact_features(path: Path, progress: bool) -> None:
    """Rewrite a features file with float16 descriptors and int32 point ids (atomic rename at the end)."""
    import h5py
    from tqdm import tqdm

    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(str(path), "r") as src, h5py.File(str(tmp), "w") as dst:
        for k in tqdm(list(src.keys()), desc="rewriting features", unit="img", disable=not progress):
            g, o = src[k], dst.create_group(k)
            for a, v in g.attrs.items():
                o.attrs[a] = v
            for d in g.keys():
                v = g[d][()]
                if d == "descriptors":
                    v = v.astype(np.float16)
                elif d == "point3D_ids":
                    v = _compact_ids(v)
                o.create_dataset(d, data=v)
    os.replace(tmp, path)
