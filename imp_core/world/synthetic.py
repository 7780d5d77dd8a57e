"""The generator of the synthetic world (the layout it writes, and its reader, are in
:mod:`imp_core.datasets.synthetic`).

``make_world(root, preset, seed)`` renders it once (then reuses it): presets and confs, the appearance of each
condition (``lighting``), the street (``scene``) and the renderer (``render``).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import cv2
import numpy as np

from ..config import merge
from ..datasets.base import DatasetError
from ..datasets.colmap_io import (
    write_model,
    write_poses,
    write_query_list,
)
from ..datasets.synthetic import CONDITIONS, FORMAT, VERSION, SyntheticWorld, is_synthetic_world
from ..types import Camera
from .render import Lighting, Renderer
from .scene import build_scene, db_poses, query_sequences

BASE_CONF = {
    "width": 640,
    "height": 480,
    "focal": 500.0,
    "supersample": 2,
    "street_length": 60.0,  # metres of street covered by the mapping drive
    "street_half_width": 7.0,  # facade line (before set-backs)
    "road_half_width": 5.0,
    "street_margin": 14.0,  # buildings continue this far beyond both ends of the drive
    "texture_ppm": 64.0,
    "ground_ppm": 48.0,
    "lamp_spacing": 12.0,
    "camera_height": 1.6,
    "db_pitch": 3.0,
    "db_yaws": [30.0, -30.0],  # one image per yaw at each station (left- and right-looking)
    "db_stations": 30,
    "query_sequences": {"day": [20, 20], "night": [20, 20]},  # frames per sequence
    "query_speed": 1.2,  # metres per frame (10 Hz)
    "max_lateral": 1.5,
    "max_yaw_dev": 15.0,
}
# the city: a grid of blocks whose streets form a loop, look-alike facades, weather, a harder night
CITY_CONF = merge(None, BASE_CONF, {  # None: no schema, the city adds keys to the street's
    "layout": "city",
    "blocks": [2, 1],  # nx, ny blocks: (nx + 1) + (ny + 1) streets
    "block_size": [84.0, 64.0],  # metres between street centre lines
    "corner_clearance": 0.5,  # metres between a crossing street's facade line and the first building
    "repeat_share": 0.6,  # share of buildings that reuse an earlier facade design (as is, mirrored or recoloured)
    "db_spacing": 2.0,  # metres between mapping stations on every street
    "ground_ppm": 40.0,
    "lamp_spacing": 14.0,
    "query_sequences": {"day": [12] * 8, "night": [12] * 8},
    "max_lateral": 2.5,
    "max_yaw_dev": 25.0,
}, where="city")
PRESETS = {
    "default": {},
    "tiny": {
        "street_length": 16.0,
        "street_margin": 10.0,
        "db_stations": 8,
        "query_sequences": {"day": [8], "night": [8]},
        "query_speed": 1.0,
    },
}


CITY_PRESETS = {
    "city": {},
    # the scale benchmarks' city: 4 x 3 blocks, ~1.5k database images
    "city_large": {"blocks": [4, 3], "query_sequences": {"day": [12] * 12, "night": [12] * 12}},
}


def preset_names() -> List[str]:
    """Every preset (``imp world --preset`` lists them too, without importing this module)."""
    return list(PRESETS) + list(CITY_PRESETS)


def world_conf(preset: str = "default", overrides: Optional[dict] = None) -> dict:
    if preset in CITY_PRESETS:
        return merge(merge(CITY_CONF, CITY_PRESETS[preset], where="preset"), overrides, where="overrides")
    if preset not in PRESETS:
        raise ValueError(f"unknown synthetic world preset {preset!r}; available: {', '.join(preset_names())}")
    return merge(merge(BASE_CONF, PRESETS[preset], where="preset"), overrides, where="overrides")


def world_camera(conf: dict) -> Camera:
    """PINHOLE camera with the principal point at the image centre (COLMAP convention: w/2, h/2)."""
    w, h, f = int(conf["width"]), int(conf["height"]), float(conf["focal"])
    return Camera("PINHOLE", w, h, np.array([f, f, w / 2.0, h / 2.0]))


def lighting(kind: str, rng: np.random.Generator):
    """Appearance of the mapping drive ("db"), of a day query sequence or a night one."""
    if kind == "db":
        return Lighting()
    if kind == "day":
        sun = rng.normal(0, 0.15, 3) + (-0.5, 0.55, 0.65)
        return Lighting(
            ambient=rng.uniform(0.35, 0.55), sun=rng.uniform(0.3, 0.8), sun_dir=tuple(sun),
            tint=tuple(1 + rng.uniform(-0.08, 0.08, 3)), exposure=rng.uniform(0.8, 1.2), gamma=rng.uniform(0.9, 1.15),
            sky_horizon=tuple(rng.uniform(0.7, 0.95, 3)), sky_zenith=tuple(rng.uniform(0.4, 0.8, 3)),
            noise=rng.uniform(0.004, 0.01), defocus=rng.uniform(0.0, 0.4))
    if kind == "night":
        cast = (0.85, 0.9, 1.2) if rng.random() < 0.5 else (1.15, 0.95, 0.75)
        return Lighting(
            ambient=rng.uniform(0.05, 0.08), sun=0.0, tint=cast, exposure=rng.uniform(2.2, 3.0), gamma=1.3,
            sky_horizon=(0.05, 0.05, 0.09), sky_zenith=(0.01, 0.01, 0.03), lamps=1.0, emission=0.9, glare=0.6,
            noise=0.02, shot_noise=0.03, motion_blur=rng.uniform(2.0, 6.0), motion_angle=rng.uniform(-10, 10),
            defocus=0.6)
    raise ValueError(f"unknown lighting {kind!r}")


def lighting_city(kind: str, rng: np.random.Generator):
    """Appearance in the city: the mapping drive on a clear day; day queries with weather (clear, overcast, fog,
    rain); a darker night with headlights, another set of lit windows, wet roads in the rain, stronger blur."""
    if kind == "db":
        return Lighting()
    if kind == "day":
        weather = rng.choice(["clear", "overcast", "fog", "rain"])
        sun = rng.normal(0, 0.15, 3) + (-0.5, 0.55, 0.65)
        common: Dict[str, Any] = dict(
            tint=tuple(1 + rng.uniform(-0.1, 0.1, 3)), exposure=rng.uniform(0.8, 1.2), gamma=rng.uniform(0.9, 1.15),
            noise=rng.uniform(0.004, 0.012), defocus=rng.uniform(0.0, 0.5), window_keep=rng.uniform(0.3, 0.7),
            window_seed=int(rng.integers(1 << 30)))
        if weather == "clear":
            return Lighting(ambient=rng.uniform(0.35, 0.55), sun=rng.uniform(0.4, 0.8), sun_dir=tuple(sun),
                            sky_horizon=tuple(rng.uniform(0.7, 0.95, 3)), sky_zenith=tuple(rng.uniform(0.4, 0.8, 3)),
                            extra={"weather": "clear"}, **common)
        grey = tuple(np.full(3, rng.uniform(0.55, 0.8)))
        over: Dict[str, Any] = dict(ambient=rng.uniform(0.55, 0.75), sun=rng.uniform(0.0, 0.15), sun_dir=tuple(sun),
                                    sky_horizon=grey, sky_zenith=tuple(np.asarray(grey) * 0.9))
        if weather == "overcast":
            return Lighting(extra={"weather": "overcast"}, **over, **common)
        if weather == "fog":
            return Lighting(fog=rng.uniform(0.02, 0.05), fog_color=grey, extra={"weather": "fog"}, **over, **common)
        return Lighting(rain=rng.uniform(0.4, 1.0), wet=rng.uniform(0.15, 0.3), extra={"weather": "rain"}, **over,
                        **common)
    if kind == "night":
        cast = (0.85, 0.9, 1.2) if rng.random() < 0.5 else (1.15, 0.95, 0.75)
        rain = rng.random() < 0.5
        return Lighting(
            ambient=rng.uniform(0.02, 0.04), sun=0.0, tint=cast, exposure=rng.uniform(1.8, 2.6), gamma=1.4,
            sky_horizon=(0.03, 0.03, 0.06), sky_zenith=(0.005, 0.005, 0.02), lamps=rng.uniform(0.6, 1.0),
            emission=rng.uniform(0.7, 1.0), glare=0.8, window_keep=rng.uniform(0.3, 0.6),
            window_seed=int(rng.integers(1 << 30)), headlights=int(rng.integers(1, 4)),
            wet=rng.uniform(0.3, 0.5) if rain else 0.0, rain=rng.uniform(0.3, 0.8) if rain else 0.0,
            noise=0.03, shot_noise=0.04, motion_blur=rng.uniform(3.0, 9.0), motion_angle=rng.uniform(-10, 10),
            defocus=0.7, extra={"weather": "rain" if rain else "clear"})
    raise ValueError(f"unknown lighting {kind!r}")


def _fingerprint(preset: str, seed: int, overrides: Optional[dict]) -> dict:
    return {"format": FORMAT, "version": VERSION, "preset": preset, "seed": int(seed),
            "overrides": json.loads(json.dumps(overrides or {}))}


PENDING = ".generating"  # present while a world is being written: lets an interrupted run be redone
GENERATED = ("world.json", "instances.json", "images", "depth", "masks", "sfm_gt", "queries", "gt")


_FORKED: Dict[str, Any] = {}  # the world being rendered, for forked render workers (set just before they start)


def _render_job(renderer: Renderer, root: Path, cam: Camera, supersample: int, job) -> None:
    """Render one image of the world and write its image, depth and instance-mask PNGs."""
    name, pose, light, _ = job
    rgb = renderer.render(cam.K, cam.width, cam.height, pose, light, supersample=supersample)
    depth, mask = renderer.depth_and_mask(cam.K, cam.width, cam.height, pose)
    _write_png(root / "images" / name, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    mm = np.round(depth * 1000.0)
    _write_png(root / "depth" / name, np.where(mm > 65535, 0, mm).astype(np.uint16))
    _write_png(root / "masks" / name, mask.astype(np.uint16))


def _render_forked(i: int) -> int:
    f = _FORKED
    _render_job(f["renderer"], f["root"], f["cam"], f["supersample"], f["jobs"][i])
    return i


def _render_worker_init() -> None:
    cv2.setNumThreads(1)  # each worker renders one image at a time; no OpenCV pool inherited across the fork


def make_world(root, preset: str = "default", seed: int = 0, overrides: Optional[dict] = None,
               progress: bool = True, workers: int = 1) -> Path:
    """Render the synthetic world into ``root`` (reused when a complete one with the same settings is there).

    ``workers`` > 1 renders the images in that many forked processes (Linux; the same files as one process: each
    image has its own random streams)."""
    import multiprocessing as mp

    from tqdm import tqdm

    root = Path(root)
    conf = world_conf(preset, overrides)
    fp = _fingerprint(preset, seed, overrides)
    meta_path = root / "world.json"
    meta = _complete_world(root)  # None: missing, incomplete or corrupt: regenerate below
    if meta is not None and {k: meta.get(k) for k in fp} == fp:
        return root
    if root.is_dir() and any(root.iterdir()) and not (is_synthetic_world(root) or (root / PENDING).is_file()):
        raise DatasetError(f"{root} is not empty and holds no synthetic world: refusing to overwrite it "
                           "(choose an empty or new directory)")
    root.mkdir(parents=True, exist_ok=True)
    (root / PENDING).write_text(json.dumps(fp))
    for name in GENERATED:
        p = root / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()

    light_of = lighting_city if conf.get("layout") == "city" else lighting
    scene = build_scene(conf, seed)
    renderer = Renderer(scene)
    cam = world_camera(conf)
    jobs = []  # (name, pose, lighting, condition)
    db_stamps = []
    for i, pose in enumerate(db_poses(conf)):
        jobs.append((f"db/{i:04d}.png", pose, light_of("db", np.random.default_rng([seed, 2000 + i])), "db"))
        db_stamps.append(round(100.0 + 0.5 * i, 3))
    seqs = {}
    for k, (seq, (cond, poses)) in enumerate(query_sequences(conf, seed).items()):
        light = light_of(cond, np.random.default_rng([seed, 3000 + k]))
        t0 = 1000.0 + 100.0 * k
        names, stamps = [], []
        for j, pose in enumerate(poses):
            name = f"query/{cond}/{seq}_{j:04d}.png"
            frame_light = _with_seed(light, seed * 100003 + 5000 + len(jobs))
            jobs.append((name, pose, frame_light, cond))
            names.append(name)
            stamps.append(round(t0 + 0.1 * j, 3))
        seqs[seq] = {"condition": cond, "names": names, "stamps": stamps}
        if light.extra.get("weather"):
            seqs[seq]["weather"] = light.extra["weather"]

    bar = tqdm(total=len(jobs), desc="rendering synthetic world", disable=not progress)
    supersample = int(conf["supersample"])
    workers = int(workers) if "fork" in mp.get_all_start_methods() else 1
    if workers > 1 and mp.current_process().daemon:  # e.g. inside a multiprocessing.Pool task
        import warnings

        warnings.warn("make_world: rendering in one process (a daemonic process cannot start render workers)")
        workers = 1
    if workers > 1:
        _FORKED.update(renderer=renderer, root=root, cam=cam, supersample=supersample, jobs=jobs)
        try:
            with mp.get_context("fork").Pool(workers, initializer=_render_worker_init) as pool:
                for _ in pool.imap_unordered(_render_forked, range(len(jobs)), chunksize=2):
                    bar.update(1)
        finally:
            _FORKED.clear()
    else:
        for job in jobs:
            _render_job(renderer, root, cam, supersample, job)
            bar.update(1)
    bar.close()

    db_jobs = [j for j in jobs if j[3] == "db"]
    write_model(root / "sfm_gt", [(name, cam, pose) for name, pose, _, _ in db_jobs])
    for cond in CONDITIONS:
        write_query_list(root / "queries" / f"{cond}_queries_with_intrinsics.txt",
                         {name: cam for name, _, _, c in jobs if c == cond})
    write_poses(root / "gt" / "query_poses.txt", {name: pose for name, pose, _, c in jobs if c != "db"})
    (root / "gt" / "sequences.json").write_text(json.dumps(
        {"sequences": seqs, "db": {"names": [j[0] for j in db_jobs], "stamps": db_stamps}}, indent=1))
    (root / "instances.json").write_text(json.dumps({"instances": scene.instances}, indent=1))
    counts = {"db": len(db_jobs), **{c: sum(1 for j in jobs if j[3] == c) for c in CONDITIONS},
              "instances": len(scene.instances)}
    meta_path.write_text(json.dumps({**fp, "counts": counts, "conf": conf}, indent=1))
    (root / PENDING).unlink()
    return root


def use_or_make_world(root, preset: str = "default", seed: int = 0, progress: bool = True) -> Path:
    """A world given to a benchmark (``--world``): a complete synthetic world in ``root`` is used as it is, whatever
    its preset and seed (``make_world`` would re-render it with these, losing e.g. a training world of another
    seed); an empty, missing or unfinished one is rendered with ``preset`` and ``seed``."""
    root = Path(root)
    if _complete_world(root) is not None:
        return root
    return make_world(root, preset, seed, progress=progress)


def _complete_world(root: Path) -> Optional[dict]:
    """The world.json of the complete synthetic world in ``root``; None when there is none, it is unfinished
    (still being written, or interrupted) or a file is missing or corrupt."""
    if not is_synthetic_world(root) or (root / PENDING).is_file():
        return None
    try:
        meta = json.loads((root / "world.json").read_text())
        SyntheticWorld(root).check_files()
    except (ValueError, DatasetError):
        return None
    return meta


def _with_seed(light, seed: int):
    from dataclasses import replace

    return replace(light, seed=int(seed))


def _write_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")


__all__ = ["CONDITIONS", "FORMAT", "VERSION", "SyntheticWorld", "is_synthetic_world", "make_world", "world_conf",
           "world_camera", "lighting", "preset_names"]
