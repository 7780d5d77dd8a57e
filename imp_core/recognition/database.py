"""A map's database images for recognition: ``map_image_loader`` reads them (from an image folder or the dataset
the map was built from), and the recognition network's global descriptors of them live in
``recognition_global.npz`` (``write_db_descriptors`` / ``load_db_descriptors``), tagged with the model's
fingerprint."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..datasets import open_dataset
from ..datasets.base import DatasetError
from ..imageio import read_image
from ..mapping import read_map_meta
from ..paths import safe_join

RECOGNITION_GLOBAL = "recognition_global.npz"


def write_db_descriptors(map_dir: Union[str, Path], names: Sequence[str], recognizer: Any,
                         load_image: Callable[[str], np.ndarray]) -> np.ndarray:
    """Recognition-network global descriptors of the database images -> ``recognition_global.npz``."""
    from tqdm import tqdm

    desc = np.stack([recognizer.descriptor(load_image(n)) for n in tqdm(names, desc="db descriptors", leave=False)])
    np.savez(Path(map_dir) / RECOGNITION_GLOBAL, names=np.array(list(names)), descriptors=desc.astype(np.float32),
             model=np.array(recognizer.fingerprint))
    return desc


def load_db_descriptors(map_dir: Union[str, Path]) -> Tuple[List[str], np.ndarray, str]:
    path = Path(map_dir) / RECOGNITION_GLOBAL
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: run `imp instances --model ...` to compute the recognition "
                                "descriptors of the database images")
    with np.load(path) as z:
        return [str(n) for n in z["names"]], z["descriptors"].astype(np.float32), str(z["model"])


def map_image_loader(map_dir: Union[str, Path], image_dir: Optional[Union[str, Path]] = None
                     ) -> Callable[[str], np.ndarray]:
    """``load(name) -> RGB`` for the database images of a map: from ``image_dir``, else from the dataset the
    map was built from (``source`` in map.json)."""

    if image_dir is not None:
        root = Path(image_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"database image directory not found: {root}")
    else:
        source = read_map_meta(map_dir).get("source")
        if not source:
            raise ValueError(f"{map_dir}/map.json does not name its source dataset; pass the database image "
                             "directory")

        try:
            ds = open_dataset(source)
            return lambda name: read_image(ds.db_image_path(name))
        except DatasetError:
            root = Path(source)  # a map built from an image folder (`imp map build --images DIR`)
        if not root.is_dir():
            raise FileNotFoundError(f"{map_dir}/map.json names the source {source}, which is neither a dataset nor "
                                    "an image directory here; pass the database image directory")
    return lambda name: read_image(safe_join(root, name, what="database image name"))
