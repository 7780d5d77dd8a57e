"""Procedural textures for the synthetic street: facades, walls, road and pavement, poles.

Every texture is an ``HxWx4`` uint8 image: RGB albedo plus an emission channel (lit windows and signs at night).
Row 0 is the top of the surface; ``ppm`` is texture pixels per metre. Everything comes from a numpy Generator,
so the same seed gives the same texture.
"""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

GLYPHS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789&#"
FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_PLAIN,
    cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
)
MATERIALS = ("brick", "plaster", "stone", "panels", "siding")


def value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise in [0, 1] with features about ``cell`` pixels wide."""
    gh, gw = int(h / cell) + 3, int(w / cell) + 3
    grid = rng.random((gh, gw)).astype(np.float32)
    big = cv2.resize(grid, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    return np.clip(big[:h, :w], 0, 1)


def fractal_noise(rng: np.random.Generator, h: int, w: int, cells=(48.0, 12.0, 3.0),
                  amps=(0.5, 0.3, 0.2)) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    for c, a in zip(cells, amps):
        out += a * value_noise(rng, h, w, c)
    return out / sum(amps)


def random_color(rng: np.random.Generator, sat=(0.15, 0.6), val=(0.45, 0.9), hue=None) -> np.ndarray:
    hsv = np.array([[[rng.integers(0, 180) if hue is None else hue, rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]],
                   dtype=np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0


def _cell_jitter(rng: np.random.Generator, rows: np.ndarray, cols: np.ndarray, amp: float) -> np.ndarray:
    table = rng.uniform(-amp, amp, size=(4099,)).astype(np.float32)
    return table[(rows * 7919 + cols * 104729) % table.size]


def material(rng: np.random.Generator, kind: str, h: int, w: int, ppm: float, base: np.ndarray) -> np.ndarray:
    """An ``h x w x 3`` float albedo of the named material in the base colour."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tone = np.zeros((h, w), np.float32)
    joint = np.zeros((h, w), bool)
    if kind == "brick":
        bw, bh, m = rng.uniform(0.26, 0.34) * ppm, rng.uniform(0.09, 0.12) * ppm, max(1.0, 0.018 * ppm)
        row = np.floor(yy / bh).astype(np.int64)
        off = (row % 2) * bw / 2
        col = np.floor((xx + off) / bw).astype(np.int64)
        tone = _cell_jitter(rng, row, col, 0.18)
        joint = ((yy - row * bh) < m) | ((xx + off - col * bw) < m)
    elif kind == "stone":
        bw, bh, m = rng.uniform(0.6, 1.0) * ppm, rng.uniform(0.3, 0.45) * ppm, max(1.0, 0.025 * ppm)
        row = np.floor(yy / bh).astype(np.int64)
        off = _cell_jitter(rng, row, row * 0, 0.5) * bw + bw
        col = np.floor((xx + off) / bw).astype(np.int64)
        tone = _cell_jitter(rng, row, col, 0.14)
        joint = ((yy - row * bh) < m) | ((xx + off - col * bw) < m)
    elif kind == "panels":
        bw, bh, m = rng.uniform(1.0, 1.6) * ppm, rng.uniform(0.6, 1.0) * ppm, max(1.0, 0.03 * ppm)
        row, col = np.floor(yy / bh).astype(np.int64), np.floor(xx / bw).astype(np.int64)
        tone = _cell_jitter(rng, row, col, 0.1)
        joint = ((yy - row * bh) < m) | ((xx - col * bw) < m)
    elif kind == "siding":
        bh, m = rng.uniform(0.14, 0.22) * ppm, max(1.0, 0.02 * ppm)
        row = np.floor(yy / bh).astype(np.int64)
        tone = _cell_jitter(rng, row, row * 0, 0.08) + 0.12 * ((yy - row * bh) / bh - 0.5)
        joint = (yy - row * bh) < m
    elif kind != "plaster":
        raise ValueError(f"unknown material {kind!r}; known: {MATERIALS}")
    grain = fractal_noise(rng, h, w, cells=(6 * ppm, ppm, 0.08 * ppm), amps=(0.45, 0.3, 0.25)) - 0.5
    shade = 1.0 + tone + 0.45 * grain
    img = base[None, None, :] * shade[..., None]
    if joint.any():
        img[joint] = img[joint] * 0.4 + 0.3
    return img


