"""Common dataset interface: query items and the reference model (layout detection: ``detect.open_dataset``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..errors import DatasetError
from ..paths import safe_join
from ..types import Camera, Pose
from .colmap_io import read_model_poses

__all__ = ["DatasetError", "LocalizationDataset", "QueryItem"]


@dataclass
class QueryItem:
    """One query image: ``name`` as written in result files, ``path`` on disk, its intrinsics and optional GT."""

    name: str
    path: Path
    camera: Camera
    condition: str
    gt_pose: Optional[Pose] = None  # cam_from_world
    stamp: Optional[float] = None  # seconds


class LocalizationDataset:
    """A localization benchmark: database images with a reference COLMAP model, and query images.

    Subclasses fill ``_db`` (name -> (Camera, Pose)) lazily via ``_load_reference`` and implement ``queries``.
    """

    kind = "base"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._db: Optional[Dict[str, Tuple[Camera, Pose]]] = None

    # -- to be provided by each layout
    @property
    def reference_model_dir(self) -> Path:
        raise NotImplementedError

    @property
    def image_root(self) -> Path:
        raise NotImplementedError

    def queries(self, condition: Optional[str] = None) -> List[QueryItem]:
        raise NotImplementedError

    def image_file(self, name: str) -> Path:
        """The file of an image named by the dataset's model or lists (relative to ``image_root``): the one place
        such names become paths. A name that would leave ``image_root`` (``..``, absolute) raises UnsafePathError."""
        return safe_join(self.image_root, name, what=f"image name in {self.root}")

    @property
    def conditions(self) -> List[str]:
        return sorted({q.condition for q in self.queries()})

    # -- database access through the reference model
    def _reference(self) -> Dict[str, Tuple[Camera, Pose]]:
        if self._db is None:
            self._db = read_model_poses(self.reference_model_dir)
            self._check_images(self._db)
        return self._db

    def _check_images(self, db: Dict[str, Tuple[Camera, Pose]]) -> None:
        """Images extracted elsewhere than the model expects: say so now, not at the first failed read."""
        sample = sorted(db)[:: max(1, len(db) // 20)]
        if sample and not any(self.image_file(n).is_file() for n in sample):
            raise DatasetError(f"none of the {len(db)} reference images of {self.reference_model_dir} is under "
                               f"{self.image_root} (looked for e.g. {self.image_file(sample[0])}); are the image "
                               "archives extracted there?")

    @property
    def db_names(self) -> List[str]:
        return sorted(self._reference())

    def _db_entry(self, name: str) -> Tuple[Camera, Pose]:
        try:
            return self._reference()[name]
        except KeyError:
            raise KeyError(f"{name!r} is not a database image of {self.reference_model_dir}") from None

    def db_image_path(self, name: str) -> Path:
        self._db_entry(name)
        return self.image_file(name)

    def db_camera(self, name: str) -> Camera:
        return self._db_entry(name)[0]

    def db_pose(self, name: str) -> Pose:
        return self._db_entry(name)[1]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"
