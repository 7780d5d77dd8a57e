"""Global instances from a map: cluster the 3D points, paint label masks into every database image,
and keep the instance index (instance -> images, image -> {instance: pixel count}).

On disk, inside the map directory (written by ``annotate_map``):
- ``instances.json``: format "imp-instances", version, conf, ``num_instances`` (ids 1..N, 0 = none),
  ``instance_images`` {id: [names]}, ``image_instances`` {name: {id: pixels}}.
- ``instances.npz``: ``point3D_ids`` (P,) int64, ``point_labels`` (P,) int32, ``centroids`` (N, 3) float64.
- ``instance_masks/<name>.png``: uint16 label image at the database image resolution.
- ``labels.h5``: one dataset per image (name with '/' replaced by '|'), (N,) int32, aligned with the
  keypoints of that image in ``features.h5`` (0 = keypoint on no instance); ``LocalizationMap`` attaches
  them as ``Features.labels``.
- ``recognition_global.npz``: the database images' recognition descriptors (``database.py``).
Mask files, label maps and LBR's colour-coded masks are in ``masks.py``; reading a map's database images and their
recognition descriptors in ``database.py``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..config import merge
from ..mapping import LocalizationMap
from ..mapping.features_io import h5_key
from ..paths import safe_join
from .database import write_db_descriptors
from .masks import fill_label_mask, keypoint_labels, save_mask

INSTANCES_JSON = "instances.json"
INSTANCES_NPZ = "instances.npz"
MASK_DIR = "instance_masks"
LABELS_H5 = "labels.h5"

default_conf: Dict[str, Any] = {
    "num_instances": 16,  # clusters of 3D points (LBR: 452 on Aachen, PRAM: 512)
    "mode": "xyz",  # coordinates clustered: "xyz", or two axes ("xz", "xy", "yz") for ground-plane clustering
    "min_track": 2,  # points seen by fewer db images do not shape the clusters (they still get a label)
    "fill_radius": 0.05,  # mask fill around observed points, fraction of the image diagonal
    "seed": 0,
    # reuse another annotated map's instance definition (its instances.npz centroids) instead of clustering,
    # so a recognition model trained on that map serves this one (same place, other features)
    "centroids_from": None,
}


# ------------------------------------------------------------------------------------------------ clustering
def cluster_points(xyz: np.ndarray, num_instances: int, mode: str = "xyz", seed: int = 0,
                   weights_mask: Optional[np.ndarray] = None, n_init: int = 5) -> Tuple[np.ndarray, np.ndarray]:
    """K-means (k-means++ init, fixed seed) of 3D points -> (labels (P,) in 1..N, centroids (N, 3)).

    Only points where ``weights_mask`` is True shape the clusters; every point gets its nearest centroid.
    Ids are sorted by cluster size (1 = largest)."""
    from scipy.cluster.vq import kmeans2

    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    axes = {"x": 0, "y": 1, "z": 2}
    if not mode or any(c not in axes for c in mode) or len(set(mode)) != len(mode):
        raise ValueError(f"instances.mode must use the axes x, y, z once each (e.g. 'xyz' or 'xz'), got {mode!r}")
    cols = [axes[c] for c in mode]
    fit = xyz if weights_mask is None else xyz[np.asarray(weights_mask, bool)]
    if num_instances < 1:
        raise ValueError(f"instances.num_instances must be >= 1, got {num_instances}")
    if len(fit) < num_instances:
        raise ValueError(f"cannot make {num_instances} instances from {len(fit)} 3D points; "
                         "lower instances.num_instances")
    rng = np.random.default_rng(seed)
    best, best_cost = None, np.inf
    for _ in range(max(1, n_init)):  # k-means finds local minima: keep the best of a few restarts
        cent, lab_fit = kmeans2(fit[:, cols], num_instances, minit="++", seed=rng, iter=30)
        cost = float(((fit[:, cols] - cent[lab_fit]) ** 2).sum())
        if cost < best_cost:
            best, best_cost = cent, cost
    assert best is not None  # at least one restart ran
    lab = _nearest(xyz[:, cols], best)
    counts = np.bincount(lab, minlength=num_instances)
    order = np.argsort(-counts, kind="stable")
    remap = np.empty(num_instances, np.int32)
    remap[order] = np.arange(1, num_instances + 1)
    labels = remap[lab]
    centroids = np.zeros((num_instances, 3))
    for k in range(1, num_instances + 1):
        sel = labels == k
        centroids[k - 1] = xyz[sel].mean(0) if sel.any() else np.nan
    return labels.astype(np.int32), centroids


def _nearest(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    return cKDTree(c).query(x)[1].astype(np.int64)


# ------------------------------------------------------------------------------------------------ index
@dataclass
class InstanceIndex:
    """Which database images show which instance, with pixel counts (LBR's gid_fns / fn_gids)."""

    num_instances: int
    image_instances: Dict[str, Dict[int, int]] = field(default_factory=dict)
    conf: Dict[str, Any] = field(default_factory=dict)

    @property
    def instance_images(self) -> Dict[int, List[str]]:
        out: Dict[int, List[str]] = {}
        for name, counts in self.image_instances.items():
            for i in counts:
                out.setdefault(int(i), []).append(name)
        return out

    def images_of(self, instance: int) -> List[str]:
        return self.instance_images.get(int(instance), [])

    def layouts(self, names: Sequence[str]) -> np.ndarray:
        """(len(names), num_instances + 1) float32: each image's instance layout, its pixel count per instance
        (column 0, no instance, stays 0), L2-normalised; see ``layout_histogram``."""
        out = np.zeros((len(names), int(self.num_instances) + 1), np.float32)
        for k, n in enumerate(names):
            for i, c in self.image_instances.get(n, {}).items():
                if 0 < int(i) <= self.num_instances:
                    out[k, int(i)] = c
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def add(self, name: str, mask: np.ndarray) -> None:
        ids, cnt = np.unique(mask[mask > 0], return_counts=True)
        self.image_instances[name] = {int(i): int(c) for i, c in zip(ids, cnt)}

    def save(self, path: Union[str, Path]) -> None:
        data = {
            "format": "imp-instances",
            "version": 1,
            "num_instances": int(self.num_instances),
            "conf": self.conf,
            "instance_images": {str(k): v for k, v in sorted(self.instance_images.items())},
            "image_instances": {n: {str(k): v for k, v in c.items()} for n, c in self.image_instances.items()},
        }
        Path(path).write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, path: Union[str, Path]) -> "InstanceIndex":
        path = Path(path)
        if path.is_dir():
            path = path / INSTANCES_JSON
        if not path.is_file():
            raise FileNotFoundError(f"instance index not found: {path} (annotate the map with `imp instances`)")
        data = json.loads(path.read_text())
        if data.get("format") != "imp-instances":
            raise ValueError(f"{path}: not an imp instance index (format {data.get('format')!r})")
        try:
            ii = {n: {int(k): int(v) for k, v in c.items()} for n, c in data["image_instances"].items()}
            return cls(int(data["num_instances"]), ii, dict(data.get("conf", {})))
        except (KeyError, ValueError, AttributeError) as e:
            raise ValueError(f"{path}: malformed instance index ({e})") from e