def decals(img: np.ndarray, rng: np.random.Generator, ppm: float, density: float = 0.35) -> None:
    """Wall clutter that makes every facade unique: stains, plaques, vents, pipes, stickers, graffiti, ivy."""
    H, W = img.shape[:2]
    n = int(density * (W / ppm) * (H / ppm))
    for _ in range(n):
        x, y = rng.uniform(0, W), rng.uniform(0, H)
        kind = rng.integers(7)
        c = random_color(rng, sat=(0.0, 1.0), val=(0.05, 1.0))
        if kind == 0:  # stain
            ax = (int(rng.uniform(0.1, 0.6) * ppm), int(rng.uniform(0.1, 0.6) * ppm))
            over = img.copy()
            cv2.ellipse(over, (int(x), int(y)), ax, rng.uniform(0, 180), 0, 360, tuple(float(v) for v in c), -1,
                        cv2.LINE_AA)
            img[:] = img * 0.7 + over * 0.3
        elif kind == 1:  # plaque with text
            w_, h_ = rng.uniform(0.3, 0.8) * ppm, rng.uniform(0.15, 0.35) * ppm
            _rect(img, x, y, x + w_, y + h_, c)
            put_text(img, rng, random_word(rng, 2, 6), (int(x), int(y), int(x + w_), int(y + h_)), 1.0 - c)
        elif kind == 2:  # vent / AC unit with a grille
            w_, h_ = rng.uniform(0.3, 0.9) * ppm, rng.uniform(0.25, 0.6) * ppm
            _rect(img, x, y, x + w_, y + h_, c * 0.5 + 0.4)
            for yy in np.arange(y + 2, y + h_ - 1, max(2.0, 0.05 * ppm)):
                cv2.line(img, (int(x + 2), int(yy)), (int(x + w_ - 2), int(yy)), (0.15, 0.15, 0.15), 1)
        elif kind == 3:  # drain pipe with brackets
            t = max(2, int(0.07 * ppm))
            _rect(img, x, y, x + t, H, (0.35, 0.35, 0.38))
            for yy in np.arange(y, H, 1.5 * ppm):
                _rect(img, x - 2, yy, x + t + 2, yy + max(2, 0.04 * ppm), (0.2, 0.2, 0.2))
        elif kind == 4:  # sticker / small poster
            w_, h_ = rng.uniform(0.1, 0.4) * ppm, rng.uniform(0.1, 0.5) * ppm
            p = poster(rng, max(2, min(int(h_), H)), max(2, min(int(w_), W)))[:H, :W]  # never wider than the wall
            y0, x0 = max(0, int(min(y, H - p.shape[0]))), max(0, int(min(x, W - p.shape[1])))
            img[y0:y0 + p.shape[0], x0:x0 + p.shape[1]] = p
        elif kind == 5:  # graffiti tag near street level
            gy = H - rng.uniform(0.3, 2.0) * ppm
            put_text(img, rng, random_word(rng, 2, 6), (int(x), int(gy - 0.5 * ppm), int(x + 1.5 * ppm), int(gy)), c)
        else:  # ivy: a cluster of leaves
            leaves = rng.normal(0, 0.35 * ppm, size=(int(rng.integers(20, 60)), 2)) + (x, y)
            for lx, ly in leaves:
                g = (rng.uniform(0.05, 0.25), rng.uniform(0.3, 0.6), rng.uniform(0.05, 0.2))
                cv2.circle(img, (int(lx), int(ly)), max(1, int(rng.uniform(0.03, 0.07) * ppm)), g, -1)


