"""Layout of the synthetic street: textured planar quads (facades, side walls, ground, poles), lamps, camera paths.

World frame: x along the street, y to the left of a car driving towards +x, z up, metres. Facades on the left
(y > 0) and right (y < 0) sides face the street; each front facade is one instance (id >= 1); the ground, poles
and sky are instance 0. Cameras use the COLMAP frame (x right, y down, z forward).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np

from ..types import Pose
from . import textures


@dataclass
class Quad:
    """A textured rectangle ``origin + a * u + b * v`` for ``a in [0, width]``, ``b in [0, height]``."""

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    width: float
    height: float
    texture: int  # index into Scene.textures
    instance: int = 0
    ppm: float = 64.0  # texture pixels per metre

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.u, self.v)

    @property
    def corners(self) -> np.ndarray:
        o, u, v = self.origin, self.u * self.width, self.v * self.height
        return np.stack([o, o + u, o + u + v, o + v])


@dataclass
class Scene:
    quads: List[Quad] = field(default_factory=list)
    textures: List[np.ndarray] = field(default_factory=list)
    lamps: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # street-light heads, world
    instances: List[dict] = field(default_factory=list)

    def add(self, quad: Quad, texture: np.ndarray) -> Quad:
        self.textures.append(texture)
        quad.texture = len(self.textures) - 1
        self.quads.append(quad)
        return quad


def _vec(*v) -> np.ndarray:
    return np.asarray(v, dtype=np.float64)


def build_scene(conf: dict, seed: int) -> Scene:
    """Buildings along both sides of a street of ``conf['street_length']`` metres, plus end walls, ground, lamps."""
    L = float(conf["street_length"])
    half = float(conf["street_half_width"])
    ppm = float(conf["texture_ppm"])
    margin = float(conf["street_margin"])
    scene = Scene()
    next_id = 1
    for side in (+1, -1):  # left (y > 0) then right
        rng = np.random.default_rng([seed, 11 if side > 0 else 12])
        x = -margin
        prev = None  # (setback, height, id, style) of the previous building
        while x < L + margin:
            width = min(rng.uniform(6.0, 12.0), L + margin + 2 - x)
            height = rng.uniform(8.0, 16.0)
            setback = rng.uniform(0.0, 1.2)
            y = side * (half + setback)
            trng = np.random.default_rng([seed, 100 + next_id])
            tex, style = textures.facade(trng, width, height, ppm)
            # the facade faces the street: its normal u x v must point towards y = 0
            if side > 0:
                quad = Quad(_vec(x, y, 0), _vec(1, 0, 0), _vec(0, 0, 1), width, height, -1, next_id, ppm)
            else:
                quad = Quad(_vec(x + width, y, 0), _vec(-1, 0, 0), _vec(0, 0, 1), width, height, -1, next_id, ppm)
            scene.add(quad, tex)
            inst = {"id": next_id, "name": f"{'left' if side > 0 else 'right'}_{next_id:02d}_{style['material']}",
                    "side": "left" if side > 0 else "right", "corners": quad.corners.tolist(),
                    "quads": [quad.corners.tolist()]}
            if prev is not None and abs(prev[0] - setback) > 0.05:
                # side wall closing the step between two set-backs; it belongs to the building that sticks out
                out = prev if prev[0] < setback else (setback, height, next_id, style)
                depth = abs(prev[0] - setback)
                y0 = side * (half + min(prev[0], setback))
                wall = textures.wall(trng, depth, out[1], ppm, out[3])
                wq = Quad(_vec(x, y0, 0), _vec(0, side, 0), _vec(0, 0, 1), depth, out[1], -1, out[2], ppm)
                scene.add(wq, wall)
                owner = inst if out[2] == next_id else scene.instances[-1]
                owner["quads"].append(wq.corners.tolist())
            scene.instances.append(inst)
            prev = (setback, height, next_id, style)
            next_id += 1
            x += width
    for end, x in (("end_far", L + margin + 2), ("end_near", -margin)):
        trng = np.random.default_rng([seed, 100 + next_id])
        width = 2 * (half + 1.4)
        tex, style = textures.facade(trng, width, 14.0, ppm)
        if end == "end_far":  # normal towards -x (the street)
            quad = Quad(_vec(x, half + 1.4, 0), _vec(0, -1, 0), _vec(0, 0, 1), width, 14.0, -1, next_id, ppm)
        else:
            quad = Quad(_vec(x, -half - 1.4, 0), _vec(0, 1, 0), _vec(0, 0, 1), width, 14.0, -1, next_id, ppm)
        scene.add(quad, tex)
        scene.instances.append({"id": next_id, "name": f"{end}_{next_id:02d}_{style['material']}", "side": end,
                                "corners": quad.corners.tolist(), "quads": [quad.corners.tolist()]})
        next_id += 1
    grng = np.random.default_rng([seed, 13])
    gx0, gx1, gy = -margin - 1, L + margin + 3, half + 1.5
    gppm = float(conf["ground_ppm"])
    tex = textures.ground(grng, gx0, gx1, -gy, gy, float(conf["road_half_width"]), gppm)
    scene.add(Quad(_vec(gx0, -gy, 0), _vec(1, 0, 0), _vec(0, 1, 0), gx1 - gx0, 2 * gy, -1, 0, gppm), tex)
    # street lights: a pole (two crossed thin quads) with a lamp head overhanging the road
    lamps = []
    prng = np.random.default_rng([seed, 14])
    for k, xl in enumerate(np.arange(-margin + 4.0, L + margin, float(conf["lamp_spacing"]))):
        side = 1 if k % 2 == 0 else -1
        yl = side * (float(conf["road_half_width"]) + 0.4)
        h, w = 5.5, 0.16
        tex = textures.pole(prng, w, h, ppm)
        scene.add(Quad(_vec(xl - w / 2, yl, 0), _vec(1, 0, 0), _vec(0, 0, 1), w, h, -1, 0, ppm), tex)
        scene.add(Quad(_vec(xl, yl - w / 2, 0), _vec(0, 1, 0), _vec(0, 0, 1), w, h, -1, 0, ppm), tex.copy())
        lamps.append((xl, yl - side * 1.0, h))
    scene.lamps = np.asarray(lamps, dtype=np.float64).reshape(-1, 3)
    return scene


def rotation_world_from_cam(yaw_deg: float, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """Camera orientation from yaw (left of +x, about world z), pitch (up) and roll (about the optical axis)."""
    base = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])  # columns: cam x, y, z in world when looking along +x
    y, p, r = np.radians([yaw_deg, pitch_deg, roll_deg])
    Rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    Ry = np.array([[np.cos(-p), 0, np.sin(-p)], [0, 1, 0], [-np.sin(-p), 0, np.cos(-p)]])
    Rc = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])  # about cam z
    return Rz @ Ry @ base @ Rc


def camera_pose(x: float, y: float, z: float, yaw: float, pitch: float = 0.0, roll: float = 0.0) -> Pose:
    """cam_from_world of a camera at (x, y, z) with the given yaw/pitch/roll in degrees."""
    return Pose.from_center(rotation_world_from_cam(yaw, pitch, roll).T, [x, y, z])


def db_poses(conf: dict) -> List[Pose]:
    """The mapping drive: stations along the lane centre, one image per yaw in ``db_yaws`` at each station."""
    L = float(conf["street_length"])
    xs = np.linspace(0.0, L, int(conf["db_stations"]))
    return [camera_pose(x, 0.0, conf["camera_height"], yaw, conf["db_pitch"]) for x in xs for yaw in conf["db_yaws"]]


def _smooth(rng: np.random.Generator, n: int, amp: float) -> np.ndarray:
    """A smooth random curve of n samples in [-amp, amp]."""
    t = np.linspace(0, 1, n)
    f = sum(rng.uniform(-1, 1) * np.sin(np.pi * (k + 1) * t + rng.uniform(0, 2 * np.pi)) / (k + 1) for k in range(3))
    return amp * f / (1.0 + 1.0 / 2 + 1.0 / 3)


def query_sequences(conf: dict, seed: int) -> Dict[str, Tuple[str, List[Pose]]]:
    """Query drives that deviate from the mapping drive: {seq name: (condition, poses in time order)}."""
    L = float(conf["street_length"])
    speed = float(conf["query_speed"])
    out: Dict[str, Tuple[str, List[Pose]]] = {}
    k = 0
    for cond in ("day", "night"):
        for n in conf["query_sequences"][cond]:
            rng = np.random.default_rng([seed, 1000 + k])
            n = int(n)
            span = speed * (n - 1)
            # spread the starts along the street (golden-ratio sequence), with some jitter
            frac = (0.5 + 0.618034 * k + rng.uniform(-0.1, 0.1)) % 1.0
            x0 = 0.5 + frac * max(0.0, L - 1.0 - span)
            xs = np.clip(x0 + speed * np.arange(n), 0.0, L)
            lat = float(conf["max_lateral"])
            ys = np.clip(_smooth(rng, n, lat) + rng.uniform(-0.4, 0.4) * lat, -lat, lat)
            yaw_base = conf["db_yaws"][k % len(conf["db_yaws"])]
            yaws = yaw_base + _smooth(rng, n, float(conf["max_yaw_dev"]))
            pitch = conf["db_pitch"] + rng.uniform(-2.5, 2.5, n)
            roll = rng.uniform(-2.0, 2.0, n)
            zs = conf["camera_height"] + rng.uniform(-0.1, 0.1, n)
            out[f"seq{k}"] = (cond, [camera_pose(*a) for a in zip(xs, ys, zs, yaws, pitch, roll)])
            k += 1
    return out