# ------------------------------------------------------------------------------------------------ map
def label_map_points(lmap: Any, conf: Mapping[str, Any]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cluster the map's 3D points -> (point3D_ids, labels, centroids)."""
    ids, xyz = lmap.all_points3D()
    ids = np.asarray(ids, np.int64)
    if conf["centroids_from"]:
        cent, mode = load_instance_definition(conf["centroids_from"])
        return ids, assign_to_centroids(xyz, cent, mode), cent
    seen = [np.unique(p3[p3 >= 0]) for p3 in (np.asarray(lmap.point3D_ids(n)) for n in lmap.names)]
    obs, cnt = np.unique(np.concatenate(seen + [np.zeros(0, np.int64)]), return_counts=True)
    track = np.zeros(len(ids), np.int64)
    pos = np.searchsorted(obs, ids)
    if len(obs):
        hit = (pos < len(obs)) & (obs[np.minimum(pos, len(obs) - 1)] == ids)
    else:
        hit = np.zeros(len(ids), bool)
    track[hit] = cnt[pos[hit]]
    labels, cent = cluster_points(xyz, int(conf["num_instances"]), conf["mode"], int(conf["seed"]),
                                  track >= int(conf["min_track"]))
    return ids, labels, cent


def load_instance_definition(source: Union[str, Path]) -> Tuple[np.ndarray, str]:
    """(centroids (N, 3), clustered axes) from an annotated map directory or a recognition model trained on one."""
    source = Path(source)
    if source.is_dir():
        return load_point_labels(source)[2], str(InstanceIndex.load(source).conf.get("mode", "xyz"))
    if not source.is_file():
        raise FileNotFoundError(f"instance definition not found: {source} (an annotated map or a recognition model)")
    import torch

    blob = torch.load(str(source), map_location="cpu", weights_only=True)
    inst = blob.get("instances") if isinstance(blob, dict) else None
    if not inst or "centroids" not in inst:
        raise ValueError(f"{source} carries no instance definition (train it with `imp train-recognition`)")
    return inst["centroids"].numpy().astype(np.float64), str(inst.get("mode", "xyz"))


def assign_to_centroids(xyz: np.ndarray, centroids: np.ndarray, mode: str = "xyz") -> np.ndarray:
    """Instance id (1..N) of the nearest centroid in the clustered axes; empty (NaN) centroids never win."""
    cols = ["xyz".index(c) for c in mode]
    cent = np.where(np.isfinite(centroids), centroids, 1e18)
    return (_nearest(np.asarray(xyz, np.float64)[:, cols], cent[:, cols]) + 1).astype(np.int32)


def annotate_map(map_dir: Union[str, Path], conf: Optional[Mapping[str, Any]] = None,
                 recognizer: Any = None, load_image: Optional[Callable[[str], np.ndarray]] = None) -> InstanceIndex:
    """Derive global instances for a map and write them into its directory (see the module docstring).

    With ``recognizer`` (a ``Recognizer``) and ``load_image(name) -> RGB``, also stores the recognition
    network's global descriptors of the database images in ``recognition_global.npz``."""
    import h5py
    from tqdm import tqdm

    conf = merge(default_conf, conf, where="instances")
    map_dir = Path(map_dir)
    lmap = LocalizationMap.load(map_dir)
    pids, plabels, cent = label_map_points(lmap, conf)
    conf["num_instances"] = len(cent)
    if conf["centroids_from"]:
        conf["mode"] = load_instance_definition(conf["centroids_from"])[1]
    lut = dict(zip(pids.tolist(), plabels.tolist()))
    # every mask path is checked before anything is written: a name such as '../../x' in the model is refused
    mask_paths = {name: safe_join(map_dir / MASK_DIR, f"{name}.png", what=f"image name in map {map_dir}")
                  for name in lmap.names}
    np.savez(map_dir / INSTANCES_NPZ, point3D_ids=pids, point_labels=plabels, centroids=cent)
    index = InstanceIndex(int(conf["num_instances"]), conf=dict(conf))
    with h5py.File(map_dir / LABELS_H5, "w") as h5:
        for name in tqdm(lmap.names, desc="instance masks", leave=False):
            feats = lmap.features(name)
            p3 = np.asarray(lmap.point3D_ids(name))
            lab = np.array([lut.get(int(p), 0) if p >= 0 else 0 for p in p3], np.int32)
            w, h = feats.image_size
            mask = fill_label_mask(feats.keypoints, lab, (w, h), float(conf["fill_radius"]) * np.hypot(w, h))
            save_mask(mask_paths[name], mask)
            index.add(name, mask)
            # keypoints without a 3D point take the label painted under them
            kl = np.where(lab > 0, lab, keypoint_labels(feats.keypoints, mask))
            h5.create_dataset(h5_key(name), data=kl.astype(np.int32))
    index.save(map_dir / INSTANCES_JSON)
    if recognizer is not None:
        if load_image is None:
            raise ValueError("annotate_map: a recognizer needs load_image(name) to read the database images")
        write_db_descriptors(map_dir, lmap.names, recognizer, load_image)
    return index


def load_point_labels(map_dir: Union[str, Path]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(point3D_ids, labels, centroids) of an annotated map (directory or its instances.npz)."""
    path = Path(map_dir)
    path = path if path.suffix == ".npz" else path / INSTANCES_NPZ
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: annotate the map with `imp instances` first")
    with np.load(path) as z:
        return z["point3D_ids"], z["point_labels"], z["centroids"]

