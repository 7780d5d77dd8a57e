"""Matcher speed on real features: mutual NN, LighterGlue / LightGlue, GM, IMP, EIMP and EIMP with early stop.

    OMP_NUM_THREADS=1 python benchmarks/bench_matchers.py --features xfeat --sizes 1024 2048 --threads 1
    OMP_NUM_THREADS=1 python benchmarks/bench_matchers.py --features aliked --sizes 1024 2048 --threads 1
    python benchmarks/bench_matchers.py --inputs synthetic --random-init      # the old synthetic pair, no data

Inputs (``--inputs``, default ``world photos``), every matcher on the same pairs and the same features:
- ``world``: the synthetic world (``imp world --out data/world --preset default``, seed 0; rendered here when
  missing): evenly spread day and night queries, each with the database image that sees most of it (covisibility
  from the ground-truth depth and poses: query pixels are lifted to 3D and must land, unoccluded, in the database
  image). These pairs have intrinsics, so ``eimp+stop`` checks the relative pose (essential matrix).
- ``photos``: ``DSC_0410.JPG`` / ``DSC_0411.JPG`` (``--photos-dir``, evaluation photos: benchmarking only). They
  carry no EXIF focal, so the pair has no intrinsics and ``eimp+stop`` cannot stop on it unless
  ``--photo-focal`` gives a focal length in pixels.
- ``synthetic``: a generated pair (two calibrated views of one point cloud, 60 % shared keypoints, noisy random
  descriptors of the features' dimension): measures compute only.
Features are extracted once per size with ``max_keypoints`` = the size; images are scaled to ``--image-size``
(longer side; world images are upscaled) and, when an image still gives fewer than 90 % of the keypoints asked for,
upscaled by 1.5 (up to twice). Keypoints are kept in the original image's pixel coordinates.

Rows (``--matchers``):
- ``nn``: mutual nearest neighbour (``nn`` matcher);
- ``lighterglue`` (XFeat) / ``lightglue`` (ALIKED, DISK): the real pretrained weights with their default
  adaptivity (LighterGlue: width pruning 0.95, no depth stop; LightGlue: depth 0.95, width 0.99);
- ``gm``: the GM ablation (every layer computes its own attention, all iterations, no pooling, no stop) with the
  weights imp ships for the features (``gm_<features>.pth``) or ``--weights gm=PATH``; where there are none, the
  architecture of the IMP/EIMP weights with random weights: GM has no adaptivity, so its time does not depend on
  the weights (its match count and accuracy do: ignore them then);
- ``imp``: attention sharing (no pooling, no stop); ``eimp``: + adaptive pooling (no stop);
- ``eimp+stop``: + pose checks at the checkpoint iterations and early stop (pairs with intrinsics: essential
  matrix via the matcher's ``camera0`` / ``camera1`` context; pairs without intrinsics run as ``eimp``).
IMP/EIMP weights: ``--weights PATH`` (or ``imp=PATH eimp=PATH gm=PATH``), default the weights imp ships for the
features (``imp_core/matching/imp/weights/imp_<features>.pth``); ``--random-init`` builds the CPU architecture of
``imp train-matcher`` presets with random weights (compute only: pooling and the early stop need trained weights).

Per row and size: ms per pair (median over the pairs) as the CPU time of the calling thread (``time.thread_time``,
robust on a shared machine; ``--threads 1`` keeps all compute in that thread: torch and OpenCV are set to it) and
wall clock, peak memory (peak growth of the process RSS during the call, sampled every 2 ms; CUDA: max allocated),
matches; IMP family also iterations run (mean), tokens kept at the last iteration (mean per image and % of the
input) and the share of pairs that stopped early; LightGlue family the layers run. Accuracy, same calls (outside
the timing): on the world pairs the relative pose from each row's matches (essential matrix, 1 px) against the ground
truth, as the share within 5° and the median error. ``--n-layers N`` runs the first N iterations of the IMP weights
(GM too): every iteration has a trained head, so this is the shallower model a slow CPU may prefer. Ratios EIMP / GM and
EIMP(+stop) / LighterGlue (LightGlue) are printed per size. Writes ``bench_matchers_<features>_<device>.json``,
``.md`` and ``.png`` in ``--out``.
"""
from __future__ import annotations

import argparse
import ctypes
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from imp_core.eval.report import dumps_strict  # noqa: E402
from imp_core.matching.base import create_matcher  # noqa: E402
from imp_core.types import Camera, Features, Pose, backproject  # noqa: E402

DEFAULT_WORLD = ROOT / "data" / "world"
DEFAULT_PHOTOS = ROOT.parent / "shared" / "data"
PHOTOS = ("DSC_0410.JPG", "DSC_0411.JPG")
LIGHTGLUE_FOR = {"xfeat": "lighterglue", "aliked": "lightglue", "disk": "lightglue"}
IMP_ROWS = ("gm", "imp", "eimp", "eimp+stop")
ALL_ROWS = ("nn", "lighterglue", "lightglue") + IMP_ROWS
DESCRIPTOR_DIM = {"xfeat": 64, "aliked": 128, "disk": 128, "superpoint": 256, "sift": 128}


