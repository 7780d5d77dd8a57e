"""Per-image local features in one HDF5 file (hloc-style: one group per image name, '/' kept as nested groups)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, Optional, Union

import numpy as np

from ..types import Features


def h5_key(name: str) -> str:
    """HDF5 key of an image name: flat groups, '/' in names becomes '|' (map files and labels.h5)."""
    return name.replace("/", "|")


def name_from_key(key: str) -> str:
    return key.replace("|", "/")


def write_features(path: Union[str, Path], name: str, feats: Features,
                   extra: Optional[Dict[str, np.ndarray]] = None, half: bool = True) -> None:
    import h5py

    with h5py.File(str(path), "a") as f:
        k = h5_key(name)
        if k in f:
            del f[k]
        g = f.create_group(k)
        g.create_dataset("keypoints", data=feats.keypoints.astype(np.float32))
        g.create_dataset("descriptors", data=feats.descriptors.astype(np.float16 if half else np.float32))
        g.create_dataset("scores", data=feats.scores.astype(np.float32))
        if feats.labels is not None:
            g.create_dataset("labels", data=feats.labels.astype(np.int32))
        g.attrs["image_size"] = np.asarray(feats.image_size, dtype=np.int64)
        g.attrs["kind"] = feats.kind
        g.attrs["name"] = name
        for ek, ev in (extra or {}).items():
            g.create_dataset(ek, data=ev)


def list_features(path: Union[str, Path]) -> list:
    import h5py

    if not Path(path).is_file():
        return []
    with h5py.File(str(path), "r") as f:
        return [f[k].attrs.get("name", name_from_key(k)) for k in f.keys()]


def read_features(path: Union[str, Path], name: str, with_extra: Iterable[str] = ()) -> tuple:
    """Return (Features, {extra_key: array})."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"features file not found: {path}")
    try:
        with h5py.File(str(path), "r") as f:
            k = h5_key(name)
            if k not in f:
                raise KeyError(f"no features for image {name!r} in {path}")
            g = f[k]
            feats = Features(
                g["keypoints"][()],
                g["descriptors"][()].astype(np.float32),
                g["scores"][()],
                tuple(g.attrs["image_size"]),
                str(g.attrs.get("kind", "")),
                g["labels"][()] if "labels" in g else None,
            )
            extra = {e: g[e][()] for e in with_extra if e in g}
    except OSError as e:
        raise ValueError(f"corrupt features file {path}: {e}") from e
    return feats, extra
