"""Matcher training pairs from real photographs: random homographies and photometric changes (day -> night).

No MegaDepth is needed: any folder of photographs gives pairs with exact ground truth. For each photo and pair,
image 0 is a mildly warped crop and image 1 a strongly warped one (rotation, scale, perspective), each with its own
photometric change; one pair in ``night_fraction`` turns image 1 into a night shot (dark, gamma, tint, sensor noise,
blur, lit spots). Ground truth comes from the homography through the same nearest-keypoint / cycle-check /
one-to-one rule as the depth-based dumps (``correspondences.match_projections``), written with
``dump.write_pairs`` in the ``imp-matcher-dump`` format, so `imp train-matcher` reads it like any other dump.

Photo sources used by the shipped presets (Debian packages; see docs/models/): ``/usr/share/backgrounds`` and
``/usr/share/wallpapers`` (ukui-wallpapers, lomiri-wallpapers, plasma-workspace-wallpapers).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Container, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from ..config import merge
from ..features.base import create_extractor
from ..imageio import image_size, read_image
from .correspondences import match_projections
from .dump import DumpWriter

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")

default_conf: Dict[str, Any] = {
    "features": {"name": "xfeat", "max_keypoints": 1024, "device": "cpu"},
    "size": (640, 480),  # (w, h) of both images
    "photo_max_side": 1280,  # photos are downscaled to this first
    "pairs_per_photo": 40,
    "max_photos": None,  # use the first N photos (sorted paths)
    "max_rotation_deg": 35.0,
    "scale_range": (0.6, 1.5),
    "perspective": 0.25,  # corner displacement as a fraction of the image size
    "night_fraction": 0.4,
    "inlier_px": 3.0,
    "outlier_px": 8.0,
    "min_matches": 21,
    "seed": 0,
}


def find_photos(roots: Sequence[str], min_side: int = 480) -> List[Path]:
    """Image files under ``roots`` (recursively, sorted, ``screenshot*`` skipped), at least ``min_side`` px."""
    out: List[Path] = []
    for root in roots:
        r = Path(root).expanduser()
        if not r.exists():
            raise FileNotFoundError(f"photo folder not found: {r}")
        files = [r] if r.is_file() else sorted(p for p in r.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
        for p in _one_resolution_each(files):
            if p.stem.lower().startswith("screenshot"):
                continue
            size = image_size(p)  # header only
            if size is not None and min(size) >= min_side:
                out.append(p)
    return out


def _one_resolution_each(files: Sequence[Path]) -> List[Path]:
    """Wallpaper packages ship one picture in many resolutions (``images/1920x1080.jpg``, ``images/640x480.jpg``):
    keep the largest landscape one per folder."""
    groups: Dict[Path, List[Path]] = {}
    out: List[Path] = []
    for p in files:
        if re.fullmatch(r"\d+x\d+", p.stem):
            groups.setdefault(p.parent, []).append(p)
        else:
            out.append(p)
    for members in groups.values():
        dims = [tuple(int(v) for v in p.stem.split("x")) for p in members]
        best = max(range(len(members)), key=lambda i: (dims[i][0] >= dims[i][1], dims[i][0] * dims[i][1]))
        out.append(members[best])
    return sorted(out)


def _load_photo(path: Path, max_side: int) -> np.ndarray:
    img = read_image(path)
    s = max_side / max(img.shape[:2])
    return cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else img


def random_homography(rng: np.random.Generator, photo_wh: Tuple[int, int], out_wh: Tuple[int, int],
                      max_rot_deg: float, scale_range: Tuple[float, float], perspective: float) -> np.ndarray:
    """H mapping output pixels -> photo pixels: a crop of the photo, rotated, scaled and perspective-distorted."""
    (pw, ph), (w, h) = photo_wh, out_wh
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    jitter = rng.uniform(-perspective, perspective, (4, 2)) * [w, h]
    src = corners + jitter
    scale = rng.uniform(*scale_range) * min(pw / w, ph / h) * 0.9
    ang = np.deg2rad(rng.uniform(-max_rot_deg, max_rot_deg))
    R = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    c = src.mean(0)
    dst = (src - c) @ R.T * scale
    # place the warped quad inside the photo where possible
    lo, hi = -dst.min(0), np.array([pw, ph]) - dst.max(0)
    centre = np.where(hi > lo, rng.uniform(np.minimum(lo, hi), np.maximum(lo, hi)), (lo + hi) / 2)
    dst = dst + centre
    return cv2.getPerspectiveTransform(corners.astype(np.float32), dst.astype(np.float32)).astype(np.float64)


def photometric(img: np.ndarray, rng: np.random.Generator, night: bool) -> np.ndarray:
    """Brightness / contrast / colour jitter, and for ``night``: dark + gamma + tint + lit spots + noise + blur."""
    x: np.ndarray = img.astype(np.float32) / 255.0
    x = x * rng.uniform(0.7, 1.3) + rng.uniform(-0.1, 0.1)
    x = x * rng.uniform(0.85, 1.15, 3)[None, None]
    if night:
        x = np.clip(x, 0, 1) ** rng.uniform(1.4, 2.4) * rng.uniform(0.12, 0.4)
        x = x * np.array([1.0, rng.uniform(0.8, 1.0), rng.uniform(0.5, 0.9)])[None, None]  # sodium-lamp tint
        h, w = x.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        for _ in range(int(rng.integers(0, 4))):  # street lamps / lit windows
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.25) * w
            x = x + rng.uniform(0.1, 0.5) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
    x = np.clip(x, 0, 1) * 255.0
    if night or rng.random() < 0.3:
        k = int(rng.choice([1, 3, 5])) if night else 3
        if k > 1:
            x = cv2.GaussianBlur(x, (k, k), 0)
        x = x + rng.normal(0, rng.uniform(1.0, 6.0 if night else 3.0), x.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


def _warp(photo: np.ndarray, H: np.ndarray, wh: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Output image and its valid mask (pixels that came from inside the photo)."""
    img = cv2.warpPerspective(photo, H, wh, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT)
    valid = cv2.warpPerspective(np.ones(photo.shape[:2], np.uint8), H, wh,
                                flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderValue=0)
    return img, cv2.erode(valid, np.ones((5, 5), np.uint8)) > 0


