"""Bad input gets a clear error naming what is wrong (issue 11, imp_core/CLI part): camera parameters, huge
images (refused from the header, before decoding), corrupt map files, matcher/feature mismatches at configure."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from imp_core.cli import main
from imp_core.mapping import LocalizationMap, MapError
from imp_core.types import Camera, CameraError


@pytest.mark.parametrize("params, name", [
    ([-500, -500, 320, 240], "fx"),
    ([500, 0, 320, 240], "fy"),
    ([float("nan"), 500, 320, 240], "fx"),
    ([500, float("inf"), 320, 240], "fy"),
    ([500, 500, 5000, 240], "cx"),
    ([500, 500, 320, -900], "cy"),
])
def test_camera_rejects_impossible_parameters(params, name):
    with pytest.raises(CameraError, match=rf"\b{name}\b"):
        Camera("PINHOLE", 640, 480, params)


def test_camera_rejects_non_finite_distortion():
    with pytest.raises(CameraError, match=r"\bk1\b"):
        Camera("OPENCV", 640, 480, [500, 500, 320, 240, float("nan"), 0, 0, 0])
    with pytest.raises(CameraError, match=r"\bk\b"):
        Camera.from_tokens("SIMPLE_RADIAL 640 480 500 320 240 inf".split())
    assert issubclass(CameraError, ValueError)
    Camera("OPENCV", 640, 480, [500, 500, 320, 240, -0.1, 0.01, 0, 0])  # a real camera passes


def test_cli_names_the_bad_camera_parameter(tiny_map, tiny_world, tmp_path, capsys):
    n = tiny_world.query_names("day")[0]
    rc = main(["localize", "--map", str(tiny_map), "--image", str(tiny_world.root / "images" / n),
               "--camera", "PINHOLE 640 480 -500 -500 320 240", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "fx" in err, err
    assert "positive" in err, err


def _png_header_only_big(path, w, h, exif=None):
    """A valid gray PNG of w x h zeros, written row-chunk by row-chunk (small in memory and on disk); ``exif``: a
    PIL ``Image.Exif`` stored in an eXIf chunk."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" * (w + 1)
    body = b"".join(comp.compress(row * 500) for _ in range(h // 500)) + comp.flush()
    meta = b"" if exif is None else chunk(b"eXIf", exif.tobytes().removeprefix(b"Exif\x00\x00"))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + meta + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def test_huge_image_is_refused_from_its_header(tmp_path):
    """A 20000x20000 PNG is refused before decoding: the refusing process stays far below the 400 MB it would
    take just to hold the pixels (it took > 7 GB of RSS in `imp localize`)."""
    big = tmp_path / "big.png"
    _png_header_only_big(big, 20000, 20000)
    small = tmp_path / "small.png"
    _png_header_only_big(small, 500, 500)

    def run(path):
        code = ("import resource, sys\n"
                "from imp_core.imageio import read_image, ImageTooLargeError\n"
                "try:\n"
                f"    read_image({str(path)!r})\n"
                "    print('DECODED')\n"
                "except ImageTooLargeError as e:\n"
                "    print('REFUSED', e)\n"
                "print('RSS_MB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        return out.stdout + out.stderr, float(out.stdout.split("RSS_MB")[1])

    text, rss_big = run(big)
    assert "REFUSED" in text, text
    assert "20000x20000" in text, text
    text, rss_small = run(small)  # the same process decoding a 500x500 image: imports + a small decode
    assert "DECODED" in text, text
    assert rss_big < rss_small + 100, f"refusing the image took {rss_big:.0f} MB (a small image: {rss_small:.0f})"


def test_image_size_limit_is_configurable_and_downscale_is_explicit(tmp_path, tiny_world):
    import cv2

    from imp_core.imageio import ImageTooLargeError, read_image, read_image_scaled

    img = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    p = tmp_path / "a.jpg"
    cv2.imwrite(str(p), img)
    with pytest.raises(ImageTooLargeError, match="640x480"):
        read_image(p, max_pixels=100_000)
    small, scale = read_image_scaled(p, max_pixels=100_000, downscale=True)
    assert small.shape[:2] == (240, 320)
    assert scale == 0.5
    assert read_image(p).shape == (480, 640, 3)


def test_exif_of_a_huge_image_read_downscaled(tmp_path):
    """An image above Pillow's own decompression-bomb limit, read with downscale=True, keeps its EXIF focal length
    (Pillow refused to open it for the EXIF, and the focal length was estimated instead)."""
    from PIL import Image

    from imp_core.localization.cameras import camera_for_image

    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 50  # FocalLengthIn35mmFilm
    big = tmp_path / "big.png"
    _png_header_only_big(big, 20000, 20000, exif)
    cam, how = camera_for_image(big, 2500, 2500)
    assert cam is not None
    assert "35mm" in how
    assert cam.focal[0] == pytest.approx(50 / 36 * 2500)


def test_cli_refuses_large_image_with_limit_option(tiny_map, tiny_world, tmp_path, capsys):
    n = tiny_world.query_names("day")[0]
    rc = main(["localize", "--map", str(tiny_map), "--image", str(tiny_world.root / "images" / n),
               "--max-image-pixels", "1000", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "above the limit" in err, err


@pytest.fixture
def map_copy(tiny_map, tmp_path):
    d = tmp_path / "map"
    shutil.copytree(tiny_map, d, ignore=shutil.ignore_patterns("build"))
    return d


def test_corrupt_global_npz_is_a_map_error_naming_the_file(map_copy):
    g = map_copy / "global.npz"
    g.write_bytes(g.read_bytes()[:200])  # truncated zip
    with pytest.raises(MapError, match=str(g)):
        LocalizationMap.load(map_copy)
    g.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(MapError, match=str(g)):
        LocalizationMap.load(map_copy)


def test_random_bytes_features_h5_is_a_map_error_naming_the_file(map_copy):
    f = map_copy / "features.h5"
    orig = f.read_bytes()
    f.write_bytes(np.random.default_rng(1).bytes(f.stat().st_size))
    with pytest.raises(MapError, match=str(f)):
        LocalizationMap.load(map_copy)
    # a valid HDF5 superblock with random bytes after it
    f.write_bytes(orig[:512] + np.random.default_rng(2).bytes(len(orig) - 512))
    with pytest.raises(MapError, match=str(f)):
        LocalizationMap.load(map_copy)


def test_localizer_uses_the_maps_matcher_and_checks_it_at_configure(tiny_map):
    from imp_core.config import ConfigError
    from imp_core.localization import Localizer

    meta = json.loads((tiny_map / "map.json").read_text())
    assert meta["matcher"]["name"] == "nn"
    loc = Localizer({"map": str(tiny_map), "coarse": [{"name": "retrieval"}]})  # no matcher given
    assert loc.matcher.conf["name"] == "nn"
    assert (loc.matcher.conf["ratio_threshold"] == meta["matcher"][
        "ratio_threshold"])
    with pytest.raises(ConfigError, match="'lightglue' works with features"):
        Localizer({"map": str(tiny_map), "matcher": {"name": "lightglue"}})