def put_text(img: np.ndarray, rng: np.random.Generator, text: str, box: Tuple[int, int, int, int], color) -> None:
    """Draw ``text`` scaled to fit ``box`` (x0, y0, x1, y1) in pixels."""
    x0, y0, x1, y1 = box
    if x1 - x0 < 8 or y1 - y0 < 6:
        return
    font = FONTS[rng.integers(len(FONTS))]
    thick = int(rng.integers(1, 3))
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, thick)
    scale = min((x1 - x0) * 0.9 / max(tw, 1), (y1 - y0) * 0.75 / max(th, 1))
    (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    H, W = img.shape[:2]
    bx0, by0, bx1, by1 = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
    if bx1 <= bx0 or by1 <= by0:
        return
    org = (int(x0 + (x1 - x0 - tw) / 2) - bx0, int(y0 + (y1 - y0 + th) / 2) - by0)
    mask = np.zeros((by1 - by0, bx1 - bx0), np.uint8)  # OpenCV draws anti-aliased text on 8-bit images only
    cv2.putText(mask, text, org, font, scale, 255, thick, cv2.LINE_AA)
    alpha = (mask.astype(np.float32) / 255.0)[..., None]
    patch = img[by0:by1, bx0:bx1]
    patch[:] = patch * (1 - alpha) + np.asarray(color, np.float32) * alpha


def random_word(rng: np.random.Generator, lo=3, hi=9) -> str:
    return "".join(rng.choice(list(GLYPHS), size=int(rng.integers(lo, hi))))


def _rect(img, x0, y0, x1, y1, color, thick=-1) -> None:
    cv2.rectangle(img, (int(x0), int(y0)), (int(x1), int(y1)), tuple(float(c) for c in color), thick)


def window_interior(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Glass with something behind it: reflections, curtains, blinds or furniture."""
    kind = rng.integers(4)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dark = random_color(rng, sat=(0.1, 0.5), val=(0.08, 0.3))
    img = np.ones((h, w, 3), np.float32) * dark
    if kind == 0:  # sky reflection: diagonal gradient with a bright streak
        g = (xx / max(w, 1) + yy / max(h, 1)) / 2
        img += (0.35 * np.clip(1 - np.abs(g - rng.uniform(0.2, 0.8)) * 5, 0, 1))[..., None]
    elif kind == 1:  # curtains with folds
        cur = random_color(rng, sat=(0.3, 0.8), val=(0.4, 0.9))
        folds = 0.75 + 0.25 * np.sin(xx / max(1.0, w / rng.uniform(4, 9)) * np.pi)
        cover = xx < w * rng.uniform(0.3, 0.5)
        cover |= xx > w * rng.uniform(0.5, 0.7)
        img[cover] = (cur[None, :] * folds[cover][:, None])
    elif kind == 2:  # blinds
        col = random_color(rng, sat=(0.0, 0.2), val=(0.6, 0.95))
        pitch = max(2.0, h / rng.uniform(6, 14))
        down = yy < h * rng.uniform(0.3, 1.0)
        stripe = (yy % pitch) < pitch * 0.7
        img[down & stripe] = col
    else:  # furniture / lamp / plants
        for _ in range(int(rng.integers(2, 5))):
            c = random_color(rng, sat=(0.2, 0.9), val=(0.3, 1.0))
            if rng.random() < 0.5:
                cv2.circle(img, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), int(rng.uniform(0.1, 0.3) * w),
                           tuple(float(v) for v in c), -1)
            else:
                x0, y0 = rng.uniform(0, w * 0.7), rng.uniform(h * 0.3, h * 0.9)
                _rect(img, x0, y0, x0 + rng.uniform(0.2, 0.5) * w, h, c)
    return np.clip(img, 0, 1)


def poster(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = np.ones((h, w, 3), np.float32) * random_color(rng, sat=(0.3, 1.0), val=(0.5, 1.0))
    for _ in range(int(rng.integers(3, 7))):
        c = random_color(rng, sat=(0.2, 1.0), val=(0.1, 1.0))
        r = rng.random()
        if r < 0.35:
            cv2.circle(img, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), int(rng.uniform(0.1, 0.4) * min(h, w)),
                       tuple(float(v) for v in c), -1, cv2.LINE_AA)
        elif r < 0.6:
            pts = rng.uniform(0, 1, size=(3, 2)) * [w, h]
            cv2.fillPoly(img, [pts.astype(np.int32)], tuple(float(v) for v in c), cv2.LINE_AA)
        else:
            y0 = rng.uniform(0, h * 0.8)
            put_text(img, rng, random_word(rng, 2, 7), (0, int(y0), w, int(y0 + h * rng.uniform(0.12, 0.25))), c)
    return img


def facade(rng: np.random.Generator, width_m: float, height_m: float, ppm: float) -> Tuple[np.ndarray, dict]:
    """A building front: material, floors of framed windows, a ground floor with doors, shops, signs, posters.

    Returns the RGBA uint8 texture and a small style dict (material, colour) so side walls can match it.
    """
    W, H = int(round(width_m * ppm)), int(round(height_m * ppm))
    mat = MATERIALS[rng.integers(len(MATERIALS))]
    base = random_color(rng, sat=(0.1, 0.65), val=(0.4, 0.9))
    img = material(rng, mat, H, W, ppm, base)
    decals(img, rng, ppm)
    emis = np.zeros((H, W), np.float32)
    m = ppm  # metres -> pixels
    ground_h = rng.uniform(3.6, 4.4)
    floor_h = rng.uniform(2.9, 3.4)
    n_floors = max(1, int((height_m - ground_h - 0.5) / floor_h))
    ww = rng.uniform(0.9, 1.5)
    spacing = rng.uniform(ww + 0.7, ww + 1.8)
    n_cols = max(1, int((width_m - 0.6) / spacing))
    x_start = (width_m - n_cols * spacing) / 2 + (spacing - ww) / 2
    wh = rng.uniform(1.3, min(1.9, floor_h - 0.8))
    frame_col = random_color(rng, sat=(0.0, 0.5), val=(0.1, 1.0))
    frame_t = max(2, int(rng.uniform(0.06, 0.12) * m))
    mullion = rng.integers(3)  # none, vertical, cross
    shutters = rng.random() < 0.3
    shutter_col = random_color(rng, sat=(0.3, 0.8), val=(0.3, 0.8))
    band_col = np.clip(base * rng.uniform(0.6, 1.4), 0, 1)
    lit_p = rng.uniform(0.25, 0.6)
    # cornice bands between floors and at the roof line
    for k in range(n_floors + 1):
        z = ground_h + k * floor_h
        y = H - z * m
        _rect(img, 0, y - 0.12 * m, W, y + 0.12 * m, band_col)
        _rect(img, 0, y + 0.12 * m, W, y + 0.16 * m, band_col * 0.5)
    _rect(img, 0, 0, W, 0.35 * m, band_col * 0.8)
    # upper-floor windows
    for k in range(n_floors):
        z0 = ground_h + k * floor_h + 0.9
        for c in range(n_cols):
            if rng.random() < 0.06:
                continue  # a blind wall section here and there breaks the regularity
            x0, x1 = (x_start + c * spacing) * m, (x_start + c * spacing + ww) * m
            y1, y0 = H - z0 * m, H - (z0 + wh) * m
            ix0, iy0, ix1, iy1 = int(x0), int(y0), int(x1), int(y1)
            if ix1 - ix0 < 4 or iy1 - iy0 < 4:
                continue
            img[iy0:iy1, ix0:ix1] = window_interior(rng, iy1 - iy0, ix1 - ix0)
            if rng.random() < lit_p:
                emis[iy0:iy1, ix0:ix1] = rng.uniform(0.5, 1.0)
            _rect(img, ix0, iy0, ix1, iy1, frame_col, frame_t)
            if mullion >= 1:
                xm = (ix0 + ix1) // 2
                _rect(img, xm - frame_t // 2, iy0, xm + frame_t // 2, iy1, frame_col)
            if mullion == 2:
                ym = iy0 + (iy1 - iy0) // 3
                _rect(img, ix0, ym - frame_t // 2, ix1, ym + frame_t // 2, frame_col)
            _rect(img, ix0 - 0.08 * m, iy1, ix1 + 0.08 * m, iy1 + 0.1 * m, band_col)  # sill
            if shutters:
                sw = (ix1 - ix0) / 2
                for sx0 in (ix0 - sw - 2, ix1 + 2):
                    _rect(img, sx0, iy0, sx0 + sw, iy1, shutter_col)
                    for yy in np.arange(iy0, iy1, max(2.0, 0.08 * m)):
                        cv2.line(img, (int(sx0), int(yy)), (int(sx0 + sw), int(yy)),
                                 tuple(float(v) for v in shutter_col * 0.6), 1)
    # ground floor: bays with a door, a shop window with a sign, or a poster
    x = rng.uniform(0.2, 0.8)
    while x < width_m - 1.2:
        kind = rng.choice(["door", "shop", "shop", "poster"])
        if kind == "door":
            dw, dh = rng.uniform(0.9, 1.3), rng.uniform(2.1, 2.5)
            x0, x1, y0, y1 = x * m, (x + dw) * m, H - dh * m, H
            dcol = random_color(rng, sat=(0.2, 0.8), val=(0.15, 0.7))
            _rect(img, x0, y0, x1, y1, dcol)
            for p in range(int(rng.integers(2, 5))):  # panels
                py = y0 + (p + 0.2) * (y1 - y0) / 4.5
                _rect(img, x0 + 0.12 * m, py, x1 - 0.12 * m, py + (y1 - y0) / 6, dcol * 0.7, max(1, int(0.03 * m)))
            cv2.circle(img, (int(x1 - 0.15 * m), int(H - 1.05 * m)), max(1, int(0.04 * m)), (0.9, 0.8, 0.3), -1)
            _rect(img, x0 - 0.1 * m, y0 - 0.15 * m, x1 + 0.1 * m, y0, frame_col)
            plate = (int(x1 + 0.1 * m), int(H - 2.0 * m), int(x1 + 0.5 * m), int(H - 1.7 * m))
            _rect(img, *plate, (0.1, 0.2, 0.6))
            put_text(img, rng, str(int(rng.integers(1, 200))), plate, (1, 1, 1))
            x += dw + rng.uniform(0.4, 1.2)
        elif kind == "shop":
            sw = min(rng.uniform(1.8, 3.5), width_m - x - 0.3)
            if sw < 1.0:
                break
            x0, x1 = x * m, (x + sw) * m
            y0, y1 = H - 2.6 * m, H - 0.5 * m
            img[int(y0):int(y1), int(x0):int(x1)] = window_interior(rng, int(y1) - int(y0), int(x1) - int(x0))
            if rng.random() < 0.6:
                emis[int(y0):int(y1), int(x0):int(x1)] = rng.uniform(0.4, 0.9)
            _rect(img, x0, y0, x1, y1, frame_col, frame_t)
            sy0, sy1 = H - 3.4 * m, H - 2.75 * m
            scol = random_color(rng, sat=(0.4, 1.0), val=(0.3, 1.0))
            _rect(img, x0, sy0, x1, sy1, scol)
            put_text(img, rng, random_word(rng), (int(x0), int(sy0), int(x1), int(sy1)), 1.0 - scol)
            if rng.random() < 0.5:
                emis[int(sy0):int(sy1), int(x0):int(x1)] = 0.8
            x += sw + rng.uniform(0.3, 1.0)
        else:
            pw, ph = rng.uniform(0.5, 1.0), rng.uniform(0.7, 1.3)
            y0 = H - rng.uniform(1.2, 2.2) * m - ph * m
            x0 = x * m
            pimg = poster(rng, int(ph * m), int(pw * m))
            img[int(y0):int(y0) + pimg.shape[0], int(x0):int(x0) + pimg.shape[1]] = pimg
            x += pw + rng.uniform(0.3, 0.9)
    # weathering: low-frequency dirt and streaks below windows
    dirt = fractal_noise(rng, H, W, cells=(3 * m, 0.7 * m), amps=(0.7, 0.3))
    img *= (0.85 + 0.3 * dirt)[..., None]
    return _pack(img, emis), {"material": mat, "base": base.tolist()}


def wall(rng: np.random.Generator, width_m: float, height_m: float, ppm: float, style: dict) -> np.ndarray:
    """A plain side wall in a building's material, with a few posters and graffiti-like marks."""
    W, H = max(2, int(round(width_m * ppm))), max(2, int(round(height_m * ppm)))
    img = material(rng, style["material"], H, W, ppm, np.asarray(style["base"], np.float32) * 0.9)
    decals(img, rng, ppm)
    for _ in range(int(rng.integers(0, 3))):
        c = random_color(rng, sat=(0.5, 1.0), val=(0.3, 1.0))
        y = H - rng.uniform(0.5, 2.0) * ppm
        put_text(img, rng, random_word(rng, 2, 5), (0, int(y - 0.6 * ppm), W, int(y)), c)
    return _pack(img, np.zeros((H, W), np.float32))


def ground(rng: np.random.Generator, x0: float, x1: float, y0: float, y1: float, road_half: float, ppm: float):
    """Road (asphalt, lane markings, crossings, manholes, painted words) between pavements of paving tiles.

    The texture covers ``x in [x0, x1]`` (columns) and ``y in [y0, y1]`` (rows, row 0 at ``y1``).
    """
    W, H = int(round((x1 - x0) * ppm)), int(round((y1 - y0) * ppm))
    xs = x0 + (np.arange(W, dtype=np.float32) + 0.5) / ppm
    ys = y1 - (np.arange(H, dtype=np.float32) + 0.5) / ppm
    X, Y = np.meshgrid(xs, ys)
    asphalt = 0.22 + 0.1 * fractal_noise(rng, H, W, cells=(8 * ppm, ppm, 0.06 * ppm), amps=(0.4, 0.3, 0.3))
    img = np.repeat(asphalt[..., None], 3, axis=2).astype(np.float32)
    # pavement: jittered tiles
    side = np.abs(Y) > road_half
    tile = rng.uniform(0.35, 0.5)
    r, c = np.floor(Y / tile).astype(np.int64), np.floor(X / tile).astype(np.int64)
    pave = 0.55 + _cell_jitter(rng, r + 1000, c + 1000, 0.12)
    joint = ((Y / tile) % 1 < 0.05) | ((X / tile) % 1 < 0.05)
    pave = np.where(joint, 0.3, pave) * (0.9 + 0.2 * fractal_noise(rng, H, W, cells=(2 * ppm, 0.1 * ppm)))
    pcol = np.array([1.0, 0.95, 0.88], np.float32) * rng.uniform(0.8, 1.1)
    img[side] = pave[side][:, None] * pcol
    curb = np.abs(np.abs(Y) - road_half) < 0.15
    img[curb] = 0.7
    # lane markings: dashed centre line and edge lines
    centre = (np.abs(Y) < 0.07) & ((X % 4.0) < 2.2)
    edge = np.abs(np.abs(Y) - (road_half - 0.3)) < 0.06
    img[centre | edge] = (0.9, 0.9, 0.85)
    out = (img * 255).astype(np.float32) / 255.0

    def to_px(x, y):
        return int((x - x0) * ppm), int((y1 - y) * ppm)

    # zebra crossings, manholes, repair patches, painted words, cracks
    for xc in np.arange(x0 + rng.uniform(8, 16), x1 - 4, rng.uniform(22, 30)):
        for k, ys_ in enumerate(np.arange(-road_half + 0.4, road_half - 0.4, 0.9)):
            p0, p1 = to_px(xc, ys_), to_px(xc + 2.5, ys_ + 0.5)
            _rect(out, min(p0[0], p1[0]), min(p0[1], p1[1]), max(p0[0], p1[0]), max(p0[1], p1[1]), (0.92, 0.92, 0.9))
    n_marks = int((x1 - x0) / 3)
    for _ in range(n_marks):
        kind = rng.integers(4)
        x, y = rng.uniform(x0, x1), rng.uniform(-road_half + 0.5, road_half - 0.5)
        px = to_px(x, y)
        if kind == 0:
            rad = int(0.3 * ppm)
            cv2.circle(out, px, rad, (0.15, 0.15, 0.16), -1)
            cv2.circle(out, px, rad, (0.4, 0.4, 0.4), max(1, int(0.04 * ppm)))
            for k in range(-2, 3):
                cv2.line(out, (px[0] - rad, px[1] + k * rad // 3), (px[0] + rad, px[1] + k * rad // 3), (0.35,) * 3, 1)
        elif kind == 1:
            w_, h_ = rng.uniform(0.5, 2.5) * ppm, rng.uniform(0.5, 1.5) * ppm
            _rect(out, px[0], px[1], px[0] + w_, px[1] + h_, (float(rng.uniform(0.12, 0.32)),) * 3)
        elif kind == 2:
            put_text(out, rng, random_word(rng, 3, 5), (px[0], px[1], px[0] + int(2.0 * ppm), px[1] + int(0.8 * ppm)),
                     (0.85, 0.85, 0.8) if rng.random() < 0.7 else (0.9, 0.8, 0.2))
        else:
            pts = np.cumsum(rng.normal(0, 0.15 * ppm, size=(8, 2)), axis=0) + px
            cv2.polylines(out, [pts.astype(np.int32)], False, (0.1, 0.1, 0.1), 1, cv2.LINE_AA)
    return _pack(out, np.zeros((H, W), np.float32))


def pole(rng: np.random.Generator, width_m: float, height_m: float, ppm: float) -> np.ndarray:
    """A painted metal pole with a few stickers."""
    W, H = max(2, int(round(width_m * ppm))), max(2, int(round(height_m * ppm)))
    col = random_color(rng, sat=(0.0, 0.4), val=(0.2, 0.5))
    shade = 0.8 + 0.4 * fractal_noise(rng, H, W, cells=(ppm, 0.1 * ppm))
    img = np.ones((H, W, 3), np.float32) * col * shade[..., None]
    for _ in range(int(rng.integers(1, 4))):
        y = int(rng.uniform(0.8, 2.2) * ppm)
        _rect(img, 0, y, W, y + int(rng.uniform(0.1, 0.3) * ppm), random_color(rng, sat=(0.5, 1), val=(0.5, 1)))
    return _pack(img, np.zeros((H, W), np.float32))


def _pack(rgb: np.ndarray, emission: np.ndarray) -> np.ndarray:
    rgba = np.concatenate([np.clip(rgb, 0, 1), np.clip(emission, 0, 1)[..., None]], axis=2)
    return (rgba * 255 + 0.5).astype(np.uint8)