def _project(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.c_[pts, np.ones(len(pts))] @ H.T
    return p[:, :2] / p[:, 2:3]


def _inside(uv: np.ndarray, valid: np.ndarray) -> np.ndarray:
    h, w = valid.shape
    xy = np.round(uv).astype(np.int64)
    ok = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    out = np.zeros(len(uv), bool)
    out[ok] = valid[xy[ok, 1], xy[ok, 0]]
    return out


def homography_pairs(photos: Sequence[Path], conf: Mapping[str, Any], skip: Container[str] = ()
                     ) -> Iterator[Dict[str, Any]]:
    """Yield pairs ``{key, name0, name1, image0, image1, H_0to1, valid0, valid1}`` (deterministic in
    ``conf['seed']``); pairs whose ``key`` is in ``skip`` are not generated."""
    w, h = (int(v) for v in conf["size"])
    wh = (w, h)
    n = int(conf["pairs_per_photo"])
    for k, path in enumerate(photos):
        todo = [j for j in range(n) if f"{k}/{j}" not in skip]
        if not todo:
            continue
        photo = _load_photo(path, int(conf["photo_max_side"]))
        pwh = (photo.shape[1], photo.shape[0])
        for j in todo:
            rng = np.random.default_rng([int(conf["seed"]), k, j])
            H0 = random_homography(rng, pwh, wh, 10.0, (0.8, 1.2), 0.05)
            H1 = random_homography(rng, pwh, wh, float(conf["max_rotation_deg"]), tuple(conf["scale_range"]),
                                   float(conf["perspective"]))
            img0, valid0 = _warp(photo, H0, wh)
            img1, valid1 = _warp(photo, H1, wh)
            night = bool(rng.random() < float(conf["night_fraction"]))
            stem = f"h/{k:04d}_{path.stem[:40]}/{j:03d}"
            yield {"key": f"{k}/{j}", "name0": f"{stem}_0", "name1": f"{stem}_1{'_night' if night else ''}",
                   "image0": photometric(img0, rng, False), "image1": photometric(img1, rng, night),
                   "H_0to1": np.linalg.inv(H1) @ H0, "valid0": valid0, "valid1": valid1}


def photo_ids(photos: Sequence[Path], roots: Sequence[str]) -> List[str]:
    """Each photo's path relative to the root it was found under (the root's own name for a file root): what a
    dump records of its inputs, the same wherever the folders are mounted."""
    bases = [Path(r).expanduser() for r in roots]
    out = []
    for p in photos:
        rel = next((str(p.relative_to(b)) for b in bases if b.is_dir() and p.is_relative_to(b)), None)
        out.append(rel if rel is not None else p.name)
    return out


def dump_homography(photo_roots: Sequence[str], out, conf: Optional[Mapping[str, Any]] = None,
                    progress: bool = True, resume: bool = True) -> Dict[str, int]:
    """Write an ``imp-matcher-dump`` of homography pairs from the photos under ``photo_roots`` (``resume``: append
    to an interrupted dump of the same conf, skipping the pairs it already processed)."""

    conf = merge(default_conf, conf, where="homography dump")
    photos = find_photos(photo_roots)[: conf["max_photos"]]
    if not photos:
        raise FileNotFoundError(f"no photos (jpg/png, >= 480 px) under {list(photo_roots)}")
    extractor = create_extractor(conf["features"])
    total = len(photos) * int(conf["pairs_per_photo"])
    tried = kept = 0
    eye = np.eye(3)
    with DumpWriter(out, conf["features"], f"homography:{len(photos)} photos", resume=resume,
                    inputs=photo_ids(photos, photo_roots)) as dw:
        for pair in tqdm(homography_pairs(photos, conf, skip=dw.tried), total=total, desc="homography pairs",
                         disable=not progress, initial=len(dw.tried)):
            tried += 1
            dw.mark_tried(pair["key"])
            f0, f1 = extractor.extract(pair["image0"]), extractor.extract(pair["image1"])
            H = pair["H_0to1"]
            uv01, uv10 = _project(H, f0.keypoints), _project(np.linalg.inv(H), f1.keypoints)
            known0, known1 = _inside(f0.keypoints, pair["valid0"]), _inside(f1.keypoints, pair["valid1"])
            vis0, vis1 = known0 & _inside(uv01, pair["valid1"]), known1 & _inside(uv10, pair["valid0"])
            m, l0, l1 = match_projections(f0.keypoints, f1.keypoints, uv01, known0, vis0, uv10, known1, vis1,
                                          conf["inlier_px"], conf["outlier_px"])
            if len(m) < int(conf["min_matches"]):
                continue
            dw.add_features(pair["name0"], f0)
            dw.add_features(pair["name1"], f1)
            dw.add_pair(pair["name0"], pair["name1"], m, l0, l1, eye, eye, np.eye(4), extra={"H_0to1": H})
            kept += 1
        kept = dw.n_pairs
    return {"images": 2 * kept, "pairs_tried": tried, "pairs": kept, "photos": len(photos)}