class Pair:
    """Two feature sets of one image pair per size; cameras when the pair has intrinsics."""

    def __init__(self, name: str, kind: str, cam0: Optional[Camera] = None, cam1: Optional[Camera] = None,
                 images=None, info: Optional[Dict[str, Any]] = None, gt: Optional[Pose] = None):
        self.name, self.kind, self.cam0, self.cam1 = name, kind, cam0, cam1
        self.gt = gt  # ground-truth relative pose cam1_from_cam0 (world pairs)
        self.images = images  # (rgb0, rgb1) or None (synthetic)
        self.info = info or {}
        self.features: Dict[int, tuple] = {}

    @property
    def context(self) -> Optional[Dict[str, Camera]]:
        return None if self.cam0 is None or self.cam1 is None else {"camera0": self.cam0, "camera1": self.cam1}


# ---- inputs ------------------------------------------------------------------------------------------------
def covisibility(world, q: str, db_names: Sequence[str], db_depth: Dict[str, np.ndarray], step: int = 16) -> np.ndarray:
    """Share of the query's valid depth pixels (grid of ``step``) that project, unoccluded, into each db image."""
    depth = world.depth(q)
    cam, pose = world.camera(q), world.pose(q)
    v, u = np.mgrid[step // 2:depth.shape[0]:step, step // 2:depth.shape[1]:step]
    z = depth[v, u]
    ok = z > 0
    uv = np.stack([u[ok], v[ok]], 1).astype(np.float64)
    if len(uv) == 0:
        return np.zeros(len(db_names))
    X = backproject(cam.K, pose, uv, z[ok].astype(np.float64))
    out = np.zeros(len(db_names))
    for j, name in enumerate(db_names):
        c, p, d = world.camera(name), world.pose(name), db_depth[name]
        xc = p.transform(X)
        x = xc @ c.K.T
        with np.errstate(divide="ignore", invalid="ignore"):
            px = x[:, :2] / x[:, 2:]
        ui, vi = np.round(px[:, 0]).astype(np.int64), np.round(px[:, 1]).astype(np.int64)
        inside = (xc[:, 2] > 0.1) & (ui >= 0) & (ui < d.shape[1]) & (vi >= 0) & (vi < d.shape[0])
        dz = d[vi[inside], ui[inside]]
        seen = (dz > 0) & (np.abs(dz - xc[inside, 2]) < 0.05 * xc[inside, 2])
        out[j] = seen.sum() / len(X)
    return out


def world_pairs(root: Path, n: int, min_covis: float = 0.3) -> List[Pair]:
    """``n`` pairs: day and night queries spread evenly, each with its most covisible database image."""
    from imp_core.world.synthetic import SyntheticWorld, use_or_make_world

    world = SyntheticWorld(use_or_make_world(root, preset="default", seed=0))
    db = world.db_names
    db_depth = {name: world.depth(name) for name in db}
    pairs: List[Pair] = []
    conds = world.conditions
    for ci, cond in enumerate(conds):
        want = n // len(conds) + int(ci < n % len(conds))
        names = sorted(world.query_names(cond))
        if want <= 0 or not names:
            continue
        scored = []
        for q in names:
            cov = covisibility(world, q, db, db_depth)
            j = int(np.argmax(cov))
            if cov[j] >= min_covis:
                scored.append((q, db[j], float(cov[j])))
        for k in np.unique(np.linspace(0, len(scored) - 1, min(want, len(scored))).round().astype(int)):
            q, r, c = scored[k]
            pairs.append(Pair(f"{q} ~ {r}", cond, world.camera(q), world.camera(r), (world.image(q), world.image(r)),
                              {"covisibility": round(c, 3)}, gt=world.pose(r) * world.pose(q).inverse()))
    return pairs


def photo_pairs(photos_dir: Path, focal: Optional[float]) -> List[Pair]:
    from imp_core.imageio import read_image

    paths = [photos_dir / p for p in PHOTOS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"photo pair not found: {', '.join(missing)} (set --photos-dir or drop 'photos' "
                                "from --inputs)")
    images = [read_image(p) for p in paths]
    cams: List[Optional[Camera]] = [None, None]
    if focal:
        cams = [Camera("SIMPLE_PINHOLE", im.shape[1], im.shape[0], [focal, im.shape[1] / 2, im.shape[0] / 2])
                for im in images]
    return [Pair(f"{PHOTOS[0]} ~ {PHOTOS[1]}", "photo", cams[0], cams[1], tuple(images),
                 {"intrinsics": f"guessed focal {focal:g} px" if focal else "none (no pose check)"})]


SYN_CAMERA = Camera("PINHOLE", 1024, 768, [800.0, 800.0, 512.0, 384.0])


def synthetic_features(n: int, dim: int, kind: str, seed: int = 0, shared: float = 0.6):
    """Two calibrated views of one point cloud: ``shared`` of the keypoints are projections of common points."""
    rng = np.random.default_rng(seed)
    m = int(n * shared)
    poses = [Pose(), Pose.from_center(np.eye(3), [1.5, 0.1, 0.3])]

    def project(p, pts):
        x = p.transform(pts) @ SYN_CAMERA.K.T
        return x[:, :2] / x[:, 2:]

    pts = rng.uniform([-6, -4, 8], [6, 4, 20], (4 * m, 3))
    inside = np.ones(len(pts), bool)
    for p in poses:
        uv = project(p, pts)
        inside &= (uv[:, 0] > 2) & (uv[:, 0] < 1021) & (uv[:, 1] > 2) & (uv[:, 1] < 765)
    pts = pts[inside][:m]
    base = rng.standard_normal((m, dim))
    feats = []
    for p in poses:
        uv = project(p, pts) + rng.normal(0, 0.5, (m, 2))
        desc = base + 0.4 * rng.standard_normal((m, dim))
        kp = np.concatenate([uv, rng.uniform([0, 0], [1024, 768], (n - m, 2))])
        desc = np.concatenate([desc, rng.standard_normal((n - m, dim))]).astype(np.float32)
        desc /= np.linalg.norm(desc, axis=1, keepdims=True)
        perm = rng.permutation(n)
        feats.append(Features(kp[perm], desc[perm], rng.uniform(0.1, 1, n), (1024, 768), kind))
    return feats[0], feats[1]


def extract_pairs(pairs: List[Pair], features: str, sizes: Sequence[int], image_size: int, device: str) -> Dict:
    """Fill ``pair.features[n]``; returns per-size statistics (keypoints per image, scales used)."""
    import cv2
    from tqdm import tqdm

    from imp_core.features.base import create_extractor

    stats: Dict[int, Dict[str, Any]] = {}
    for n in sizes:
        real = [p for p in pairs if p.images is not None]
        for p in pairs:
            if p.images is None:
                p.features[n] = synthetic_features(n, DESCRIPTOR_DIM.get(features, 64), features)
        if not real:
            stats[n] = {"keypoints_mean": float(n), "keypoints_min": n}
            continue
        ext = create_extractor({"name": features, "max_keypoints": n, "resize_max": None, "device": device})
        counts, scales = [], []
        for p in tqdm(real, desc=f"{features} features, {n} keypoints", leave=False):
            out = []
            for img in p.images:
                h, w = img.shape[:2]
                s = image_size / max(h, w)
                for _ in range(3):
                    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
                    im = img if s == 1 else cv2.resize(img, (int(round(w * s)), int(round(h * s))),
                                                       interpolation=interp)
                    f = ext.extract(im)
                    if len(f) >= 0.9 * n:
                        break
                    s *= 1.5
                f.keypoints = ((f.keypoints + 0.5) / s - 0.5).astype(np.float32)
                f.image_size = (w, h)
                out.append(f)
                counts.append(len(f))
                scales.append(s)
            p.features[n] = tuple(out)
        stats[n] = {"keypoints_mean": float(np.mean(counts)), "keypoints_min": int(np.min(counts)),
                    "image_scale_mean": float(np.mean(scales)), "image_scale_max": float(np.max(scales))}
        del ext
    return stats


# ---- matchers ----------------------------------------------------------------------------------------------
def imp_arch(weights: Optional[str], features: str, n_layers: Optional[int] = None) -> Dict[str, Any]:
    """The IMPModel conf of a weights file (tensors + stored conf), or the CPU preset architecture; ``n_layers``: the
    first iterations only (``--n-layers``)."""
    if weights:
        from imp_core.matching.imp.checkpoint import read_checkpoint

        arch = read_checkpoint(weights)[1]
    else:
        from imp_core.training.presets import PRESETS

        preset = PRESETS.get(f"imp_{features}")
        model = dict(preset["train"]["model"]) if preset else {"n_layers": 9, "num_heads": 1}
        model.pop("sinkhorn_grad_iterations", None)
        dim = DESCRIPTOR_DIM.get(features, 64)
        arch = {"descriptor_dim": dim, **model, "input_dim": dim}  # the preset's width may be narrower
    arch.pop("variant", None)
    if n_layers is not None:
        arch["n_layers"] = int(n_layers)
    return arch


def resolve_weights(spec: Sequence[str], features: str, random_init: bool) -> Dict[str, Optional[str]]:
    """Weights per IMP row: ``PATH`` (imp and eimp) or ``VARIANT=PATH``; default the shipped file."""
    from imp_core.matching.imp.checkpoint import shipped_weights
    from imp_core.matching.imp.model import VARIANTS

    out: Dict[str, Optional[str]] = {}
    for s in spec:
        if "=" in s:
            k, v = s.split("=", 1)
            if k not in VARIANTS:
                raise SystemExit(f"--weights: variant must be one of {VARIANTS}, got {k!r} in {s!r}")
            out[k] = v
        else:
            out["imp"] = out["eimp"] = s
    for k, v in out.items():
        if v and not Path(v).is_file():
            raise SystemExit(f"--weights: {k} weights {v} do not exist")
    if random_init:
        return {k: out.get(k) for k in ("gm", "imp", "eimp")}
    shipped = shipped_weights(features)
    for k in ("imp", "eimp"):
        if k not in out:
            if shipped is None:
                raise SystemExit(f"no IMP/EIMP weights ship for {features!r}: pass --weights PATH (e.g. a training "
                                 "checkpoint) or --random-init (compute only)")
            out[k] = str(shipped)
    gm = shipped_weights(features, "gm")  # the GM ablation weights, where imp ships them
    out.setdefault("gm", str(gm) if gm else None)
    return out


class PeakRSS:
    """Peak growth of the process RSS while active (CPU memory; sampled every 2 ms)."""

    def __enter__(self):
        import psutil

        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2 ** 20


class StageClock:
    """Thread CPU time per IMP step inside one call: the model's layers (``iterate``), matching heads (``assign``),
    mutual matches, pooling, and the pose checks (``iterative.estimate``). The wrappers only add timing."""

    STEPS = {"iterate": "layers", "assign": "heads", "matches": "mutual", "pool": "pooling"}

    def __init__(self) -> None:
        self.ms: Dict[str, float] = {}

    def _wrap(self, owner, attr: str, key: str) -> None:
        f = getattr(owner, attr)

        def timed_step(*a, **k):
            t = time.thread_time()
            try:
                return f(*a, **k)
            finally:
                self.ms[key] = self.ms.get(key, 0.0) + 1000 * (time.thread_time() - t)
        setattr(owner, attr, timed_step)

    def attach(self, model) -> None:
        for attr, key in self.STEPS.items():
            self._wrap(model, attr, key)

    def attach_pose_checks(self) -> None:
        from imp_core.matching.imp import iterative

        self._wrap(iterative, "estimate", "pose_checks")

    def take(self) -> Dict[str, float]:
        out, self.ms = self.ms, {}
        return out


def make_runners(names: Sequence[str], features: str, device: str, weights: Dict[str, Optional[str]],
                 iterative_mode: str, arch: Dict[str, Any], pool_threshold: Optional[float] = None,
                 checkpoints: Optional[Sequence[int]] = None, n_layers: Optional[int] = None,
                 stop_conf: Optional[Dict[str, Any]] = None) -> Dict[str, Callable[[Pair, int], Dict[str, Any]]]:
    """name -> run(pair, size) returning the per-call statistics. ``arch``: ``imp_arch`` of the IMP weights (built as
    is for random rows); ``n_layers``: IMP rows (GM included) run the first ``n_layers`` iterations of their weights
    (each has a trained head); ``stop_conf``: matcher conf keys of the eimp+stop row (``stop_inliers``, ...)."""
    runners: Dict[str, Callable[[Pair, int], Dict[str, Any]]] = {}
    clock = StageClock()
    clock.attach_pose_checks()
    depth = {} if n_layers is None else {"n_layers": int(n_layers)}
    for name in names:
        if name == "nn":
            m = create_matcher({"name": "nn", "device": device})
            runners[name] = (lambda mm: lambda p, n: _out(mm.match(*p.features[n])))(m)
        elif name in ("lighterglue", "lightglue"):
            m = create_matcher({"name": name, "device": device, "features": features})

            def run_lg(p, n, mm=m):
                res = mm.match(*p.features[n])
                return {**_out(res), "layers": float(res.info.get("layers_run", float("nan")))}
            runners[name] = run_lg
        else:
            variant = "eimp" if name == "eimp+stop" else name
            stop = name == "eimp+stop"
            conf: Dict[str, Any] = {"name": variant, "device": device, "early_stop": stop,
                                    "iterative_mode": iterative_mode, "features": features}
            if stop and checkpoints is not None:
                conf["checkpoints"] = list(checkpoints)
            if stop:
                conf.update(stop_conf or {})
            w = weights.get(variant)
            if w:
                conf["weights"] = w
                conf["model"] = dict(depth)
            else:
                conf.update(allow_random_init=True, model=dict(arch))
            if variant == "eimp" and pool_threshold is not None:
                conf["model"] = {**conf.get("model", {}), "pool_threshold": pool_threshold}
            m = create_matcher(conf)
            clock.attach(m.model)

            def run_imp(p, n, mm=m, stop=stop):
                f0, f1 = p.features[n]
                clock.take()
                res = mm.match(f0, f1, p.context if stop else None)
                split = clock.take()
                i = res.info
                return {**_out(res), "iterations": int(i["iterations"]), "early_stop": bool(i["early_stop"]),
                        "tokens0": int(i["tokens0"]), "tokens1": int(i["tokens1"]),
                        "kept_share": 0.5 * (i["tokens0"] / max(1, len(f0)) + i["tokens1"] / max(1, len(f1))),
                        "pooling_steps": int(i.get("pooling_steps", 0)), "split_ms": split}
            runners[name] = run_imp
    return runners


def _out(res) -> Dict[str, Any]:
    """A call's match count and matches (``idx``: used for the pose error after the timed call, then dropped)."""
    return {"matches": len(res), "idx": np.asarray(res.indices).reshape(-1, 2)}


def pose_error(p: Pair, idx: np.ndarray, n: int) -> Optional[float]:
    """Relative pose error of a call's matches (degrees, max of rotation and translation direction; inf when no
    pose): essential matrix (USAC_MAGSAC, 1 px) and cheirality, as a pair's pose would be computed. None without
    ground truth."""
    if p.gt is None or p.cam0 is None or p.cam1 is None:
        return None
    from imp_core.matching.imp.geometry import PairGeometry

    f0, f1 = p.features[n]
    idx = np.asarray(idx, np.int64)
    est = PairGeometry(p.cam0, p.cam1, 1.0).estimate(f0.keypoints[idx[:, 0]], f1.keypoints[idx[:, 1]]) \
        if len(idx) >= 5 else None
    return float("inf") if est is None else relative_pose_error_deg(est, p.gt)


def relative_pose_error_deg(est, gt: Pose) -> float:
    """Max of the rotation angle and the translation-direction angle (sign-free) of ``est`` against ``gt``."""
    from imp_core.matching.imp.geometry import vector_angle_deg
    from imp_core.types import rotation_angle_deg

    dt = vector_angle_deg(est.t, gt.t)
    return max(rotation_angle_deg(est.R, gt.R), min(dt, 180.0 - dt))


def timed(run: Callable[[], Dict[str, Any]], device: str) -> Dict[str, Any]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t = time.perf_counter()
        out = run()
        torch.cuda.synchronize()
        wall = time.perf_counter() - t
        return {**out, "ms": 1000 * wall, "wall_ms": 1000 * wall,
                "peak_mib": (torch.cuda.max_memory_allocated() - base) / 2 ** 20}
    with PeakRSS() as pk:
        t, c = time.perf_counter(), time.thread_time()
        out = run()
        cpu, wall = time.thread_time() - c, time.perf_counter() - t
    return {**out, "ms": 1000 * cpu, "wall_ms": 1000 * wall, "peak_mib": pk.mib}


def bench(pairs: List[Pair], sizes: Sequence[int], names: Sequence[str], runners, device: str,
          repeats: int = 1) -> List[Dict[str, Any]]:
    """Per size: one warm-up call per matcher, then every pair through every matcher (interleaved, so slow drifts
    of a shared machine's load hit all rows alike). Returns one row per (size, matcher) and the per-pair calls."""
    from tqdm import tqdm

    rows = []
    for n in sizes:
        calls: Dict[str, List[Dict[str, Any]]] = {name: [] for name in names}
        for name in names:
            runners[name](pairs[0], n)  # warm-up (allocator, lazy init)
        for p in tqdm(pairs, desc=f"matching at {n} keypoints"):
            for name in names:
                best = None
                for _ in range(max(1, repeats)):
                    r = timed(lambda: runners[name](p, n), device)
                    best = r if best is None or r["ms"] < best["ms"] else best
                assert best is not None
                err = pose_error(p, best.pop("idx"), n)
                calls[name].append({"pair": p.name, "kind": p.kind, "intrinsics": p.context is not None, **best,
                                    "pose_error_deg": err})
        for name in names:
            rows.append(summarize(name, n, calls[name], device))
    return rows


def summarize(name: str, n: int, calls: List[Dict[str, Any]], device: str) -> Dict[str, Any]:
    def med(k):
        return float(np.median([c[k] for c in calls]))

    row: Dict[str, Any] = {"device": device, "keypoints": n, "matcher": name, "pairs": len(calls),
                           "ms": med("ms"), "wall_ms": med("wall_ms"),
                           "ms_mean": float(np.mean([c["ms"] for c in calls])),
                           "peak_mib": float(max(c["peak_mib"] for c in calls)),
                           "matches": float(np.mean([c["matches"] for c in calls]))}
    errs = [c["pose_error_deg"] for c in calls if c.get("pose_error_deg") is not None]
    if errs:
        row.update(pose_pairs=len(errs), pose_ok_5deg=float(np.mean(np.array(errs) < 5.0)),
                   pose_error_median_deg=float(np.median(errs)))
    if "iterations" in calls[0]:
        tok = [0.5 * (c["tokens0"] + c["tokens1"]) for c in calls]
        row.update(iterations=float(np.mean([c["iterations"] for c in calls])),
                   tokens_kept=float(np.mean(tok)),
                   tokens_kept_pct=100 * float(np.mean([c["kept_share"] for c in calls])),
                   early_stop_share=float(np.mean([c["early_stop"] for c in calls])),
                   pooled_share=float(np.mean([c["pooling_steps"] > 0 for c in calls])))
        with_geo = [c["early_stop"] for c in calls if c["intrinsics"]]
        row["early_stop_share_with_intrinsics"] = float(np.mean(with_geo)) if with_geo else 0.0
    if "layers" in calls[0]:
        row["layers"] = float(np.mean([c["layers"] for c in calls]))
    if "split_ms" in calls[0]:  # median over the pairs of each step's CPU ms (steps that did not run count 0)
        keys = list(dict.fromkeys(k for c in calls for k in c["split_ms"]))
        row["split_ms"] = {k: float(np.median([c["split_ms"].get(k, 0.0) for c in calls])) for k in keys}
    row["calls"] = calls
    return row


# ---- reporting ---------------------------------------------------------------------------------------------
def ratios(rows: List[Dict[str, Any]], lg_name: Optional[str]) -> Dict[str, Dict[str, float]]:
    by = {(r["keypoints"], r["matcher"]): r for r in rows}
    out: Dict[str, Dict[str, float]] = {}
    for n in sorted({r["keypoints"] for r in rows}):
        d: Dict[str, float] = {}
        for a, b in (("eimp", "gm"), ("eimp+stop", "gm"), ("imp", "gm"), ("eimp", lg_name), ("eimp+stop", lg_name)):
            if b and (n, a) in by and (n, b) in by and by[(n, b)]["ms"] > 0:
                d[f"{a}/{b}"] = by[(n, a)]["ms"] / by[(n, b)]["ms"]
                d[f"{a}/{b} wall"] = by[(n, a)]["wall_ms"] / max(1e-9, by[(n, b)]["wall_ms"])
        out[str(n)] = d
    return out


def checks(rat: Dict[str, Dict[str, float]], lg_name: Optional[str]) -> List[str]:
    """The issue's targets: EIMP >= 2x faster than GM at 2048; EIMP not slower than LighterGlue at each size (both
    without and with the early stop)."""
    lines = []
    for n, d in rat.items():
        for a in ("eimp", "eimp+stop"):
            k = f"{a}/gm"
            if n == "2048" and k in d:
                lines.append(f"- {n}: {a} / gm = {d[k]:.2f} (target <= 0.50): {'PASS' if d[k] <= 0.5 else 'FAIL'}")
        for a in ("eimp", "eimp+stop"):
            k = f"{a}/{lg_name}"
            if k in d:
                lines.append(f"- {n}: {a} / {lg_name} = {d[k]:.2f} (target <= 1.00): "
                             f"{'PASS' if d[k] <= 1.0 else 'FAIL'}")
    return lines


def table(rows: List[Dict[str, Any]]) -> str:
    lines = ["| keypoints | matcher | ms/pair (CPU) | wall ms | peak MiB | matches | pose error < 5° (median) | "
             "iterations | tokens kept/image (last it.) | stopped early | pooled |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "iterations" in r:
            it = f"{r['iterations']:.1f}"
            tok = f"{r['tokens_kept']:.0f} ({r['tokens_kept_pct']:.0f} %)"
            stop = f"{100 * r['early_stop_share']:.0f} %"
            if r["matcher"] == "eimp+stop":
                stop += f" ({100 * r['early_stop_share_with_intrinsics']:.0f} % of pairs with intrinsics)"
            pooled = f"{100 * r['pooled_share']:.0f} %"
        else:
            it = f"{r['layers']:.1f} layers" if "layers" in r else "-"
            tok = stop = pooled = "-"
        pose = (f"{round(r['pose_ok_5deg'] * r['pose_pairs'])}/{r['pose_pairs']} ({r['pose_error_median_deg']:.2f}°)"
                if "pose_pairs" in r else "-")
        lines.append(f"| {r['keypoints']} | {r['matcher']} | {r['ms']:.0f} | {r['wall_ms']:.0f} | "
                     f"{r['peak_mib']:.0f} | "
                     f"{r['matches']:.0f} | {pose} | {it} | {tok} | {stop} | {pooled} |")
    return "\n".join(lines)


def plot(rows: List[Dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["matcher"] for r in rows))
    sizes = sorted({r["keypoints"] for r in rows})
    by = {(r["keypoints"], r["matcher"]): r for r in rows}
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(names), 4.2))
    width = 0.8 / len(sizes)
    for k, n in enumerate(sizes):
        xs = [i + (k - (len(sizes) - 1) / 2) * width for i in range(len(names))]
        ys = [by[(n, m)]["ms"] if (n, m) in by else 0 for m in names]
        bars = ax.bar(xs, ys, width, label=f"{n} keypoints")
        for b, y in zip(bars, ys):
            ax.annotate(f"{y:.0f}", (b.get_x() + b.get_width() / 2, y), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names)
    ax.set_ylabel("ms per pair (median, CPU time)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", default="xfeat", choices=["xfeat", "aliked", "disk"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048], help="max keypoints per image")
    ap.add_argument("--inputs", nargs="+", default=["world", "photos"], choices=["world", "photos", "synthetic"])
    ap.add_argument("--world", type=Path, default=DEFAULT_WORLD, help="synthetic world (default preset, seed 0)")
    ap.add_argument("--photos-dir", type=Path, default=DEFAULT_PHOTOS)
    ap.add_argument("--photo-focal", type=float, default=None,
                    help="focal length (px) to assume for the photo pair (default: none, no pose check on it)")
    ap.add_argument("--pairs-limit", type=int, default=12, help="world pairs (half day, half night queries)")
    ap.add_argument("--image-size", type=int, default=1024, help="longer image side for extraction (px)")
    ap.add_argument("--matchers", nargs="+", default=None,
                    help="rows (default: nn, lighterglue|lightglue, gm, imp, eimp, eimp+stop)")
    ap.add_argument("--weights", nargs="+", default=[], metavar="[VARIANT=]PATH",
                    help="IMP/EIMP weights (PATH for imp and eimp, or gm=/imp=/eimp=PATH); default: shipped weights")
    ap.add_argument("--random-init", action="store_true",
                    help="random IMP/EIMP weights with the CPU preset architecture (compute only)")
    ap.add_argument("--pool-threshold", type=float, default=None,
                    help="EIMP rows: assignment mass below which a token may be pruned (default: the weights' conf; "
                         "with a pose, eimp+stop uses 0.2 x its inlier ratio instead)")
    ap.add_argument("--iterative-mode", default="localization", choices=["localization", "released"])
    ap.add_argument("--checkpoints", type=int, nargs="+", default=None,
                    help="eimp+stop: iterations with a pose check (default: the matcher's, 2 ... last in localization "
                         "mode)")
    ap.add_argument("--stop-inliers", type=int, default=None,
                    help="eimp+stop: RANSAC inliers of a pose that stops on its own (default: the matcher's; 0: only "
                         "two agreeing poses stop)")
    ap.add_argument("--stop-inlier-ratio", type=float, default=None,
                    help="eimp+stop: inlier ratio of a pose that stops on its own (default: the matcher's)")
    ap.add_argument("--checkpoint-sinkhorn", type=int, default=None,
                    help="eimp+stop: Sinkhorn scalings of the checkpoint heads (default: the matcher's; 0: the "
                         "model's)")
    ap.add_argument("--ransac-method", default=None,
                    help="eimp+stop: OpenCV estimator of the pose checks (default: the matcher's, USAC_DEFAULT; the "
                         "evaluation of every row keeps USAC_MAGSAC)")
    ap.add_argument("--n-layers", type=int, default=None,
                    help="IMP rows (GM too) run only the first N iterations of the weights (default: all)")
    ap.add_argument("--repeats", type=int, default=1, help="timed calls per pair (the fastest is kept)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch and OpenCV threads (use 1)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--tag", default=None, help="file name tag (default: <features>_<device>)")
    return ap


