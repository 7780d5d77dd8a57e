"""Build a localization map from database images.

Two modes, chosen by whether the source knows the database poses:
- **triangulation** (poses known, e.g. the synthetic world, Aachen/RobotCar reference models): extract features,
  match covisible pairs (neighbours by pose), keep matches consistent with the known epipolar geometry, and
  triangulate with COLMAP keeping the poses fixed.
- **sfm** (images only): extract, match pairs (exhaustive for small sets), verify with COLMAP and run incremental
  SfM; the largest model becomes the map.

Stages write into the map directory as they go (features.h5, build/matches.h5), so an interrupted build resumes
without redoing finished images or pairs. ``build_map`` returns the map directory.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..config import merge
from ..features.base import create_extractor
from ..imageio import read_image
from ..matching.base import create_matcher
from ..retrieval.global_descriptors import create_global_descriptor
from ..types import Camera, Features, Pose
from .features_io import FeatureStore, list_features, read_features, write_features
from .format import INDEX_FILE, MAP_FORMAT, MAP_VERSION, MapError, _compact_ids, index_from_reconstruction, write_index
from .pairs import pairs_exhaustive, pairs_from_poses, relative_fundamental, sampson_error

logger = logging.getLogger(__name__)

DEFAULT_BUILD_CONF: Dict[str, Any] = {
    "features": {"name": "aliked", "max_keypoints": 2048},
    "matcher": {"name": "lightglue"},
    "pairs": {"num_neighbors": 5, "max_angle_deg": 75.0, "exhaustive_below": 30},
    "verification": {"max_epipolar_error": 4.0, "min_matches": 15},
    "triangulation": {"max_reproj_error": 4.0, "min_tri_angle": 1.0},
    "global": {"name": "vlad", "num_clusters": 32},
    "sfm": {"num_threads": 1},  # 1: deterministic incremental SfM (with the seed); more threads are faster
    "device": "auto",
    "seed": 0,
}


# ---------------------------------------------------------------------------------------------- sources
class ImageFolder:
    """Database = every image under a folder; cameras from EXIF (pycolmap), no poses (SfM mode)."""

    EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

    def __init__(self, root: Union[str, Path], names: Optional[Sequence[str]] = None,
                 cameras: Optional[Dict[str, Camera]] = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        if names is None:
            names = sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*")
                           if p.suffix.lower() in self.EXTS)
        if not names:
            raise ValueError(f"no images ({', '.join(self.EXTS)}) found under {self.root}")
        self.db_names = list(names)
        self._cameras = dict(cameras or {})

    def db_image_path(self, name: str) -> Path:
        return self.root / name

    def db_camera(self, name: str) -> Camera:
        if name not in self._cameras:
            import pycolmap

            self._cameras[name] = Camera.from_pycolmap(pycolmap.infer_camera_from_image(str(self.db_image_path(name))))
        return self._cameras[name]

    def db_pose(self, name: str) -> Optional[Pose]:
        return None


def build_option_overrides(features: Optional[str] = None, matcher: Optional[str] = None,
                           max_keypoints: Optional[int] = None, resize_max: Optional[int] = None,
                           device: Optional[str] = None) -> list:
    """The map-building command-line options (`imp map build`, `imp benchmark`) as dotted conf overrides; --features
    is features.name=..., so another feature type starts from its own defaults."""
    over: list = []
    if features:
        over.append(("features.name", features))
    if matcher:
        over.append(("matcher.name", matcher))
    for key, val in (("max_keypoints", max_keypoints), ("resize_max", resize_max)):
        if val is not None:
            over.append((f"features.{key}", val))
    if device:
        over.append(("device", device))
    return over


def _db_pose(source, name: str) -> Optional[Pose]:
    fn = getattr(source, "db_pose", None)
    return fn(name) if fn is not None else None


# ---------------------------------------------------------------------------------------------- stages
def extract_database(source, names: Sequence[str], extractor, path: Path, progress: bool = True) -> None:
    """Extract features for every name not yet in ``path`` (resumable)."""
    from tqdm import tqdm

    done = set(list_features(path))
    todo = [n for n in names if n not in done]
    for n in tqdm(todo, desc=f"extract {extractor.kind}", unit="img", disable=not progress or not todo):
        feats = extractor.extract(read_image(source.db_image_path(n)))
        write_features(path, n, feats)


def _pair_key(a: str, b: str) -> str:
    return (a + "||" + b).replace("/", "|")


def match_pairs(pairs: Sequence[Tuple[str, str]], feats: Dict[str, Features], matcher, path: Path,
                progress: bool = True) -> Dict[Tuple[str, str], np.ndarray]:
    """Match each pair once and cache the index arrays in ``path`` (HDF5)."""
    import h5py
    from tqdm import tqdm

    out: Dict[Tuple[str, str], np.ndarray] = {}
    with h5py.File(str(path), "a") as f:
        for a, b in pairs:
            k = _pair_key(a, b)
            if k in f:
                out[(a, b)] = f[k][()]
        todo = [p for p in pairs if p not in out]
        for a, b in tqdm(todo, desc=f"match {matcher.conf['name']}", unit="pair", disable=not progress or not todo):
            m = matcher.match(feats[a], feats[b])
            out[(a, b)] = m.indices.astype(np.int64)
            f.create_dataset(_pair_key(a, b), data=out[(a, b)])
    return out


def verify_with_poses(pairs_matches: Dict[Tuple[str, str], np.ndarray], feats: Dict[str, Features],
                      poses: Dict[str, Pose], cameras: Dict[str, Camera], max_error: float,
                      min_matches: int) -> Dict[Tuple[str, str], np.ndarray]:
    """Keep matches within ``max_error`` px (Sampson) of the epipolar geometry given by the known poses."""
    out = {}
    for (a, b), m in pairs_matches.items():
        if len(m) == 0:
            continue
        F = relative_fundamental(poses[a], poses[b], cameras[a].K, cameras[b].K)
        err = sampson_error(F, feats[a].keypoints[m[:, 0]], feats[b].keypoints[m[:, 1]])
        keep = m[err < max_error]
        if len(keep) >= min_matches:
            out[(a, b)] = keep
    return out


def _write_database(db_path: Path, names: Sequence[str], cameras: Dict[str, Camera], feats: Dict[str, Features],
                    matches: Dict[Tuple[str, str], np.ndarray], verified: bool) -> Dict[str, int]:
    """A COLMAP database with one camera per image, keypoints (+0.5: COLMAP pixel centres) and matches.

    With ``verified`` the matches are also written as CALIBRATED two-view geometries (COLMAP 4 ignores
    geometries whose config is UNDEFINED)."""
    import pycolmap

    if db_path.exists():
        db_path.unlink()
    ids: Dict[str, int] = {}
    with pycolmap.Database.open(str(db_path)) as db:
        for i, n in enumerate(names, start=1):
            cam = cameras[n].to_pycolmap()
            cam.camera_id = i
            db.write_camera(cam, use_camera_id=True)
            rig = pycolmap.Rig(rig_id=i)
            rig.add_ref_sensor(cam.sensor_id)
            db.write_rig(rig, use_rig_id=True)
            frame = pycolmap.Frame(frame_id=i, rig_id=i)
            frame.add_data_id(pycolmap.data_t(cam.sensor_id, i))
            db.write_frame(frame, use_frame_id=True)
            img = pycolmap.Image(name=n, camera_id=i, image_id=i)
            img.frame_id = i
            db.write_image(img, use_image_id=True)
            db.write_keypoints(i, (feats[n].keypoints + 0.5).astype(np.float32))
            ids[n] = i
        for (a, b), m in matches.items():
            m32 = m.astype(np.uint32)
            db.write_matches(ids[a], ids[b], m32)
            if verified:
                tvg = pycolmap.TwoViewGeometry()
                tvg.config = pycolmap.TwoViewGeometryConfiguration.CALIBRATED
                tvg.inlier_matches = m32
                db.write_two_view_geometry(ids[a], ids[b], tvg)
    return ids


def _reference_reconstruction(names: Sequence[str], cameras: Dict[str, Camera], poses: Dict[str, Pose],
                              feats: Dict[str, Features], ids: Dict[str, int]):
    import pycolmap

    rec = pycolmap.Reconstruction()
    for n in names:
        i = ids[n]
        cam = cameras[n].to_pycolmap()
        cam.camera_id = i
        rec.add_camera_with_trivial_rig(cam)
        img = pycolmap.Image(name=n, keypoints=(feats[n].keypoints + 0.5).astype(np.float64), camera_id=i, image_id=i)
        rec.add_image_with_trivial_frame(img, poses[n].to_pycolmap())
    return rec


def _point3D_ids(rec, name: str, n_kpts: int) -> np.ndarray:
    img = rec.find_image_with_name(name)
    out = np.full(n_kpts, -1, np.int64)
    if img is None:
        return out
    for k, p in enumerate(img.points2D):
        if k < n_kpts and p.has_point3D():
            out[k] = p.point3D_id
    return out


def _map_id(conf: Mapping[str, Any], names: Sequence[str]) -> str:
    h = hashlib.sha1(json.dumps({"f": conf["features"], "n": list(names)}, sort_keys=True).encode()).hexdigest()
    return f"{conf['features']['name']}-{h[:10]}"


# ---------------------------------------------------------------------------------------------- main entry
def build_map(source, out_dir: Union[str, Path], conf: Optional[Mapping[str, Any]] = None,
              names: Optional[Sequence[str]] = None, progress: bool = True,
              cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """Build a map of ``source``'s database into ``out_dir``; returns ``out_dir``.

    ``source``: anything with ``db_names``, ``db_image_path(name)``, ``db_camera(name)`` and optionally
    ``db_pose(name)`` (synthetic world, Aachen/RobotCar readers, ``ImageFolder``). ``names`` restricts the
    database to a subset. ``cache_dir`` (default ``out_dir/build``) holds features/matches that other builds of
    the same images can share (leave-one-out experiments reuse one cache).
    """
    import pycolmap

    conf = merge(DEFAULT_BUILD_CONF, conf, where="map")
    pycolmap.set_random_seed(int(conf["seed"]))  # RANSAC and SfM sampling: same inputs, same map
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else out_dir / "build"
    cache.mkdir(parents=True, exist_ok=True)
    names = list(names if names is not None else source.db_names)
    if len(names) < 2:
        raise ValueError(f"a map needs at least 2 database images, got {len(names)}")
    t0 = time.time()
    timings: Dict[str, float] = {}

    feat_conf = {**conf["features"], "device": conf["features"].get("device", conf["device"])}
    extractor = create_extractor(feat_conf)
    fpath = cache / f"features-{extractor.kind}.h5"
    extract_database(source, names, extractor, fpath, progress)
    feats = {n: read_features(fpath, n)[0] for n in names}
    timings["extract_s"] = time.time() - t0

    cameras = {n: source.db_camera(n) for n in names}
    maybe_poses = {n: _db_pose(source, n) for n in names}
    poses: Dict[str, Pose] = {n: p for n, p in maybe_poses.items() if p is not None}
    known = len(poses) == len(names)
    if known and len(names) > conf["pairs"]["exhaustive_below"]:
        pairs = pairs_from_poses(poses, conf["pairs"]["num_neighbors"], conf["pairs"]["max_angle_deg"])
    else:
        pairs = pairs_exhaustive(sorted(names))
    t1 = time.time()
    match_conf = {**conf["matcher"], "device": conf["matcher"].get("device", conf["device"])}
    matcher = create_matcher(match_conf)
    mpath = cache / f"matches-{extractor.kind}-{match_conf['name']}.h5"
    raw = match_pairs(pairs, feats, matcher, mpath, progress)
    timings["match_s"] = time.time() - t1

    t2 = time.time()
    work = out_dir / "build" / "colmap"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    db_path = work / "database.db"
    image_dir = getattr(source, "image_root", None) or getattr(source, "root", None) or work
    if known:
        verified = verify_with_poses(raw, feats, poses, cameras, conf["verification"]["max_epipolar_error"],
                                     conf["verification"]["min_matches"])
        if not verified:
            raise MapError("no image pair kept enough matches consistent with the known poses; "
                           "check the database poses/intrinsics or use more keypoints")
        ids = _write_database(db_path, names, cameras, feats, verified, verified=True)
        ref = _reference_reconstruction(names, cameras, poses, feats, ids)
        opts = pycolmap.IncrementalPipelineOptions()
        opts.random_seed = int(conf["seed"])
        opts.triangulation.ignore_two_view_tracks = False
        opts.triangulation.min_angle = conf["triangulation"]["min_tri_angle"]
        opts.triangulation.complete_max_reproj_error = conf["triangulation"]["max_reproj_error"]
        opts.triangulation.merge_max_reproj_error = conf["triangulation"]["max_reproj_error"]
        rec = pycolmap.triangulate_points(ref, str(db_path), str(image_dir), str(work / "tri"),
                                          clear_points=True, options=opts, refine_intrinsics=False)
        mode = "triangulation"
    else:
        ids = _write_database(db_path, names, cameras, feats, raw, verified=False)
        pairs_txt = work / "pairs.txt"
        pairs_txt.write_text("".join(f"{a} {b}\n" for (a, b), m in raw.items() if len(m)))
        verify = pycolmap.TwoViewGeometryOptions()
        verify.ransac.random_seed = int(conf["seed"])  # default -1 draws a new seed: builds would not repeat
        pycolmap.verify_matches(str(db_path), str(pairs_txt), verify)
        opts = pycolmap.IncrementalPipelineOptions()
        opts.num_threads = int(conf["sfm"]["num_threads"])
        opts.random_seed = int(conf["seed"])
        models = pycolmap.incremental_mapping(str(db_path), str(image_dir), str(work / "sfm"), options=opts)
        if not models:
            raise MapError(f"SfM registered no model from {len(names)} images; too few matches")
        rec = max(models.values(), key=lambda r: r.num_reg_images())
        mode = "sfm"
    timings["reconstruct_s"] = time.time() - t2
    if rec.num_points3D() == 0:
        raise MapError("the reconstruction has no 3D points; cannot localize against it")

    registered = sorted(img.name for img in rec.images.values() if img.has_pose)
    rec_dir = out_dir / "reconstruction"
    if rec_dir.exists():
        shutil.rmtree(rec_dir)
    rec_dir.mkdir()
    rec.write_binary(str(rec_dir))

    final = out_dir / "features.h5"
    for old in (out_dir / INDEX_FILE, final):  # an index of an earlier build must not outlive its features
        if old.exists():
            old.unlink()
    for n in registered:
        write_features(final, n, feats[n], extra={"point3D_ids": _compact_ids(_point3D_ids(rec, n, len(feats[n])))})

    t3 = time.time()
    gd = create_global_descriptor(conf["global"])
    gd.fit([feats[n] for n in registered], seed=conf["seed"])
    gdesc = np.stack([gd.compute(feats[n]) for n in registered])
    garrays: Dict[str, Any] = {"names": np.array(registered), "descriptors": gdesc, **gd.arrays}
    np.savez(out_dir / "global.npz", **garrays)
    timings["global_s"] = time.time() - t3

    meta = {
        "format": MAP_FORMAT,
        "version": MAP_VERSION,
        "map_id": _map_id(conf, registered),
        "features": extractor.conf,
        "matcher": matcher.conf,
        "global": gd.conf,
        "mode": mode,
        "num_images": len(registered),
        "num_unregistered": len(names) - len(registered),
        "num_points3D": int(rec.num_points3D()),
        "mean_track_length": float(rec.compute_mean_track_length()),
        "mean_reprojection_error": float(rec.compute_mean_reprojection_error()),
        "num_pairs": len(pairs),
        "timings": timings,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": str(getattr(source, "root", "")),
    }
    store = FeatureStore(final)
    try:  # what a loaded map keeps in memory (poses, cameras, 3D points, tracks): start-up reads only this
        write_index(out_dir / INDEX_FILE, index_from_reconstruction(rec, store, registered, extractor.kind), meta)
    finally:
        store.close()
    (out_dir / "map.json").write_text(json.dumps(meta, indent=2, default=str))
    logger.info("map %s: %d images, %d points (%s)", out_dir, len(registered), rec.num_points3D(), mode)
    return out_dir
