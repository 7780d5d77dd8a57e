"""Open a dataset directory by detecting its layout: the synthetic world, Aachen Day-Night v1.1, RobotCar Seasons."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Tuple

from . import aachen, robotcar, synthetic
from .base import DatasetError, LocalizationDataset


def _detectors() -> List[Tuple[str, Callable[[Path], bool], Callable[[Path], LocalizationDataset], str]]:
    return [
        ("synthetic", synthetic.is_synthetic_world, synthetic.SyntheticWorld, "world.json"),
        ("aachen_v1.1", aachen.is_aachen, aachen.AachenDataset,
         "3D-models/aachen_v_1_1/ + images_upright/ or images/images_upright/"),
        ("robotcar", robotcar.is_robotcar, robotcar.RobotCarDataset, "intrinsics/*_intrinsics.txt + images/"),
    ]


def _diagnoses(root: Path) -> List[str]:
    return [m for m in (aachen.diagnose(root), robotcar.diagnose(root)) if m]


def open_dataset(path, **kwargs) -> LocalizationDataset:
    """Open a dataset directory, detecting its layout (synthetic world, Aachen Day-Night v1.1, RobotCar Seasons).
    ``kwargs`` go to the layout's reader (e.g. ``split``/``reference`` for RobotCar). A directory that is almost a
    known layout gets an error naming what is missing and where it was looked for."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"dataset directory {root} does not exist")
    tried = []
    for kind, detect, cls, marker in _detectors():
        if detect(root):
            return cls(root, **kwargs)
        tried.append(f"{kind} ({marker})")
    near = _diagnoses(root)
    if near:
        raise DatasetError(f"{root}: " + "; ".join(near))
    raise DatasetError(f"{root} is not a known dataset layout; looked for: " + "; ".join(tried))
