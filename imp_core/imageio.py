"""Reading images from disk with clear errors (RGB uint8, EXIF orientation ignored like COLMAP)."""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np


def read_image(path: Union[str, Path], grayscale: bool = False) -> np.ndarray:
    import cv2

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    flags = (cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION
    img = cv2.imread(str(path), flags)
    if img is None:
        raise ValueError(f"cannot decode image (corrupt or unsupported format): {path}")
    return img if grayscale else img[:, :, ::-1].copy()
