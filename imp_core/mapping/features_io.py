"""Per-image local features in one HDF5 file (hloc-style: one flat group per image name, '/' written as '|').

Each group holds ``keypoints`` (N, 2) float32, ``descriptors`` (N, D) float16, ``scores`` (N,) float32, optional
``labels`` and, in a map's features.h5, ``point3D_ids`` (N,) int32 (-1 = no 3D point; maps written before the
compact ids hold int64, read the same). ``FeatureStore`` keeps one file open and reads one image on demand.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple, Union

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


class FeatureStore:
    """Reads single images' features from one HDF5 file kept open (not reopened per image).

    Safe to share between threads (one read at a time) and across ``fork``/pickling: the handle is reopened in a
    new process. Errors are ``ValueError``/``KeyError`` naming the file and the image.
    """

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        self._file = None
        self._pid = -1
        self._lock = threading.Lock()
        self.open()

    def open(self):
        """The open ``h5py.File`` (opened on first use in this process); ``OSError`` names a corrupt file."""
        import h5py

        if self._file is None or self._pid != os.getpid():
            if not self.path.is_file():
                raise FileNotFoundError(f"features file not found: {self.path}")
            try:
                self._file = h5py.File(str(self.path), "r")
            except OSError as e:
                raise ValueError(f"corrupt or truncated features file {self.path}: {e}") from e
            self._pid = os.getpid()
        return self._file

    def keys(self) -> list:
        try:
            return list(self.open().keys())
        except (OSError, RuntimeError) as e:
            raise ValueError(f"corrupt features file {self.path}: {e}") from e

    def read(self, name: str, with_extra: Iterable[str] = (), image_size: Optional[Tuple[int, int]] = None,
             kind: Optional[str] = None) -> tuple:
        """(Features, {extra: array}) of one image; ``image_size``/``kind`` given skip the (slow) attribute reads."""
        with self._lock:
            f = self.open()
            k = h5_key(name)
            try:
                present = k in f
            except (OSError, RuntimeError) as e:
                raise ValueError(f"corrupt features file {self.path} (image {name!r}): {e}") from e
            if not present:
                raise KeyError(f"no features for image {name!r} in {self.path}")
            try:
                g = f[k]
                feats = Features(
                    g["keypoints"][()],
                    g["descriptors"][()].astype(np.float32),  # numpy widens fp16 2x faster than HDF5's conversion
                    g["scores"][()],
                    tuple(g.attrs["image_size"]) if image_size is None else image_size,
                    str(g.attrs.get("kind", "")) if kind is None else kind,
                    g["labels"][()] if "labels" in g else None,
                )
                extra = {e: g[e][()] for e in with_extra if e in g}
            except (OSError, RuntimeError, TypeError, KeyError) as e:  # KeyError: a dataset missing in the group
                raise ValueError(f"corrupt features file {self.path} (image {name!r}): {e}") from e
        return feats, extra

    def close(self) -> None:
        with self._lock:
            if self._file is not None and self._pid == os.getpid():
                try:
                    self._file.close()
                except Exception:  # already closed by h5py at interpreter exit
                    pass
            self._file = None

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.path = state["path"]
        self._file = None
        self._pid = -1
        self._lock = threading.Lock()
