#!/usr/bin/env python
"""Development set for focal-length estimation with an unknown camera (issue 9): the synthetic street rendered
through query cameras whose focal length is 0.4x-3x COLMAP's guess (1.2 x the longer side), localized with
``camera=None`` against a map of the street's database. The estimated focal length is compared with the true one.

The focal estimator is developed on this set, never on the shared Sacre-Coeur photos (evaluation only,
benchmarks/bench_sacre_coeur.py).

Queries: a random position in the street, looking forward like the mapping drive (yaw 10-45 degrees off the street
axis, left or right), pitch and roll jitter; a focal factor rho = f / (1.2 max(w, h)) drawn log-uniformly in
[0.4, 3]; the image width chosen so that the facade in view appears at 0.7-1.6x the database's pixel scale (what a
person with a long lens does: step back or zoom onto a detail), so that matching is possible at every focal length.
Half of the queries are portrait. Rendered once into ``--work/queries`` (same seed, same set).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_focal.py --num 60
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_focal.py --modes auto guess
Modes: "auto" = what ``camera=None`` does (focal estimated in RANSAC, kept where it beats the guess:
``pnp.refine_focal_length: auto``); "guess" = COLMAP's guess used as if known (``estimate_focal=False``).
Writes benchmarks/results/bench_focal.{json,txt,png} (per query: true focal, estimate, error, inliers, rotation
and position error; per mode: the error distribution).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from imp_core.eval.report import dumps_strict  # noqa: E402

MAP_CONF = {"features": {"name": "xfeat", "max_keypoints": 2048}, "matcher": {"name": "lighterglue"}}
DB_PX_PER_M = 500.0 / 14.0  # the database camera (focal 500) sees the facade at ~14 m (yaw 30 deg, 7 m away)


def make_queries(world, out: Path, num: int, seed: int, progress: bool = True) -> list:
    """Render ``num`` queries (or read them back): [{name, width, height, focal, rho, pose qvec/t}]."""
    from tqdm import tqdm

    from imp_core.types import Camera
    from imp_core.world.render import Renderer
    from imp_core.world.scene import build_scene, camera_pose
    from imp_core.world.synthetic import lighting

    index = out / "queries.json"
    spec = {"num": num, "seed": seed, "world": str(world.root), "version": 1}
    if index.is_file():
        meta = json.loads(index.read_text())
        if meta.get("spec") == spec:
            return meta["queries"]
    import cv2

    conf = world.conf
    renderer = Renderer(build_scene(conf, int(world.meta["seed"])))
    rng = np.random.default_rng(seed)
    L = float(conf["street_length"])
    queries = []
    (out / "images").mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=num, desc="rendering focal dev queries", disable=not progress)
    while len(queries) < num:
        rho = float(np.exp(rng.uniform(np.log(0.4), np.log(3.0))))
        portrait = bool(rng.random() < 0.5)
        side = rng.choice([-1.0, 1.0])
        yaw = side * rng.uniform(10.0, 45.0)
        # along the street, leaving room ahead (the view is forward, like the mapping drive's)
        x = rng.uniform(min(4.0, 0.25 * L), max(L - 16.0, 0.5 * L))
        y, z = rng.uniform(-2.5, 2.5), conf["camera_height"] + rng.uniform(-0.3, 0.3)
        pose = camera_pose(x, y, z, yaw, conf["db_pitch"] + rng.uniform(-3, 3), rng.uniform(-3, 3))
        # depth of the view at the centre through a small probe of the same field of view
        aspect = 4.0 / 3.0
        pw, ph = (60, 80) if portrait else (80, 60)
        pf = rho * 1.2 * max(pw, ph)
        z, _ = renderer.depth_and_mask(np.array([[pf, 0, pw / 2], [0, pf, ph / 2], [0, 0, 1]]), pw, ph, pose)
        valid = z > 0
        if valid.mean() < 0.6:
            continue  # mostly sky or nothing: not a photo of the street
        d = float(np.median(z[valid]))
        # long side L: rho * 1.2 * L / d = scale * DB_PX_PER_M
        long_side = rng.uniform(0.7, 1.6) * DB_PX_PER_M * d / (1.2 * rho)
        long_side = int(np.clip(long_side, 240, 1200)) // 8 * 8
        short_side = int(round(long_side / aspect)) // 8 * 8
        w, h = (short_side, long_side) if portrait else (long_side, short_side)
        f = rho * 1.2 * max(w, h)
        cam = Camera("SIMPLE_PINHOLE", w, h, [f, w / 2.0, h / 2.0])
        light = lighting("day", rng)
        rgb = renderer.render(cam.K, w, h, pose, light, supersample=2)
        name = f"q{len(queries):03d}.png"
        cv2.imwrite(str(out / "images" / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        queries.append({"name": name, "width": w, "height": h, "focal": f, "rho": rho, "median_depth_m": d,
                        "R": pose.R.tolist(), "t": pose.t.tolist()})
        bar.update()
    bar.close()
    index.write_text(json.dumps({"spec": spec, "queries": queries}, indent=1))
    return queries


def run(loc, qdir: Path, queries: list, estimate_focal: bool, progress: bool = True) -> list:
    from tqdm import tqdm

    from imp_core.imageio import read_image
    from imp_core.types import Pose, rotation_angle_deg

    rows = []
    for q in tqdm(queries, desc="localizing", disable=not progress):
        image = read_image(qdir / "images" / q["name"])
        t0 = time.perf_counter()
        res = loc.localize(image, None, name=q["name"], estimate_focal=estimate_focal)
        ms = 1000 * (time.perf_counter() - t0)
        gt = Pose(np.array(q["R"]), np.array(q["t"]))
        row = {"name": q["name"], "rho": q["rho"], "focal_true": q["focal"], "width": q["width"],
               "height": q["height"], "status": res.status, "num_inliers": res.num_inliers,
               "num_matches": res.num_matches, "ms": ms}
        if res.pose is not None and res.camera is not None:
            row.update(focal_est=float(res.camera.focal[0]), focal_err=float(res.camera.focal[0] / q["focal"] - 1),
                       focal_estimated=bool(res.focal_estimated),
                       rot_err_deg=float(rotation_angle_deg(gt.R, res.pose.R)),
                       pos_err_m=float(np.linalg.norm(gt.center - res.pose.center)))
        rows.append(row)
    return rows


def summarize(rows: list) -> dict:
    ok = [r for r in rows if "focal_err" in r]
    e = np.abs([r["focal_err"] for r in ok]) if ok else np.array([np.inf])
    long_ = np.abs([r["focal_err"] for r in ok if r["rho"] >= 1.5]) if ok else np.array([])
    return {"queries": len(rows), "posed": len(ok), "median_abs_focal_err": float(np.median(e)),
            "p90_abs_focal_err": float(np.percentile(e, 90)), "max_abs_focal_err": float(e.max()),
            "within_5pct": int(np.sum(e < 0.05)), "within_2pct": int(np.sum(e < 0.02)),
            "long_lens_within_5pct": f"{int(np.sum(long_ < 0.05))}/{len(long_)}",
            "rot_within_2deg": int(sum(r.get("rot_err_deg", 99) < 2 for r in ok)),
            "median_ms": float(np.median([r["ms"] for r in rows]))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench_focal")
    p.add_argument("--world", type=Path, default=None, help="synthetic world (default: --work/world, made once)")
    p.add_argument("--num", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", nargs="+", default=["auto", "guess"], choices=["auto", "guess"],
                   help="auto: focal estimated (camera=None); guess: COLMAP's guess used as if known")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_focal")
    a = p.parse_args()
    import pycolmap

    from imp_core.localization import Localizer
    from imp_core.mapping import build_map
    from imp_core.world import SyntheticWorld, use_or_make_world

    pycolmap.logging.minloglevel = 2
    world = SyntheticWorld(use_or_make_world(a.world or a.work / "world", "default", 0))
    map_dir = a.work / "map_xfeat_lighterglue"
    if not (map_dir / "map.json").is_file():
        build_map(world, map_dir, MAP_CONF)
    queries = make_queries(world, a.work / f"queries_{a.seed}_{a.num}", a.num, a.seed)
    loc = Localizer({"map": str(map_dir)})
    results, summary = {}, {}
    for mode in a.modes:
        results[mode] = run(loc, a.work / f"queries_{a.seed}_{a.num}", queries, mode == "auto")
        summary[mode] = summarize(results[mode])
    lines = [f"focal dev set: {len(queries)} synthetic queries, rho = f / (1.2 max(w, h)) in [0.4, 3], "
             f"XFeat + LighterGlue, camera unknown"]
    keys = list(next(iter(summary.values())))
    lines.append(f"{'mode':<10}" + "".join(f"{k:>24}" for k in keys))
    for mode, s in summary.items():
        lines.append(f"{mode:<10}" + "".join(f"{(f'{v:.4f}' if isinstance(v, float) else str(v)):>24}"
                                           for v in s.values()))
    table = "\n".join(lines)
    print(table)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(dumps_strict({"summary": summary, "rows": results}, indent=1))
    a.out.with_suffix(".txt").write_text(table + "\n")
    _plot(results, a.out.with_suffix(".png"))
    return 0


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for est, rows in results.items():
        ok = [r for r in rows if "focal_err" in r]
        ax[0].scatter([r["rho"] for r in ok], [100 * r["focal_err"] for r in ok], s=12, label=est)
        e = np.sort(np.abs([100 * r["focal_err"] for r in ok]))
        ax[1].plot(e, np.arange(1, len(e) + 1) / max(len(rows), 1), label=est)
    ax[0].set_xscale("log")
    ax[0].set_xlabel("true focal / guess (rho)")
    ax[0].set_ylabel("focal error %")
    ax[0].axhspan(-5, 5, color="g", alpha=0.1)
    ax[0].set_ylim(-30, 30)
    ax[1].set_xscale("log")
    ax[1].set_xlabel("|focal error| %")
    ax[1].set_ylabel("share of queries")
    ax[1].axvline(5, color="g", ls="--")
    for x in ax:
        x.legend()
        x.grid(alpha=0.3)
    fig.suptitle("focal length with an unknown camera: synthetic dev set (XFeat + LighterGlue)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
