"""Training data dump: local features of every image plus ground-truth correspondences of every pair.

One HDF5 file (format ``imp-matcher-dump``)::
    attrs: format, version, features (JSON conf), source
    features/<image name>/{keypoints (N,2), descriptors (N,D), scores (N,)}  attrs: image_size (w, h)
    pairs/<k>/{matches (M,2), labels0 (N0,), labels1 (N1,), K0, K1 (3,3), T_0to1 (4,4)}  attrs: name0, name1

Labels: partner index, -1 unmatched (dustbin), -2 ignore (see ``correspondences``). ``dump_synthetic`` reads the
synthetic world (it has depth); ``megadepth.dump_megadepth`` the MegaDepth layout; both go through ``write_dump``.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import h5py
import numpy as np
from tqdm import tqdm

from ..config import merge
from ..features.base import create_extractor
from ..types import Features, Pose
from ..world.synthetic import SyntheticWorld
from .correspondences import View, correspondences

FORMAT, VERSION = "imp-matcher-dump", 1

default_conf: Dict[str, Any] = {
    "features": {"name": "sift", "max_keypoints": 1024, "device": "cpu"},
    "min_matches": 21,  # pairs with fewer ground-truth matches are dropped (released: > 20)
    "inlier_px": 5.0,
    "outlier_px": 15.0,
    "max_pairs": None,  # keep at most this many pairs (evenly spread), None = all
}


class ImageSource:
    """What the dump needs per image: ``image(name)`` RGB uint8, ``depth(name)`` metres, ``K(name)``,
    ``pose(name)`` cam_from_world."""

    def __init__(self, image: Callable[[str], np.ndarray], depth: Callable[[str], np.ndarray],
                 K: Callable[[str], np.ndarray], pose: Callable[[str], Pose]):
        self.image, self.depth, self.K, self.pose = image, depth, K, pose


def extract_all(names: Sequence[str], source: ImageSource, feat_conf: Mapping[str, Any]) -> Dict[str, Features]:
    extractor = create_extractor(feat_conf)
    return {n: extractor.extract(source.image(n)) for n in tqdm(names, desc="features")}


def check_inputs(path: Path, info: Mapping[str, Any], inputs: List[str], source_name: str) -> None:
    """Refuse to resume a dump (``info``: its ``read_dump_info``) whose pair keys would point at other inputs: keys
    hold each input's position (``"photo/pair"``), so the inputs it was written from must be the first ones of the
    new list (more may follow). A dump from before ``inputs`` was recorded is only resumed if its source line (which
    counts the inputs) is unchanged."""
    before = info["inputs"]
    if before is None:
        if info["source"] != source_name:
            raise ValueError(f"cannot resume {path}: it was written from {info['source']!r}, now the inputs "
                             f"give {source_name!r}, and it does not record which inputs it used; delete it (or "
                             "write to another file) to start anew")
        return
    changed = next((k for k, (a, b) in enumerate(zip(before, inputs)) if a != b), None)
    if changed is None and len(inputs) < len(before):
        changed = len(inputs)
    if changed is not None:
        now = inputs[changed] if changed < len(inputs) else "nothing"
        raise ValueError(f"cannot resume {path}: its pairs are keyed by input position and input {changed} was "
                         f"{before[changed]!r} but is now {now!r} (the inputs changed, e.g. a package added or "
                         "removed a photo); delete it (or write to another file) to start anew")


class DumpWriter:
    """Writes an ``imp-matcher-dump`` HDF5 file: ``add_features`` per image, ``add_pair`` per kept pair.

    With ``resume`` an existing dump of the same features is appended to (``tried`` holds the keys of the pairs
    already processed, see ``mark_tried``), and the file is flushed every ``flush_every`` pairs, so an interrupted
    dump keeps what it wrote."""

    def __init__(self, out, features_conf: Mapping[str, Any], source_name: str, resume: bool = False,
                 flush_every: int = 25, inputs: Optional[Sequence[str]] = None):
        self.path = Path(out)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.flush_every = int(flush_every)
        if resume and self.path.is_file():
            info = read_dump_info(self.path)
            if info["features"] != json.loads(json.dumps(dict(features_conf))):
                raise ValueError(f"cannot resume {self.path}: it holds features {info['features']}, "
                                 f"not {dict(features_conf)}")
            if inputs is not None:
                check_inputs(self.path, info, list(inputs), source_name)
            self.h5 = h5py.File(self.path, "a")
        else:
            self.h5 = h5py.File(self.path, "w")
            self.h5.attrs.update({"format": FORMAT, "version": VERSION,
                                  "features": json.dumps(dict(features_conf)), "source": source_name})
            self.h5.create_group("features")
            self.h5.create_group("pairs")
        if inputs is not None:  # what it is written from now (a resumed dump may have gained inputs at the end)
            self.h5.attrs.update({"inputs": json.dumps(list(inputs)), "source": source_name})
        self.gf, self.gp = self.h5["features"], self.h5["pairs"]
        self.n_pairs = len(self.gp)
        self.tried: set = set(json.loads(self.h5.attrs.get("tried", "[]")))

    def __enter__(self) -> "DumpWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.h5.id.valid:
            self.h5.attrs["tried"] = json.dumps(sorted(self.tried))
            self.h5.close()

    def mark_tried(self, key: str) -> None:
        """Record that the pair ``key`` was processed (kept or not), so a resumed dump skips it."""
        self.tried.add(key)
        if len(self.tried) % self.flush_every == 0:
            self.h5.attrs["tried"] = json.dumps(sorted(self.tried))
            self.h5.flush()

    def add_features(self, name: str, f: Features) -> None:
        if name in self.gf:
            return
        gi = self.gf.create_group(name)
        gi.create_dataset("keypoints", data=f.keypoints)
        gi.create_dataset("descriptors", data=f.descriptors)
        gi.create_dataset("scores", data=f.scores)
        gi.attrs["image_size"] = np.array(f.image_size)

    def add_pair(self, name0: str, name1: str, matches: np.ndarray, labels0: np.ndarray, labels1: np.ndarray,
                 K0: np.ndarray, K1: np.ndarray, T_0to1: np.ndarray,
                 extra: Optional[Mapping[str, np.ndarray]] = None) -> None:
        gk = self.gp.create_group(str(self.n_pairs))
        gk.attrs["name0"], gk.attrs["name1"] = name0, name1
        items = {"matches": matches, "labels0": labels0, "labels1": labels1, "K0": K0, "K1": K1, "T_0to1": T_0to1}
        for k, v in {**items, **(extra or {})}.items():
            gk.create_dataset(k, data=v)
        self.n_pairs += 1


def write_dump(out: Path, names: Sequence[str], pairs: Iterable[Tuple[str, str]], source: ImageSource,
               conf: Mapping[str, Any], source_name: str) -> Dict[str, int]:
    """Extract features, compute ground truth for ``pairs`` and write the HDF5 dump; returns counts."""
    conf = merge(default_conf, conf, where="dump")
    feats = extract_all(names, source, conf["features"])
    pairs = list(pairs)
    if conf["max_pairs"] and len(pairs) > conf["max_pairs"]:
        keep = np.linspace(0, len(pairs) - 1, int(conf["max_pairs"])).round().astype(int)
        pairs = [pairs[i] for i in keep]
    views: Dict[str, View] = {}

    def view(n: str) -> View:
        if n not in views:
            views[n] = View(feats[n].keypoints, source.depth(n), source.K(n), source.pose(n))
        return views[n]

    with DumpWriter(out, conf["features"], source_name) as dw:
        for n, f in feats.items():
            dw.add_features(n, f)
        for n0, n1 in tqdm(pairs, desc="ground truth"):
            v0, v1 = view(n0), view(n1)
            m, l0, l1 = correspondences(v0, v1, conf["inlier_px"], conf["outlier_px"])
            if len(m) < conf["min_matches"]:
                continue
            dw.add_pair(n0, n1, m, l0, l1, v0.K, v1.K, (v1.pose * v0.pose.inverse()).matrix)
        kept = dw.n_pairs
    return {"images": len(names), "pairs_tried": len(pairs), "pairs": kept}


def dump_synthetic(world_root, out, conf: Optional[Mapping[str, Any]] = None,
                   conditions: Sequence[str] = ("day",)) -> Dict[str, int]:
    """Dump the synthetic world (directory or ``SyntheticWorld``): database images plus queries of
    ``conditions``, all pairs."""

    world = world_root if isinstance(world_root, SyntheticWorld) else SyntheticWorld(world_root)
    names: List[str] = list(world.db_names)
    for c in conditions:
        names += list(world.query_names(c))
    source = ImageSource(world.image, world.depth, lambda n: world.camera(n).K, world.pose)
    return write_dump(Path(out), names, itertools.combinations(names, 2), source, conf or {},
                      f"synthetic:{Path(world.root).resolve()}")


def read_dump_info(path) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training dump not found: {path} (create it with `imp dump`)")
    with h5py.File(path, "r") as h5:
        if h5.attrs.get("format") != FORMAT:
            raise ValueError(f"{path} is not an {FORMAT} file (attrs.format = {h5.attrs.get('format')!r})")
        return {"version": int(h5.attrs["version"]), "features": json.loads(h5.attrs["features"]),
                "source": str(h5.attrs["source"]), "pairs": len(h5["pairs"]), "images": _count_images(h5["features"]),
                "inputs": json.loads(h5.attrs["inputs"]) if "inputs" in h5.attrs else None}


def _count_images(group) -> int:
    """Feature groups (image names may contain '/', which HDF5 stores as nested groups)."""
    n = 0
    for v in group.values():
        n += 1 if "keypoints" in v else _count_images(v)
    return n
