"""Cameras for photos people bring: intrinsics from EXIF when the file has them, otherwise unknown (the localizer
then estimates the focal length, see ``Localizer.localize(camera=None)``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

from ..imageio import open_header
from ..types import Camera, CameraError

EXIF_IFD = 0x8769
FOCAL_LENGTH = 0x920A  # mm
FOCAL_LENGTH_35MM = 0xA405  # mm, 35 mm-film equivalent
FOCAL_PLANE_X_RES = 0xA20E  # pixels per unit on the sensor
FOCAL_PLANE_UNIT = 0xA210  # 2 = inch, 3 = cm, 4 = mm, 5 = um
UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 1e-3}


def exif_focal_px(path: Union[str, Path], width: int, height: int) -> Tuple[Optional[float], str]:
    """(focal length in pixels of the stored image, how it was found) from EXIF; (None, reason) without one.

    In order: the 35 mm-equivalent focal length (f35 / 36 mm x the longer side, as COLMAP), the focal length in
    mm with the focal-plane resolution, and pycolmap's sensor database (camera make and model).
    """
    try:
        with open_header(path) as im:  # the size limit was checked when the image was read
            exif = im.getexif()
            sub = exif.get_ifd(EXIF_IFD)
            full_w = im.size[0]
    except Exception:
        return None, "no readable EXIF"
    scale = width / full_w if full_w else 1.0  # the image may have been read downscaled
    f35 = _num(sub.get(FOCAL_LENGTH_35MM))
    if f35 and f35 > 0:
        return f35 / 36.0 * max(width, height), f"EXIF 35mm-equivalent focal {f35:g} mm"
    fmm, xres, unit = _num(sub.get(FOCAL_LENGTH)), _num(sub.get(FOCAL_PLANE_X_RES)), sub.get(FOCAL_PLANE_UNIT)
    if fmm and fmm > 0 and xres and xres > 0 and unit in UNIT_MM:
        return fmm * xres / UNIT_MM[unit] * scale, f"EXIF focal {fmm:g} mm and focal-plane resolution"
    if fmm and fmm > 0:
        try:
            import pycolmap

            cam = pycolmap.infer_camera_from_image(str(path))
            if cam.has_prior_focal_length:
                return float(cam.params[0]) * scale, f"EXIF focal {fmm:g} mm and the camera's sensor size"
        except Exception:
            pass
    return None, "no focal length in EXIF"


def camera_for_image(path: Union[str, Path], width: int, height: int,
                     use_exif: bool = True) -> Tuple[Optional[Camera], str]:
    """``(camera, source)``: a SIMPLE_PINHOLE camera from EXIF when ``use_exif`` and the file has one, else
    ``(None, ...)``: unknown intrinsics, to be estimated by the localizer."""
    if use_exif:
        f, how = exif_focal_px(path, width, height)
        if f is not None:
            try:
                return Camera("SIMPLE_PINHOLE", width, height, np.array([f, width / 2.0, height / 2.0])), how
            except CameraError:
                pass  # nonsense EXIF: estimate instead
        return None, f"{how}: focal length estimated"
    return None, "EXIF ignored: focal length estimated"


def _num(v) -> Optional[float]:
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError, ZeroDivisionError):
        return None