def stop_conf(args) -> Dict[str, Any]:
    """The eimp+stop row's stop rule from ``--stop-inliers`` / ``--stop-inlier-ratio`` / ``--checkpoint-sinkhorn`` /
    ``--ransac-method`` (empty: the matcher's)."""
    out: Dict[str, Any] = {}
    if args.stop_inliers is not None:
        out["stop_inliers"] = args.stop_inliers or None
    if args.stop_inlier_ratio is not None:
        out["stop_inlier_ratio"] = args.stop_inlier_ratio
    if args.checkpoint_sinkhorn is not None:
        out["checkpoint_sinkhorn_iterations"] = args.checkpoint_sinkhorn or None
    if args.ransac_method is not None:
        out["ransac_method"] = args.ransac_method
    return out


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.threads:
        import cv2

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    lg_name = LIGHTGLUE_FOR.get(args.features)
    names = args.matchers or ["nn", lg_name, "gm", "imp", "eimp", "eimp+stop"]
    bad = [n for n in names if n not in ALL_ROWS]
    if bad:
        raise SystemExit(f"--matchers: unknown rows {bad}; choose from {list(ALL_ROWS)}")
    if lg_name not in names:
        lg_name = next((n for n in names if n in ("lighterglue", "lightglue")), None)
    weights = resolve_weights(args.weights, args.features, args.random_init)

    pairs: List[Pair] = []
    if "world" in args.inputs and args.pairs_limit > 0:
        pairs += world_pairs(args.world, args.pairs_limit)
    if "photos" in args.inputs:
        pairs += photo_pairs(args.photos_dir, args.photo_focal)
    if "synthetic" in args.inputs:
        pairs.append(Pair("synthetic", "synthetic", SYN_CAMERA, SYN_CAMERA))
    if not pairs:
        raise SystemExit("no image pairs: check --inputs / --pairs-limit")
    kp_stats = extract_pairs(pairs, args.features, args.sizes, args.image_size, args.device)
    arch = imp_arch(weights.get("eimp") or weights.get("imp"), args.features, args.n_layers)
    runners = make_runners(names, args.features, args.device, weights, args.iterative_mode, arch, args.pool_threshold,
                           args.checkpoints, args.n_layers, stop_conf(args))
    rows = bench(pairs, args.sizes, names, runners, args.device, args.repeats)
    for r in rows:  # a randomly initialised GM times the architecture; its matches mean nothing
        if r["matcher"] == "gm" and not weights.get("gm"):
            for k in ("pose_pairs", "pose_ok_5deg", "pose_error_median_deg"):
                r.pop(k, None)
    rat = ratios(rows, lg_name)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "device": args.device, "platform": platform.platform(),
        "cpu": platform.processor(), "features": args.features, "sizes": args.sizes, "inputs": args.inputs,
        "pairs": [{"name": p.name, "kind": p.kind, "intrinsics": p.context is not None, **p.info} for p in pairs],
        "keypoints": {str(k): v for k, v in kp_stats.items()}, "image_size": args.image_size,
        "weights": {k: (v or "random") for k, v in weights.items()}, "imp_architecture": arch,
        "iterative_mode": args.iterative_mode, "repeats": args.repeats, "pool_threshold": args.pool_threshold,
        "checkpoints": args.checkpoints, "n_layers": args.n_layers, "stop": stop_conf(args),
        "notes": ["gm: the IMP/EIMP architecture without sharing, all iterations; "
                  + ("random weights (GM has no adaptivity: its time does not depend on the weights; ignore its "
                     "match count)" if not weights.get("gm") else f"weights {weights['gm']}"),
                  "ms: median over the pairs of the calling thread's CPU time; wall_ms: median wall clock",
                  "pose error: relative pose from each row's matches (essential matrix, USAC_MAGSAC 1 px, "
                  "cheirality) against the ground truth of the world pairs; max of rotation and translation-"
                  "direction angles; no pose counts as a failure",
                  "eimp+stop: pose checks only on pairs with intrinsics"
                  + ("" if args.photo_focal else " (the photo pair has none)")],
    }
    result = {"meta": meta, "rows": rows, "ratios": rat, "checks": checks(rat, lg_name)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = args.tag or f"{args.features}_{args.device.split(':')[0]}"
    stem = out / f"bench_matchers_{tag}"
    Path(f"{stem}.json").write_text(dumps_strict(result, indent=1))
    n_geo = sum(p.context is not None for p in pairs)
    md = [f"# Matchers on {args.features} features ({args.device})", "",
          f"Run {meta['date']}, torch {meta['torch']}, {meta['threads']} thread(s); {len(pairs)} pairs "
          f"({', '.join(f'{k}: {sum(p.kind == k for p in pairs)}' for k in dict.fromkeys(p.kind for p in pairs))}; "
          f"{n_geo} with intrinsics); keypoints per image: "
          + ", ".join(f"{k}: {v['keypoints_mean']:.0f} (min {v['keypoints_min']})" for k, v in kp_stats.items()),
          f"IMP/EIMP weights: {meta['weights']}; architecture {arch}; iterative mode {args.iterative_mode}"
          + (f"; EIMP pool_threshold {args.pool_threshold}" if args.pool_threshold is not None else "") + ".", "",
          table(rows), "", "Ratios (CPU time; wall in the JSON):", ""]
    for n, d in rat.items():
        md.append(f"- {n}: " + ", ".join(f"{k} {v:.2f}" for k, v in d.items() if not k.endswith("wall")))
    if not (weights.get("eimp") and weights.get("imp")):
        result["checks"].append("- random IMP/EIMP weights: compute only (pooling and the early stop need trained "
                                "weights); these rows say nothing about the targets")
    split_rows = [r for r in rows if r.get("split_ms")]
    if split_rows:
        md += ["", "Where the IMP rows' CPU time goes (median ms per pair; layers = attention + MLP iterations, "
               "heads = Sinkhorn assignments, pose checks = RANSAC at checkpoints):", ""]
        md += [f"- {r['keypoints']} {r['matcher']}: " + ", ".join(f"{k} {v:.0f}" for k, v in r["split_ms"].items())
               for r in split_rows]
    md += ["", "Targets (issue 13):", ""] + result["checks"] + ["", "Notes:", ""] + [f"- {x}" for x in meta["notes"]]
    md_text = "\n".join(md) + "\n"
    Path(f"{stem}.md").write_text(md_text)
    plot(rows, Path(f"{stem}.png"), f"{args.features}, {len(pairs)} pairs, {args.device}, {meta['threads']} thread(s), "
         f"weights {Path(str(weights.get('eimp') or 'random')).name}")
    print(md_text)
    print(f"wrote {stem}.json, .md, .png")
    return result


if __name__ == "__main__":
    main()
