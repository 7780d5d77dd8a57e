"""Layout of the synthetic street: textured planar quads (facades, side walls, ground, poles), lamps, camera paths.

World frame: x along the street, y to the left of a car driving towards +x, z up, metres. Facades on the left
(y > 0) and right (y < 0) sides face the street; each front facade is one instance (id >= 1); the ground, poles
and sky are instance 0. Cameras use the COLMAP frame (x right, y down, z forward).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Tuple

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

    def add_shared(self, quad: Quad, texture_index: int) -> Quad:
        """A quad with a texture already in the scene (identical look-alike facades share one mip pyramid)."""
        quad.texture = int(texture_index)
        self.quads.append(quad)
        return quad


def _vec(*v) -> np.ndarray:
    return np.asarray(v, dtype=np.float64)


def build_scene(conf: dict, seed: int) -> Scene:
    """The street of the default/tiny presets, or the city of the "city" preset (``conf['layout']``)."""
    if conf.get("layout") == "city":
        return build_city_scene(conf, seed)
    return _build_street_scene(conf, seed)


def _build_street_scene(conf: dict, seed: int) -> Scene:
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
    if conf.get("layout") == "city":
        return city_db_poses(conf)
    L = float(conf["street_length"])
    xs = np.linspace(0.0, L, int(conf["db_stations"]))
    return [camera_pose(x, 0.0, conf["camera_height"], yaw, conf["db_pitch"]) for x in xs for yaw in conf["db_yaws"]]


def _smooth(rng: np.random.Generator, n: int, amp: float) -> np.ndarray:
    """A smooth random curve of n samples in [-amp, amp]."""
    t = np.linspace(0, 1, n)
    f = sum(rng.uniform(-1, 1) * np.sin(np.pi * (k + 1) * t + rng.uniform(0, 2 * np.pi)) / (k + 1) for k in range(3))
    return amp * np.asarray(f) / (1.0 + 1.0 / 2 + 1.0 / 3)


def query_sequences(conf: dict, seed: int) -> Dict[str, Tuple[str, List[Pose]]]:
    """Query drives that deviate from the mapping drive: {seq name: (condition, poses in time order)}."""
    if conf.get("layout") == "city":
        return city_query_sequences(conf, seed)
    L = float(conf["street_length"])
    street = Street("street", np.zeros(2), np.array([1.0, 0.0]), L, [0.0, L])
    return _query_drives(conf, seed, lambda k, cond: street, margin=0.5, jitter=(0.4, 2.5, 2.0, 0.1))


def _query_drives(conf: dict, seed: int, street_of: Callable[[int, str], Street], margin: float,
                  jitter: Tuple[float, float, float, float]) -> Dict[str, Tuple[str, List[Pose]]]:
    """``conf['query_sequences']`` drives (day, then night), drive ``k`` on ``street_of(k, condition)``; see
    ``_query_drive`` for ``margin`` and ``jitter``."""
    out: Dict[str, Tuple[str, List[Pose]]] = {}
    k = 0
    for cond in ("day", "night"):
        for n in conf["query_sequences"][cond]:
            rng = np.random.default_rng([seed, 1000 + k])
            out[f"seq{k}"] = (cond, _query_drive(street_of(k, cond), k, int(n), rng, conf, margin, jitter))
            k += 1
    return out


def _query_drive(street: Street, k: int, n: int, rng: np.random.Generator, conf: dict, margin: float,
                 jitter: Tuple[float, float, float, float]) -> List[Pose]:
    """Drive ``k``: ``n`` frames along ``street`` at ``conf['query_speed']``, starting ``margin`` metres or more from
    its ends, with smooth lateral (within ``max_lateral``) and yaw (``max_yaw_dev``) deviations from the mapping
    drive. ``jitter`` = (lateral offset of the whole drive as a share of ``max_lateral``, pitch and roll in
    degrees, camera height in metres), each drawn uniformly in [-j, j]."""
    lat_j, pitch_j, roll_j, z_j = jitter
    speed = float(conf["query_speed"])
    span = speed * (n - 1)
    # spread the starts along the street (golden-ratio sequence), with some jitter
    frac = (0.5 + 0.618034 * k + rng.uniform(-0.1, 0.1)) % 1.0
    s0 = margin + frac * max(0.0, street.length - 2 * margin - span)
    ss = np.clip(s0 + speed * np.arange(n), 0.0, street.length)
    lat = float(conf["max_lateral"])
    ys = np.clip(_smooth(rng, n, lat) + rng.uniform(-lat_j, lat_j) * lat, -lat, lat)
    yaw_base = conf["db_yaws"][k % len(conf["db_yaws"])]
    yaws = street.heading + yaw_base + _smooth(rng, n, float(conf["max_yaw_dev"]))
    pitch = conf["db_pitch"] + rng.uniform(-pitch_j, pitch_j, n)
    roll = rng.uniform(-roll_j, roll_j, n)
    zs = conf["camera_height"] + rng.uniform(-z_j, z_j, n)
    poses = []
    for s, y, z, yaw, p, r in zip(ss, ys, zs, yaws, pitch, roll):
        px, py, _ = street.point(float(s), float(y))
        poses.append(camera_pose(px, py, z, yaw, p, r))
    return poses


# ---------------------------------------------------------------------------------------------------- city preset
# A grid of blocks (conf["blocks"] = [nx, ny] of block_size metres): every grid line is a street, the outer ones
# form a loop. Facades come from a pool of designs that repeat across the city (same texture, mirrored copies,
# recoloured copies), so local appearance alone does not tell the streets apart.


@dataclass
class Street:
    name: str
    origin: np.ndarray  # (2,) world x, y of s = 0
    direction: np.ndarray  # (2,) unit
    length: float
    crossings: List[float]  # s of the streets crossing this one (including the ends)

    @property
    def left(self) -> np.ndarray:
        return np.array([-self.direction[1], self.direction[0]])

    def point(self, s: float, lateral: float = 0.0, z: float = 0.0) -> np.ndarray:
        p = self.origin + s * self.direction + lateral * self.left
        return np.array([p[0], p[1], z])

    @property
    def axis3(self) -> np.ndarray:
        """The driving direction in 3D (z = 0)."""
        return np.array([self.direction[0], self.direction[1], 0.0])

    @property
    def left3(self) -> np.ndarray:
        return np.array([self.left[0], self.left[1], 0.0])

    @property
    def heading(self) -> float:
        """Yaw in degrees (left of +x) of a car driving along the street."""
        return float(np.degrees(np.arctan2(self.direction[1], self.direction[0])))


def city_streets(conf: dict) -> List[Street]:
    nx, ny = (int(v) for v in conf["blocks"])
    bx, by = (float(v) for v in conf["block_size"])
    out = []
    for j in range(ny + 1):
        out.append(Street(f"h{j}", np.array([0.0, j * by]), np.array([1.0, 0.0]), nx * bx,
                          [i * bx for i in range(nx + 1)]))
    for i in range(nx + 1):
        out.append(Street(f"v{i}", np.array([i * bx, 0.0]), np.array([0.0, 1.0]), ny * by,
                          [j * by for j in range(ny + 1)]))
    return out


def _tinted(tex: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = tex.copy()
    f = np.clip(1 + rng.uniform(-0.25, 0.25, 3), 0.6, 1.4)
    out[..., :3] = np.clip(out[..., :3].astype(np.float32) * f, 0, 255).astype(np.uint8)
    return out


def build_city_scene(conf: dict, seed: int) -> Scene:
    half = float(conf["street_half_width"])
    ppm = float(conf["texture_ppm"])
    clear = half + float(conf["corner_clearance"])  # no buildings this close to a crossing street's centre line
    scene = Scene()
    designs: List[dict] = []  # {"texture": index, "width", "height", "style", "id", "base": rgba}
    next_id = 1
    drng = np.random.default_rng([seed, 21])
    for street in city_streets(conf):
        e3 = street.axis3
        up = np.array([0.0, 0.0, 1.0])
        for side in (+1, -1):
            rng = np.random.default_rng([seed, 31, next_id])
            cr = sorted(street.crossings)
            for a, b in zip(cr[:-1], cr[1:]):
                s = a + clear
                prev = None
                while s < b - clear - 3.0:
                    room = b - clear - s
                    reuse = designs and drng.random() < float(conf["repeat_share"])
                    if reuse:
                        fits = [d for d in designs if d["width"] <= room + 0.5]
                        reuse = bool(fits)
                    if reuse:
                        d = fits[int(drng.integers(len(fits)))]
                        variant = drng.choice(["same", "mirrored", "recoloured"], p=[0.45, 0.35, 0.2])
                        if variant == "same":
                            tex_index = d["texture"]
                        else:
                            base = d["rgba"][:, ::-1].copy() if variant == "mirrored" else _tinted(d["rgba"], drng)
                            scene.textures.append(base)
                            tex_index = len(scene.textures) - 1
                        width, height, style, design_id = d["width"], d["height"], d["style"], d["id"]
                    else:
                        width = float(min(drng.uniform(5.0, 10.0), room))
                        height = float(drng.uniform(8.0, 17.0))
                        trng = np.random.default_rng([seed, 1000 + len(designs)])
                        rgba, style = textures.facade(trng, width, height, ppm)
                        scene.textures.append(rgba)
                        tex_index = len(scene.textures) - 1
                        design_id = len(designs)
                        designs.append({"texture": tex_index, "width": width, "height": height, "style": style,
                                        "id": design_id, "rgba": rgba})
                        variant = "original"
                    setback = float(rng.uniform(0.0, 1.2))
                    lat = side * (half + setback)
                    if side > 0:  # normal u x v towards the street centre line
                        quad = Quad(street.point(s, lat), e3.copy(), up.copy(), width, height, -1, next_id, ppm)
                    else:
                        quad = Quad(street.point(s + width, lat), -e3, up.copy(), width, height, -1, next_id, ppm)
                    scene.add_shared(quad, tex_index)
                    inst = {"id": next_id, "name": f"{street.name}_{'left' if side > 0 else 'right'}_{next_id:03d}_"
                                                   f"{style['material']}",
                            "side": "left" if side > 0 else "right", "street": street.name, "design": design_id,
                            "variant": str(variant), "corners": quad.corners.tolist(),
                            "quads": [quad.corners.tolist()]}
                    if prev is not None and abs(prev[0] - setback) > 0.05:
                        out = prev if prev[0] < setback else (setback, height, next_id, style)
                        depth = abs(prev[0] - setback)
                        l0 = side * (half + min(prev[0], setback))
                        wrng = np.random.default_rng([seed, 41, next_id])
                        wall = textures.wall(wrng, depth, out[1], ppm, out[3])
                        wq = Quad(street.point(s, l0), side * street.left3,
                                  up.copy(), depth, out[1], -1, out[2], ppm)
                        scene.add(wq, wall)
                        owner = inst if out[2] == next_id else scene.instances[-1]
                        owner["quads"].append(wq.corners.tolist())
                    scene.instances.append(inst)
                    prev = (setback, height, next_id, style)
                    next_id += 1
                    s += width + float(rng.uniform(0.0, 0.6))
    # ground: one road texture per street (coplanar overlaps at crossings: the first one drawn wins), then a
    # plain base plane under the whole city, seen through the gaps between blocks
    gppm = float(conf["ground_ppm"])
    gy = half + 1.5
    for k, street in enumerate(city_streets(conf)):
        grng = np.random.default_rng([seed, 51, k])
        x0, x1 = -gy, street.length + gy
        tex = textures.ground(grng, x0, x1, -gy, gy, float(conf["road_half_width"]), gppm)
        e3, l3 = street.axis3, street.left3
        scene.add(Quad(street.point(x0, -gy), e3, l3, x1 - x0, 2 * gy, -1, 0, gppm), tex)
    nx, ny = (int(v) for v in conf["blocks"])
    bx, by = (float(v) for v in conf["block_size"])
    brng = np.random.default_rng([seed, 52])
    bppm = 4.0
    pad = 40.0
    W, H = int((nx * bx + 2 * pad) * bppm), int((ny * by + 2 * pad) * bppm)
    base = 0.25 + 0.15 * textures.fractal_noise(brng, H, W, cells=(40.0, 8.0, 2.0))
    scene.add(Quad(_vec(-pad, -pad, -0.03), _vec(1, 0, 0), _vec(0, 1, 0), nx * bx + 2 * pad, ny * by + 2 * pad,
                   -1, 0, bppm), textures._pack(np.repeat(base[..., None], 3, 2), np.zeros((H, W), np.float32)))
    # street lights along every street, alternating sides
    lamps = []
    prng = np.random.default_rng([seed, 14])
    pole_tex = None
    for street in city_streets(conf):
        e3, l3 = street.axis3, street.left3
        for k, sl in enumerate(np.arange(6.0, street.length - 3.0, float(conf["lamp_spacing"]))):
            side = 1 if k % 2 == 0 else -1
            lat = side * (float(conf["road_half_width"]) + 0.4)
            h, w = 5.5, 0.16
            if pole_tex is None:
                scene.textures.append(textures.pole(prng, w, h, ppm))
                pole_tex = len(scene.textures) - 1
            c = street.point(sl, lat)
            scene.add_shared(Quad(c - e3 * w / 2, e3, _vec(0, 0, 1), w, h, -1, 0, ppm), pole_tex)
            scene.add_shared(Quad(c - l3 * w / 2, l3, _vec(0, 0, 1), w, h, -1, 0, ppm), pole_tex)
            lamps.append(street.point(sl, lat - side * 1.0, h))
    scene.lamps = np.asarray(lamps, dtype=np.float64).reshape(-1, 3)
    return scene


def city_db_poses(conf: dict) -> List[Pose]:
    """The mapping drive: every street at ``db_spacing`` metres, one image per yaw in ``db_yaws``."""
    out = []
    for street in city_streets(conf):
        n = int(np.floor(street.length / float(conf["db_spacing"]))) + 1
        for s in np.linspace(0.0, street.length, n):
            x, y, _ = street.point(float(s))
            for yaw in conf["db_yaws"]:
                out.append(camera_pose(x, y, conf["camera_height"], street.heading + yaw, conf["db_pitch"]))
    return out


def city_query_sequences(conf: dict, seed: int) -> Dict[str, Tuple[str, List[Pose]]]:
    """Query drives on every street in turn, with larger lateral and yaw deviations than the default street."""
    streets = city_streets(conf)

    def street_of(k: int, cond: str) -> Street:
        return streets[(k * 3 + (1 if cond == "night" else 0)) % len(streets)]

    return _query_drives(conf, seed, street_of, margin=1.0, jitter=(0.5, 3.0, 2.5, 0.15))
