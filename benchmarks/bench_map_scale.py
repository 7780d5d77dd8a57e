#!/usr/bin/env python
"""Map scale: memory, start-up time and per-frame latency for maps of 60, 1,000, 5,000 and 10,000 images.

Building a 10k-image map on 2 CPU cores takes days, so the larger maps are **replicas** of one built map (by default
the 60-image XFeat map of the synthetic world): tile k is a copy of every database image and 3D point, moved k grid
cells away (cells far larger than the map), with its own image names (``tNNNNN/<name>``), image/camera/point ids,
COLMAP model, features.h5 group, global descriptor and index.h5 entry: a valid map in the current format, loaded by
the same code as any other. Tile 0 is the original, so the world's queries (with ground truth) localize in it.
Copies of one place have identical global descriptors; the replicas' are perturbed by Gaussian noise of norm
``--replica-noise`` (then re-normalised) so that retrieval ranks the original first rather than an arbitrary copy,
as it would rank a genuinely different place lower. Local features are copied unchanged.

For each size, two fresh processes (tracking mode, global mode) each report: start-up time (``Localizer(conf)``,
map load alone), RSS after start-up, per-frame latency (first frame and p50/p95 of the rest) and RSS after the
frames. Tracking mode gives each frame the ground-truth pose of the previous frame of its sequence as the prior
(the first frame its own), so every frame takes the tracking path whatever the previous result; global mode resets
the localizer before each frame (retrieval over the whole map).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_map_scale.py --sizes 60 1000 5000 10000
Writes benchmarks/results/bench_map_scale.{json,png,txt}. Replicas go to --work (default /tmp/imp_map_scale) and
those of 5,000 images and more are deleted after measuring unless --keep (they take ~0.4 MB of disk per image).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from imp_core.eval.report import dumps_strict  # noqa: E402

BASE_FEATURES = {"name": "xfeat", "max_keypoints": 2048}
BASE_MATCHER = {"name": "nn"}
LOCALIZER_CONF = {"matcher": {"name": "nn"},
                  "coarse": [{"name": "tracking"}, {"name": "retrieval", "top_k": 5}],
                  "acceptance": {"min_inliers": 20, "max_candidates": 5}}


# ------------------------------------------------------------------------------------------------ replication
def replicate_map(base: Path, out: Path, num_images: int, noise: float = 0.75, seed: int = 0,
                  progress: bool = True) -> Path:
    """Write a ``num_images``-image map into ``out`` made of shifted copies of ``base`` (see the module docstring).

    The last tile may be partial. Returns ``out``. Idempotent: an existing complete replica is kept."""
    import h5py
    import pycolmap
    from tqdm import tqdm

    from imp_core.mapping.features_io import FeatureStore, h5_key
    from imp_core.mapping.format import INDEX_FILE, index_from_reconstruction, read_map_meta, write_index

    meta = read_map_meta(base)
    if (out / "map.json").is_file() and json.loads((out / "map.json").read_text()).get("num_images") == num_images \
            and (out / INDEX_FILE).is_file():
        return out
    if out.exists():
        shutil.rmtree(out)
    (out / "reconstruction").mkdir(parents=True)
    rec = pycolmap.Reconstruction(str(base / "reconstruction"))
    names = sorted(img.name for img in rec.images.values() if img.has_pose)
    images = {img.name: img for img in rec.images.values()}
    n_base = len(names)
    tiles = -(-num_images // n_base)
    pts = {pid: p for pid, p in rec.points3D.items()}
    tracks = {pid: [(e.image_id, e.point2D_idx) for e in p.track.elements] for pid, p in pts.items()}
    base_xy = {n: np.array([p.xy for p in images[n].points2D], np.float64).reshape(-1, 2) for n in names}
    xyz = np.array([p.xyz for p in pts.values()])
    extent = float(np.ptp(xyz[:, :2], axis=0).max()) if len(xyz) else 1.0
    cell = 10.0 * extent + 1000.0  # far beyond any tracking radius or covisibility
    grid = int(np.ceil(np.sqrt(tiles)))
    id_stride = 10 ** int(np.ceil(np.log10(max(pts) + 1))) if pts else 1
    img_stride = 10 ** int(np.ceil(np.log10(max(images[n].image_id for n in names) + 1)))
    if id_stride * tiles >= 2**31:
        raise ValueError(f"{tiles} tiles of {len(pts)} points do not fit int32 point ids")
    with np.load(base / "global.npz", allow_pickle=False) as z:
        gnames = [str(s) for s in z["names"]]
        gdesc = z["descriptors"].astype(np.float32)
        garrays = {k: z[k] for k in z.files if k not in ("names", "descriptors")}
    grow = {n: i for i, n in enumerate(gnames)}
    rng = np.random.default_rng(seed)
    out_rec = pycolmap.Reconstruction()
    out_names: List[str] = []
    out_gdesc: List[np.ndarray] = []
    n_done = 0
    with h5py.File(base / "features.h5", "r") as src, h5py.File(out / "features.h5", "w") as dst:
        base_groups = {n: {k: src[h5_key(n)][k][()] for k in src[h5_key(n)].keys()} for n in names}
        base_attrs = {n: dict(src[h5_key(n)].attrs) for n in names}
        for k in tqdm(range(tiles), desc=f"replicating {base.name} x{tiles}", unit="tile", disable=not progress):
            off = np.array([(k % grid) * cell, (k // grid) * cell, 0.0])
            tile_names = names[: min(n_base, num_images - n_done)]
            for n in tile_names:
                img = images[n]
                new_name = n if k == 0 else f"t{k:05d}/{n}"
                iid = k * img_stride + img.image_id
                cam = rec.cameras[img.camera_id]
                new_cam = pycolmap.Camera(model=cam.model, width=cam.width, height=cam.height, params=cam.params)
                new_cam.camera_id = iid
                out_rec.add_camera_with_trivial_rig(new_cam)
                pose = img.cam_from_world()
                R = np.asarray(pose.rotation.matrix())
                t = np.asarray(pose.translation) - R @ off  # x_cam = R (x' - off) + t
                new_img = pycolmap.Image(name=new_name, keypoints=base_xy[n], camera_id=iid, image_id=iid)
                out_rec.add_image_with_trivial_frame(new_img, pycolmap.Rigid3d(pose.rotation, t))
                g = dst.create_group(h5_key(new_name))
                for a, v in base_attrs[n].items():
                    g.attrs[a] = v
                g.attrs["name"] = new_name
                for d, v in base_groups[n].items():
                    if d == "point3D_ids":
                        v = np.where(v >= 0, v + k * id_stride, -1).astype(np.int32)
                    g.create_dataset(d, data=v)
                v = gdesc[grow[n]]
                if k > 0:
                    v = v + rng.normal(0.0, noise / np.sqrt(len(v)), len(v)).astype(np.float32)
                    v = v / max(np.linalg.norm(v), 1e-12)
                out_names.append(new_name)
                out_gdesc.append(v)
            kept = {images[n].image_id for n in tile_names}
            for pid, p in pts.items():
                els = [e for e in tracks[pid] if e[0] in kept]
                if not els:  # every observation of the point is in images the partial tile leaves out
                    continue
                q = pycolmap.Point3D()
                q.xyz = p.xyz + off
                q.color = p.color
                q.error = p.error
                q.track = pycolmap.Track([pycolmap.TrackElement(k * img_stride + i, j) for i, j in els])
                out_rec.add_point3D_with_id(k * id_stride + pid, q)
            n_done += len(tile_names)
    out_rec.write_binary(str(out / "reconstruction"))
    order = np.argsort(np.array(out_names, dtype=object))
    np.savez(out / "global.npz", names=np.array(out_names)[order], descriptors=np.stack(out_gdesc)[order], **garrays)
    new_meta = {**meta, "map_id": f"{meta['map_id']}-x{num_images}", "num_images": num_images,
                "num_points3D": int(out_rec.num_points3D()), "replica_of": str(base), "replica_tiles": tiles,
                "replica_noise": noise, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    store = FeatureStore(out / "features.h5")
    try:
        idx = index_from_reconstruction(out_rec, store, sorted(out_names), meta["features"]["name"], progress)
    finally:
        store.close()
    write_index(out / INDEX_FILE, idx, new_meta)
    (out / "map.json").write_text(json.dumps(new_meta, indent=2, default=str))
    return out


# ------------------------------------------------------------------------------------------------ measuring
def _rss_mb() -> Dict[str, float]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024.0
    return {"rss_mb": out.get("VmRSS", float("nan")), "peak_rss_mb": out.get("VmHWM", float("nan"))}


def _queries(world: Path, per_condition: int):
    from imp_core.datasets import open_dataset
    from imp_core.localization.batch import order_for_tracking

    ds = open_dataset(world)
    out = []
    for cond in ds.conditions:
        out += order_for_tracking(ds.queries(cond))[:per_condition]
    return out


def measure(map_dir: str, world: str, mode: str, per_condition: int, cache_mb: float) -> dict:
    """One fresh process: start the localizer on ``map_dir`` and localize the queries in ``mode``."""
    import gc

    from imp_core.imageio import read_image
    from imp_core.localization import Localizer
    from imp_core.mapping import format as fmt
    from imp_core.types import pose_error

    queries = _queries(Path(world), per_condition)
    images = [read_image(q.path) for q in queries]  # decoded before timing (not part of a frame's latency)
    base_rss = _rss_mb()["rss_mb"]
    load_s = []
    orig = fmt.LocalizationMap.load.__func__

    def timed_load(cls, *a, **k):
        t = time.perf_counter()
        m = orig(cls, *a, **k)
        load_s.append(time.perf_counter() - t)
        return m

    fmt.LocalizationMap.load = classmethod(timed_load)
    t0 = time.perf_counter()
    loc = Localizer({**LOCALIZER_CONF, "map": map_dir, "map_cache_mb": cache_mb})
    startup_s = time.perf_counter() - t0
    fmt.LocalizationMap.load = classmethod(orig)
    gc.collect()
    rss_start = _rss_mb()
    frames = []
    prev_gt, prev_cond = None, None
    for q, img in zip(queries, images):
        c0 = time.process_time()
        if mode == "tracking":
            prior = prev_gt if prev_cond == q.condition else q.gt_pose
            res = loc.localize(img, q.camera, prior=prior, name=q.name)
        else:
            loc.reset()
            res = loc.localize(img, q.camera, name=q.name)
        cpu_ms = 1000 * (time.process_time() - c0)
        prev_gt, prev_cond = q.gt_pose, q.condition
        ok = res.pose is not None
        dt, dr = pose_error(res.pose, q.gt_pose) if ok else (float("inf"), float("inf"))
        frames.append({"name": q.name, "condition": q.condition, "mode": res.mode, "success": bool(res.success),
                       "t_err": dt, "r_err": dr, "timings_ms": dict(res.timings), "cpu_ms": cpu_ms})
    rss_end = _rss_mb()
    total = np.array([f["timings_ms"]["total"] for f in frames])
    stages = sorted({k for f in frames for k in f["timings_ms"]})

    def p(v, q):
        return float(np.percentile(v, q)) if len(v) else float("nan")

    rest = total[1:]
    cpu = np.array([f["cpu_ms"] for f in frames])
    return {
        "map": map_dir, "images": len(loc.map.names), "points3D": int(len(loc.map.all_points3D()[0])), "mode": mode,
        "startup_s": startup_s, "map_load_s": load_s[0] if load_s else float("nan"),
        "rss_before_start_mb": base_rss, "rss_after_start_mb": rss_start["rss_mb"],
        "rss_after_frames_mb": rss_end["rss_mb"], "peak_rss_mb": rss_end["peak_rss_mb"],
        "frames": len(frames), "first_frame_ms": float(total[0]) if len(total) else float("nan"),
        "p50_ms": p(rest, 50), "p95_ms": p(rest, 95), "first_frame_cpu_ms": float(cpu[0]) if len(cpu) else np.nan,
        "cpu_p50_ms": p(cpu[1:], 50),
        "stage_p50_ms": {s: p(np.array([f["timings_ms"].get(s, 0.0) for f in frames[1:]]), 50) for s in stages},
        "first_frame_stages_ms": frames[0]["timings_ms"] if frames else {},
        "recall_0.5m_5deg": float(np.mean([f["t_err"] <= 0.5 and f["r_err"] <= 5 for f in frames])),
        "localized": float(np.mean([f["success"] for f in frames])),
        "modes": {m: sum(f["mode"] == m for f in frames) for m in {f["mode"] for f in frames}},
        "cache": loc.map.cache_info(),
        "load_avg": os.getloadavg(),
    }


def _run_fresh(args: dict) -> dict:
    """``measure`` in a new interpreter (so RSS and start-up are those of a process that only did this)."""
    cmd = [sys.executable, __file__, "--worker", json.dumps(args)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"worker failed ({args}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ report
def _median_row(runs: List[dict]) -> dict:
    """One row for repeated runs of a size and mode: the median of every number (of nested dicts too)."""
    def med(vals):
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            return float(np.median(vals))
        if all(isinstance(v, (list, tuple)) for v in vals) and len({len(v) for v in vals}) == 1:
            return [med(list(c)) for c in zip(*vals)]
        if all(isinstance(v, dict) for v in vals):
            return {k: med([v.get(k, float("nan")) for v in vals]) for k in vals[0]}
        return vals[0]

    row = {k: med([r[k] for r in runs]) for k in runs[0]}
    row["images"] = int(row["images"])
    row["repeats"] = len(runs)
    return row


def format_table(rows: List[dict]) -> str:
    lines = [f"{'images':>7} {'mode':<9} {'start s':>8} {'load s':>7} {'RSS MB':>7} {'RSS end':>8} {'1st ms':>7} "
             f"{'p50 ms':>7} {'p95 ms':>7} {'cpu p50':>8} {'retr ms':>8} {'match':>6} {'recall':>7} {'load':>5}"]
    for r in rows:
        lines.append(f"{r['images']:>7} {r['mode']:<9} {r['startup_s']:8.2f} {r['map_load_s']:7.2f} "
                     f"{r['rss_after_start_mb']:7.0f} {r['rss_after_frames_mb']:8.0f} {r['first_frame_ms']:7.0f} "
                     f"{r['p50_ms']:7.0f} {r['p95_ms']:7.0f} {r['cpu_p50_ms']:8.0f} "
                     f"{r['stage_p50_ms'].get('retrieval', 0.0):8.1f} "
                     f"{r['stage_p50_ms'].get('matching', 0.0):6.0f} {100 * r['recall_0.5m_5deg']:6.1f}% "
                     f"{r['load_avg'][0]:5.1f}")
    lines.append("start s: Localizer(conf) incl. model creation; load s: LocalizationMap.load alone; RSS MB: after "
                 "start-up; 1st ms: the first frame; p50/p95: the other frames (wall); cpu p50: process CPU time "
                 "per frame; retr/match: p50 stage ms; recall at (0.5 m, 5 deg); load: 1-min load average of the "
                 "machine at the end")
    return "\n".join(lines)


def plot(rows: List[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for mode, ls in (("tracking", "-o"), ("global", "--s")):
        rs = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["images"])
        x = [r["images"] for r in rs]
        axes[0].plot(x, [r["rss_after_start_mb"] / 1024 for r in rs], ls, label=f"{mode}: after start-up")
        axes[0].plot(x, [r["rss_after_frames_mb"] / 1024 for r in rs], ls, alpha=0.5, label=f"{mode}: after frames")
        axes[1].plot(x, [r["startup_s"] for r in rs], ls, label=f"{mode}: Localizer()")
        axes[1].plot(x, [r["map_load_s"] for r in rs], ls, alpha=0.5, label=f"{mode}: map load")
        axes[2].plot(x, [r["p50_ms"] for r in rs], ls, label=f"{mode} p50")
        axes[2].plot(x, [r["first_frame_ms"] for r in rs], ls, alpha=0.5, label=f"{mode} first frame")
        axes[2].plot(x, [r["cpu_p50_ms"] for r in rs], ls, alpha=0.3, label=f"{mode} CPU p50")
    axes[0].axhline(4.0, color="r", lw=0.8, label="target 4 GB")
    axes[0].set(xscale="log", xlabel="database images", ylabel="RSS [GB]", title="memory")
    axes[1].set(xscale="log", xlabel="database images", ylabel="seconds", title="start-up")
    axes[2].set(xscale="log", xlabel="database images", ylabel="ms per frame", title="latency", ylim=(0, None))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", type=Path, default=ROOT / "data" / "world", help="synthetic world (queries; made if "
                                                                             "absent)")
    p.add_argument("--base-map", type=Path, default=ROOT / "data" / "maps" / "synthetic_default_xfeat_nn",
                   help="the map to replicate (built from --world with XFeat + NN if absent)")
    p.add_argument("--sizes", type=int, nargs="+", default=[60, 1000, 5000, 10000])
    p.add_argument("--modes", nargs="+", default=["tracking", "global"], choices=["tracking", "global"])
    p.add_argument("--per-condition", type=int, default=15, help="queries per condition (day, night)")
    p.add_argument("--repeats", type=int, default=1, help="runs per size and mode (the table gives their median)")
    p.add_argument("--cache-mb", type=float, default=256.0, help="the map's feature cache (map_cache_mb)")
    p.add_argument("--replica-noise", type=float, default=0.75)
    p.add_argument("--work", type=Path, default=Path("/tmp/imp_map_scale"), help="where replicas are written")
    p.add_argument("--keep", action="store_true", help="keep replicas of 5,000 images and more")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(measure(**json.loads(a.worker))))
        return 0
    from imp_core.mapping import build_map, read_map_meta
    from imp_core.world.synthetic import use_or_make_world

    use_or_make_world(a.world, preset="default")
    if not (a.base_map / "map.json").is_file():
        from imp_core.datasets import open_dataset

        build_map(open_dataset(a.world), a.base_map, {"features": BASE_FEATURES, "matcher": BASE_MATCHER})
    n_base = int(read_map_meta(a.base_map)["num_images"])
    maps: Dict[int, Path] = {}
    info: Dict[int, dict] = {}
    for n in a.sizes:
        t = time.time()
        maps[n] = a.base_map if n == n_base else replicate_map(a.base_map, a.work / f"x{n}", n, a.replica_noise)
        disk = sum(f.stat().st_size for f in maps[n].rglob("*") if f.is_file() and "build" not in f.parts)
        info[n] = {"replicated": maps[n] != a.base_map, "replicate_s": time.time() - t, "disk_mb": disk / 2**20}
    runs: List[dict] = []
    for rep in range(a.repeats):  # sizes interleaved: a busy spell of the machine hits every size alike
        for n in a.sizes:
            for mode in a.modes:
                r = _run_fresh({"map_dir": str(maps[n]), "world": str(a.world), "mode": mode,
                                "per_condition": a.per_condition, "cache_mb": a.cache_mb})
                r.update({**info[n], "repeat": rep})
                runs.append(r)
                print(format_table([r]).splitlines()[1], flush=True)
    rows = [_median_row([r for r in runs if r["images"] == runs_n and r["mode"] == mode])
            for runs_n in dict.fromkeys(r["images"] for r in runs) for mode in a.modes]
    for n, d in maps.items():
        if d != a.base_map and n >= 5000 and not a.keep:
            shutil.rmtree(d)
    table = format_table(rows)
    print(table)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "bench_map_scale.txt").write_text(table + "\n")
    (a.out / "bench_map_scale.json").write_text(dumps_strict({"rows": rows, "runs": runs, "args": {
        k: str(v) for k, v in vars(a).items() if k != "worker"}}, indent=1))
    plot(rows, a.out / "bench_map_scale.png")
    print(f"wrote {a.out / 'bench_map_scale.json'}, {a.out / 'bench_map_scale.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
