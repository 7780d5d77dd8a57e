"""Ray casting of the synthetic street with numpy: exact depth and instance ids, textured and lit colour.

Each quad is intersected only inside the image bounding box of its (near-clipped) projection. Rays go through
OpenCV pixel centres with ``K`` from ``Camera.K``, so depth at pixel (u, v) back-projects exactly onto the surface.
Colour uses trilinear mip-mapped texture lookups and supersampling (box-filtered down) against aliasing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple

import cv2
import numpy as np

from ..types import Pose
from .scene import Scene

NEAR = 0.05


@dataclass
class Lighting:
    """Appearance of one capture: illumination, sky, sensor and optics."""

    ambient: float = 0.45
    sun: float = 0.6
    sun_dir: Tuple[float, float, float] = (0.4, -0.5, 0.75)  # towards the sun, world frame
    tint: Tuple[float, float, float] = (1.0, 1.0, 1.0)  # white balance / colour cast
    sky_horizon: Tuple[float, float, float] = (0.85, 0.9, 0.95)
    sky_zenith: Tuple[float, float, float] = (0.35, 0.55, 0.9)
    exposure: float = 1.0
    gamma: float = 1.0
    lamps: float = 0.0  # street-light intensity (0 = off)
    lamp_color: Tuple[float, float, float] = (1.0, 0.75, 0.4)
    emission: float = 0.0  # lit windows and signs
    emission_color: Tuple[float, float, float] = (1.0, 0.85, 0.55)
    glare: float = 0.0  # halo around visible lamp heads
    noise: float = 0.0  # read noise sigma (0..1 scale)
    shot_noise: float = 0.0
    motion_blur: float = 0.0  # kernel length in pixels
    motion_angle: float = 0.0  # degrees
    defocus: float = 0.0  # gaussian sigma in pixels
    # city preset (all off by default: the default and tiny worlds render exactly as before)
    window_keep: float = 1.0  # share of lit window cells (1.5 m) left on: another set of lit windows per drive
    window_seed: int = 0  # which cells (one value per drive)
    fog: float = 0.0  # extinction per metre (visibility ~ 3 / fog)
    fog_color: Tuple[float, float, float] = (0.7, 0.72, 0.75)
    wet: float = 0.0  # mirror-like reflections on the road (night rain)
    headlights: int = 0  # oncoming headlights: halos with horizontal streaks near the horizon
    rain: float = 0.0  # density of rain streaks
    seed: int = 0
    extra: dict = field(default_factory=dict)


def _near_clip(pts: np.ndarray) -> np.ndarray:
    """Clip a convex polygon (camera coordinates) to z >= NEAR (Sutherland-Hodgman, one plane)."""
    out = []
    n = len(pts)
    for i in range(n):
        a, b = pts[i], pts[(i + 1) % n]
        ina, inb = a[2] >= NEAR, b[2] >= NEAR
        if ina:
            out.append(a)
        if ina != inb:
            s = (NEAR - a[2]) / (b[2] - a[2])
            out.append(a + s * (b - a))
    return np.asarray(out).reshape(-1, 3)


class Renderer:
    """Renders a ``Scene``; textures get a mip pyramid once."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.mips: List[List[np.ndarray]] = []
        for tex in scene.textures:
            levels = [tex]
            while min(levels[-1].shape[:2]) > 8 and len(levels) < 8:
                t = levels[-1]
                h, w = t.shape[:2]
                levels.append(cv2.resize(t, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA))
            self.mips.append(levels)
        self.instance_of = np.array([q.instance for q in scene.quads] + [0], dtype=np.int32)  # [-1] -> sky
        # road and ground planes (wet reflections), indexed like instance_of
        self.is_ground = np.array([abs(q.normal[2]) for q in scene.quads] + [0.0], np.float32) > 0.9

    # ---------------------------------------------------------------- geometry
    def geometry(self, K: np.ndarray, width: int, height: int, pose: Pose):
        """Per pixel: depth z (inf = sky), quad index (-1 = sky), local quad coordinates a, b (metres)."""
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        xn = ((np.arange(width) - cx) / fx).astype(np.float32)
        yn = ((np.arange(height) - cy) / fy).astype(np.float32)
        z = np.full((height, width), np.inf, np.float32)
        qid = np.full((height, width), -1, np.int32)
        A = np.zeros((height, width), np.float32)
        B = np.zeros((height, width), np.float32)
        boxes = {}
        for i, q in enumerate(self.scene.quads):
            pc = pose.transform(q.corners)
            poly = _near_clip(pc)
            if len(poly) < 3:
                continue
            us = fx * poly[:, 0] / poly[:, 2] + cx
            vs = fy * poly[:, 1] / poly[:, 2] + cy
            u0, u1 = max(0, int(np.floor(us.min())) - 1), min(width, int(np.ceil(us.max())) + 2)
            v0, v1 = max(0, int(np.floor(vs.min())) - 1), min(height, int(np.ceil(vs.max())) + 2)
            if u0 >= u1 or v0 >= v1:
                continue
            n_c, u_c, v_c = pose.R @ q.normal, pose.R @ q.u, pose.R @ q.v
            o_c = pose.R @ q.origin + pose.t
            k = float(n_c @ o_c)
            if abs(k) < 1e-9:
                continue  # plane through the camera centre: seen edge-on
            xs, ys = xn[u0:u1][None, :], yn[v0:v1][:, None]
            denom = n_c[0] * xs + n_c[1] * ys + n_c[2]
            with np.errstate(divide="ignore", invalid="ignore"):
                zz = np.float32(k) / denom
            a = zz * (u_c[0] * xs + u_c[1] * ys + u_c[2]) - np.float32(u_c @ o_c)
            b = zz * (v_c[0] * xs + v_c[1] * ys + v_c[2]) - np.float32(v_c @ o_c)
            zb = z[v0:v1, u0:u1]
            hit = (zz > NEAR) & (zz < zb) & (a >= 0) & (a <= q.width) & (b >= 0) & (b <= q.height)
            if not hit.any():
                continue
            zb[hit] = zz[hit]
            qid[v0:v1, u0:u1][hit] = i
            A[v0:v1, u0:u1][hit] = a[hit]
            B[v0:v1, u0:u1][hit] = b[hit]
            boxes[i] = (v0, v1, u0, u1)
        return z, qid, A, B, boxes

    def depth_and_mask(self, K: np.ndarray, width: int, height: int, pose: Pose) -> Tuple[np.ndarray, np.ndarray]:
        """Depth (z in metres, 0 where nothing is hit) and instance ids at pixel centres."""
        z, qid, _, _, _ = self.geometry(K, width, height, pose)
        return np.where(np.isfinite(z), z, 0).astype(np.float32), self.instance_of[qid]

    # ---------------------------------------------------------------- colour
    def _albedo(self, K, z, qid, A, B, boxes) -> np.ndarray:
        """RGBA (albedo + emission) in [0, 1] by trilinear mip-mapped lookup."""
        h, w = z.shape
        out = np.zeros((h, w, 4), np.float32)
        f = float(np.sqrt(K[0, 0] * K[1, 1]))
        for i, (v0, v1, u0, u1) in boxes.items():
            sel = qid[v0:v1, u0:u1] == i
            if not sel.any():
                continue
            q = self.scene.quads[i]
            a, b, zz = A[v0:v1, u0:u1][sel], B[v0:v1, u0:u1][sel], z[v0:v1, u0:u1][sel]
            # texel footprint: ppm * z / f, stretched by the viewing obliqueness
            rows, cols = np.nonzero(sel)
            xs = (cols + u0 - K[0, 2]) / K[0, 0]
            ys = (rows + v0 - K[1, 2]) / K[1, 1]
            n_c = self._R @ q.normal
            cos = np.abs(n_c[0] * xs + n_c[1] * ys + n_c[2]) / np.sqrt(xs * xs + ys * ys + 1)
            level = np.log2(np.maximum(q.ppm * zz / f / np.sqrt(np.maximum(cos, 0.05)), 1e-6))
            mips = self.mips[q.texture]
            level = np.clip(level, 0, len(mips) - 1).astype(np.float32)
            mx0 = a * q.ppm - 0.5
            my0 = (q.height - b) * q.ppm - 0.5
            acc = np.zeros((len(a), 4), np.float32)
            for lv in range(int(np.floor(level.min())), int(np.ceil(level.max())) + 1):
                wgt = np.clip(1.0 - np.abs(level - lv), 0, 1)
                use = wgt > 0
                if not use.any():
                    continue
                s = 2.0 ** lv
                mx = (mx0[use] + 0.5) / s - 0.5
                my = (my0[use] + 0.5) / s - 0.5
                acc[use] += wgt[use, None] * _remap_points(mips[lv], mx, my)
            out[v0:v1, u0:u1][sel] = acc / 255.0
        return out

    def render(self, K: np.ndarray, width: int, height: int, pose: Pose, light: Lighting, supersample: int = 2):
        """RGB uint8 image seen by the pinhole ``K`` (OpenCV convention) at ``pose`` under ``light``."""
        s = int(supersample)
        Ks = K.copy()
        Ks[:2, :] *= s
        Ks[0, 2] += (s - 1) / 2.0
        Ks[1, 2] += (s - 1) / 2.0
        W, H = width * s, height * s
        self._R = pose.R
        z, qid, A, B, boxes = self.geometry(Ks, W, H, pose)
        rgba = self._albedo(Ks, z, qid, A, B, boxes)
        albedo, emis = rgba[..., :3], rgba[..., 3]
        xn = ((np.arange(W) - Ks[0, 2]) / Ks[0, 0]).astype(np.float32)
        yn = ((np.arange(H) - Ks[1, 2]) / Ks[1, 1]).astype(np.float32)
        d_cam = np.stack(np.broadcast_arrays(xn[None, :], yn[:, None], np.ones((1, 1), np.float32)), -1)
        d_w = d_cam @ pose.R.astype(np.float32)  # rows: R^T d
        hitm = qid >= 0
        normals = np.array([q.normal for q in self.scene.quads] + [[0, 0, 1]], np.float32)
        # two-sided surfaces: make each normal face the camera
        C = pose.center
        facing = np.array([np.sign(q.normal @ (C - q.origin)) or 1.0 for q in self.scene.quads] + [1], np.float32)
        n = normals[qid] * facing[qid][..., None]
        sun = np.asarray(light.sun_dir, np.float32)
        sun /= np.linalg.norm(sun)
        shade = light.ambient + light.sun * np.clip(n @ sun, 0, None)
        radiance = albedo * shade[..., None]
        if light.lamps > 0 and len(self.scene.lamps):
            P = C.astype(np.float32) + np.where(hitm, z, 0)[..., None] * d_w
            lamp_light = np.zeros(z.shape, np.float32)
            near = self.scene.lamps[np.linalg.norm(self.scene.lamps - C, axis=1) < 60]
            for lamp in near.astype(np.float32):
                Lv = lamp - P
                d2 = np.einsum("hwc,hwc->hw", Lv, Lv)
                lamp_light += np.clip(np.einsum("hwc,hwc->hw", n, Lv), 0, None) / (d2 * np.sqrt(d2) + 1e-3) * 8.0
            radiance += albedo * (light.lamps * lamp_light)[..., None] * np.asarray(light.lamp_color, np.float32)
        if light.emission > 0 and light.window_keep < 1.0:
            emis = emis * self._window_switch(qid, A, B, light)
        if light.emission > 0:
            # lit interiors keep their texture: emission modulated by what is behind the glass
            radiance += (light.emission * emis)[..., None] * (0.25 + 0.75 * albedo) * np.asarray(
                light.emission_color, np.float32)
        elev = np.clip(d_w[..., 2] / np.linalg.norm(d_w, axis=-1), 0, 1)[..., None] * 2.5
        sky = np.asarray(light.sky_horizon, np.float32) * (1 - np.clip(elev, 0, 1)) + np.asarray(
            light.sky_zenith, np.float32) * np.clip(elev, 0, 1)
        radiance = np.where(hitm[..., None], radiance, sky)
        if light.wet > 0:
            radiance = self._wet(radiance, qid, Ks, pose, light)
        if light.fog > 0:
            trans = np.exp(-light.fog * np.where(hitm, z, 1e4))[..., None]
            radiance = radiance * trans + np.asarray(light.fog_color, np.float32) * (1 - trans)
        img = cv2.resize(radiance, (width, height), interpolation=cv2.INTER_AREA) if s > 1 else radiance
        if light.glare > 0 and len(self.scene.lamps):
            img += self._glare(K, width, height, pose, z[::s, ::s], light)
        if light.headlights > 0:
            img += self._headlights(K, width, height, pose, light)
        if light.rain > 0:
            img = self._rain(img, light)
        return self._sensor(img, light)

    # ---------------------------------------------------------------- city effects
    def _window_switch(self, qid, A, B, light) -> np.ndarray:
        """1 where a 1.5 m cell of a surface keeps its light on, 0 elsewhere (a hash of quad, cell and seed)."""
        ca = np.floor(A / 1.5).astype(np.int64)
        cb = np.floor(B / 1.5).astype(np.int64)
        h = (qid.astype(np.int64) * 73856093) ^ (ca * 19349663) ^ (cb * 83492791)
        h = h ^ (int(light.window_seed) * 2654435761)
        h = (h ^ (h >> 13)) * 1274126177
        u = ((h >> 8) & 0xFFFF).astype(np.float32) / 65535.0
        return (u < light.window_keep).astype(np.float32)

    def _horizon_rows(self, K, width, pose) -> np.ndarray:
        """Image row of the horizon (horizontal view rays) in every column."""
        n = pose.R[:, 2]  # world up in camera coordinates
        xn = (np.arange(width) - K[0, 2]) / K[0, 0]
        ny = n[1] if abs(n[1]) > 1e-6 else 1e-6
        return K[1, 1] * (-(n[0] * xn + n[2]) / ny) + K[1, 2]

    def _wet(self, radiance, qid, K, pose, light) -> np.ndarray:
        """Wet road: ground pixels mirror what is above the horizon (streaked vertically), darker asphalt."""
        H, W = qid.shape
        ground = self.is_ground[qid]
        if not ground.any():
            return radiance
        vh = self._horizon_rows(K, W, pose).astype(np.float32)
        rows = np.arange(H, dtype=np.float32)[:, None]
        src = np.clip(2 * vh[None, :] - rows, 0, H - 1)
        mapx = np.broadcast_to(np.arange(W, dtype=np.float32)[None, :], (H, W)).copy()
        mirror = cv2.remap(radiance, mapx, src.astype(np.float32), cv2.INTER_LINEAR)
        k = max(3, int(H / 40) | 1)
        mirror = cv2.blur(mirror, (1, k))
        out = radiance.copy()
        out[ground] = radiance[ground] * (1 - 0.3 * light.wet) + light.wet * mirror[ground]
        return out

    def _headlights(self, K, width, height, pose, light) -> np.ndarray:
        """Oncoming cars: bright pairs of halos with horizontal streaks, a little below the horizon."""
        rng = np.random.default_rng([int(light.seed), 77])
        out = np.zeros((height, width, 3), np.float32)
        vh = self._horizon_rows(K, width, pose)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        for _ in range(int(light.headlights)):
            u = rng.uniform(0.05, 0.95) * width
            dist = rng.uniform(6.0, 40.0)
            v = vh[int(np.clip(u, 0, width - 1))] + K[1, 1] * 0.9 / dist
            gap = K[0, 0] * 1.5 / dist
            sigma = 2.0 + 40.0 / dist
            col = np.asarray((1.0, 0.97, 0.9), np.float32) * rng.uniform(1.0, 2.5)
            for uc in (u - gap / 2, u + gap / 2):
                r2 = (xx - uc) ** 2 + (yy - v) ** 2
                halo = np.exp(-r2 / (2 * sigma**2)) + 0.25 * np.exp(-r2 / (2 * (5 * sigma) ** 2))
                streak = 0.3 * np.exp(-((yy - v) ** 2) / (2 * (0.6 * sigma) ** 2) - np.abs(xx - uc) / (12 * sigma))
                out += (halo + streak)[..., None] * col
        return out

    @staticmethod
    def _rain(img, light) -> np.ndarray:
        """Slanted bright streaks (drops close to the lens), blurred."""
        rng = np.random.default_rng([int(light.seed), 78])
        h, w = img.shape[:2]
        layer = np.zeros((h, w), np.float32)
        n = int(light.rain * w * h / 400)
        ang = rng.uniform(-0.3, 0.3)
        for _ in range(n):
            x, y, ln = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(8, 30)
            cv2.line(layer, (int(x), int(y)), (int(x + ang * ln), int(y + ln)), float(rng.uniform(0.05, 0.2)), 1,
                     cv2.LINE_AA)
        layer = cv2.GaussianBlur(layer, (0, 0), 0.8)
        return img * (1 - layer[..., None]) + layer[..., None] * 0.8

    def _glare(self, K, width, height, pose, z_small, light) -> np.ndarray:
        """Halos around lamp heads that are in view and not hidden by a nearer surface."""
        out = np.zeros((height, width, 3), np.float32)
        pc = pose.transform(self.scene.lamps)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        for p in pc:
            if p[2] < 0.5:
                continue
            u, v = K[0, 0] * p[0] / p[2] + K[0, 2], K[1, 1] * p[1] / p[2] + K[1, 2]
            if not (-40 < u < width + 40 and -40 < v < height + 40):
                continue
            ui, vi = int(np.clip(round(u), 0, width - 1)), int(np.clip(round(v), 0, height - 1))
            if 0 <= u < width and 0 <= v < height and z_small[vi, ui] < p[2] - 0.3:
                continue
            sigma = 60.0 / p[2] + 2.0
            r2 = (xx - u) ** 2 + (yy - v) ** 2
            halo = light.glare * (np.exp(-r2 / (2 * sigma**2)) + 0.3 * np.exp(-r2 / (2 * (4 * sigma) ** 2)))
            out += halo[..., None] * np.asarray(light.lamp_color, np.float32)
        return out

    @staticmethod
    def _sensor(img: np.ndarray, light: Lighting) -> np.ndarray:
        rng = np.random.default_rng(light.seed)
        if light.motion_blur > 1:
            n = int(np.ceil(light.motion_blur)) | 1
            ker = np.zeros((n, n), np.float32)
            ker[n // 2, :] = 1.0
            rot = cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), light.motion_angle, 1.0)
            blur = cv2.warpAffine(ker, rot, (n, n))
            img = cv2.filter2D(img, -1, blur / max(blur.sum(), 1e-6))
        if light.defocus > 0:
            img = cv2.GaussianBlur(img, (0, 0), light.defocus)
        img = img * light.exposure * np.asarray(light.tint, np.float32)
        if light.shot_noise > 0:
            shot = np.sqrt(np.clip(img, 0, None)) * light.shot_noise
            img = img + rng.normal(0, 1, img.shape).astype(np.float32) * shot
        if light.noise > 0:
            img = img + rng.normal(0, light.noise, img.shape).astype(np.float32)
        img = np.clip(img, 0, 1) ** (1.0 / light.gamma)
        return (img * 255 + 0.5).astype(np.uint8)


def _remap_points(tex: np.ndarray, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
    """Bilinear lookup of N points (cv2.remap on a 2D block: it refuses maps of 32767+ rows or columns)."""
    n = len(mx)
    cols = 1024
    rows = (n + cols - 1) // cols
    px = np.zeros(rows * cols, np.float32)
    py = np.zeros(rows * cols, np.float32)
    px[:n], py[:n] = mx, my
    vals = cv2.remap(tex, px.reshape(rows, cols), py.reshape(rows, cols), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT_101)
    return vals.reshape(rows * cols, -1)[:n].astype(np.float32)

