"""Reading images from disk with clear errors (RGB uint8, EXIF orientation ignored like COLMAP).

The size in the file header is checked *before* decoding: a 20000x20000 PNG would otherwise take gigabytes just
to be refused later. Above ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`, or the ``IMP_MAX_IMAGE_PIXELS``
environment variable) the image is refused with :class:`ImageTooLargeError`, unless ``downscale=True`` asks for
it to be decoded at a reduced size instead (JPEG decodes directly at 1/2, 1/4 or 1/8 scale).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Tuple, Union

import numpy as np

if TYPE_CHECKING:
    import PIL.Image

from .errors import ImpError

#: 40 megapixels: larger than any phone or DSLR photo people localize, far below what exhausts memory
DEFAULT_MAX_PIXELS = 40_000_000


class ImageTooLargeError(ImpError, ValueError):
    """The image header announces more pixels than the configured limit."""


def default_max_pixels() -> int:
    env = os.environ.get("IMP_MAX_IMAGE_PIXELS")
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise ValueError(f"IMP_MAX_IMAGE_PIXELS must be a number of pixels, got {env!r}") from None
    return DEFAULT_MAX_PIXELS


@contextmanager
def open_header(path: Union[str, Path]) -> Iterator["PIL.Image.Image"]:
    """The PIL image of ``path``, opened lazily (header and EXIF read, pixels not decoded). Pillow's own
    decompression-bomb limit is off meanwhile: it refuses to even open huge images, and imp checks the size
    against its own limit (:func:`read_image_scaled`)."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(str(path)) as im:
            yield im
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def image_size(path: Union[str, Path]) -> Optional[Tuple[int, int]]:
    """(width, height) from the file header without decoding the pixels; None when the header is unreadable
    (the decoder then reports the corrupt file)."""
    try:
        with open_header(path) as im:
            return int(im.size[0]), int(im.size[1])
    except Exception:  # PIL cannot identify it: leave the error to the decoder
        return None


def read_image(path: Union[str, Path], grayscale: bool = False, max_pixels: Optional[int] = None) -> np.ndarray:
    """RGB (or gray) uint8 image; refuses images above ``max_pixels`` before decoding them."""
    return read_image_scaled(path, grayscale=grayscale, max_pixels=max_pixels, downscale=False)[0]


def read_image_scaled(path: Union[str, Path], grayscale: bool = False, max_pixels: Optional[int] = None,
                      downscale: bool = False) -> Tuple[np.ndarray, float]:
    """(image, scale): ``scale`` < 1 when ``downscale`` shrank an image above ``max_pixels`` (multiply a camera
    given for the full-size image by it: ``camera.scaled(w_new / w, h_new / h)``)."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    limit = default_max_pixels() if max_pixels is None else int(max_pixels)
    size = image_size(path)
    reduce = 1
    if size is not None and limit > 0 and size[0] * size[1] > limit:
        if not downscale:
            raise ImageTooLargeError(
                f"image {path} is {size[0]}x{size[1]} ({size[0] * size[1] / 1e6:.1f} MP), above the limit of "
                f"{limit / 1e6:.1f} MP; downscale it, raise the limit (--max-image-pixels / IMP_MAX_IMAGE_PIXELS) "
                "or ask for downscaling (--downscale-large)")
        while size[0] * size[1] / (reduce * reduce) > limit:
            reduce *= 2
    flags = (cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION
    if reduce > 1:
        if reduce <= 8:  # libjpeg decodes at the reduced size; other formats are resized by OpenCV
            flags = {2: cv2.IMREAD_REDUCED_GRAYSCALE_2 if grayscale else cv2.IMREAD_REDUCED_COLOR_2,
                     4: cv2.IMREAD_REDUCED_GRAYSCALE_4 if grayscale else cv2.IMREAD_REDUCED_COLOR_4,
                     8: cv2.IMREAD_REDUCED_GRAYSCALE_8 if grayscale else cv2.IMREAD_REDUCED_COLOR_8}[reduce]
            flags |= cv2.IMREAD_IGNORE_ORIENTATION
        else:
            assert size is not None  # reduce > 1 only comes from a known size
            return _read_pil_reduced(path, grayscale, reduce, size)
    img = cv2.imread(str(path), flags)
    if img is None:
        raise ValueError(f"cannot decode image (corrupt or unsupported format): {path}")
    scale = 1.0 if size is None or reduce == 1 else img.shape[1] / size[0]
    return (img if grayscale else img[:, :, ::-1].copy()), scale


def _read_pil_reduced(path: Path, grayscale: bool, reduce: int, size: Tuple[int, int]) -> Tuple[np.ndarray, float]:
    try:
        with open_header(path) as im:  # the caller asked for this image reduced
            im.draft("L" if grayscale else "RGB", (size[0] // reduce, size[1] // reduce))
            im = im.convert("L" if grayscale else "RGB")
            im = im.reduce(max(1, round(im.size[0] / (size[0] / reduce))))
            arr = np.asarray(im, dtype=np.uint8).copy()
    except Exception as e:
        raise ValueError(f"cannot decode image (corrupt or unsupported format): {path}: {e}") from e
    return arr, arr.shape[1] / size[0]
