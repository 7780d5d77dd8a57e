"""Time and peak memory per image pair: mutual NN, LightGlue (kornia), GM, IMP, EIMP at 512-4096 keypoints.

    python benchmarks/bench_matchers.py --out benchmarks/results            # CPU (and CUDA when present)
    python benchmarks/bench_matchers.py --sizes 512 1024 --devices cpu      # quick run

Inputs are a synthetic pair (two calibrated views of one 3D point cloud, 60 % of the keypoints shared, noisy
descriptors, 1024x768). Learned matchers run with random weights unless ``--weights`` names official files (none
ship offline), so by default the numbers measure compute, not accuracy, and EIMP's pooling / the early stop
rarely trigger (they need trained matchability). Rows:
- ``gm``: 15 iterations, no sharing, no early stop (the SuperGlue-style baseline);
- ``imp``: attention sharing only; ``eimp``: sharing + adaptive pooling (both without early stop);
- ``eimp+stop``: EIMP with the pose check (essential matrix) and early stop, as used for pairs with intrinsics;
- ``lightglue``: kornia LightGlue, 9 layers, adaptive depth/width off (random weights make them meaningless);
- ``nn``: mutual nearest neighbour on the descriptors.
Time: CUDA wall clock (synchronized); CPU the CPU time of the calling thread (``time.thread_time``, robust on a
shared machine; run with ``--threads 1`` so all compute stays in that thread; wall clock is in the JSON).
Peak memory: CUDA ``max_memory_allocated``; CPU the peak growth of the process RSS during the call (sampled).
Writes ``bench_matchers_<tag>.json`` and ``.md`` (table) in ``--out``.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from imp_core.matching.base import create_matcher  # noqa: E402
from imp_core.types import Camera, Features, Pose  # noqa: E402

CAMERA = Camera("PINHOLE", 1024, 768, [800.0, 800.0, 512.0, 384.0])


def synthetic_pair(n: int, seed: int = 0, shared: float = 0.6, dim: int = 256):
    rng = np.random.default_rng(seed)
    m = int(n * shared)
    poses = [Pose(), Pose.from_center(np.eye(3), [1.5, 0.1, 0.3])]

    def project(p, pts):
        x = p.transform(pts) @ CAMERA.K.T
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
        feats.append(Features(kp[perm], desc[perm], rng.uniform(0.1, 1, n), (1024, 768), "superpoint"))
    return feats[0], feats[1]


def mutual_nn(f0: Features, f1: Features, device: str) -> int:
    d0 = torch.from_numpy(f0.descriptors).to(device)
    d1 = torch.from_numpy(f1.descriptors).to(device)
    sim = d0 @ d1.T
    i01, i10 = sim.argmax(1), sim.argmax(0)
    return int((i10[i01] == torch.arange(len(d0), device=device)).sum())


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


def make_runners(device: str, weights: Dict[str, str]) -> Dict[str, Callable[[Features, Features], Dict]]:
    from kornia.feature import LightGlue

    torch.manual_seed(0)
    lg = LightGlue(features=None, input_dim=256, depth_confidence=-1, width_confidence=-1).eval().to(device)

    def run_lightglue(f0, f1):
        def img(f):
            return {"keypoints": torch.from_numpy(f.keypoints)[None].to(device),
                    "descriptors": torch.from_numpy(f.descriptors)[None].to(device),
                    "image_size": torch.tensor([f.image_size], dtype=torch.float32, device=device)}
        with torch.no_grad():
            out = lg({"image0": img(f0), "image1": img(f1)})
        return {"matches": int(out["matches"][0].shape[0])}

    def imp_family(name, early):
        conf = {"name": name, "device": device, "early_stop": early}
        conf.update({"weights": weights[name]} if name in weights else {"allow_random_init": True})
        m = create_matcher(conf)
        ctx = {"camera0": CAMERA, "camera1": CAMERA} if early else None

        def run(f0, f1):
            res = m.match(f0, f1, ctx)
            return {"matches": len(res), **{k: res.info[k] for k in ("iterations", "tokens0", "tokens1")}}
        return run

    return {
        "nn": lambda f0, f1: {"matches": mutual_nn(f0, f1, device)},
        "lightglue": run_lightglue,
        "gm": imp_family("gm", False),
        "imp": imp_family("imp", False),
        "eimp": imp_family("eimp", False),
        "eimp+stop": imp_family("eimp", True),
    }


def bench(device: str, sizes: List[int], repeats: Dict[int, int], names: List[str],
          weights: Dict[str, str]) -> List[Dict]:
    from tqdm import tqdm

    runners = make_runners(device, weights)
    rows = []
    jobs = [(n, name) for n in sizes for name in names]
    for n, name in tqdm(jobs, desc=f"bench {device}"):
        f0, f1 = synthetic_pair(n)
        run = runners[name]
        if n <= 1024:
            run(f0, f1)  # warm-up
        times, wall, out, mem = [], [], {}, 0.0
        for _ in range(repeats.get(n, 1)):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                t = time.perf_counter()
                out = run(f0, f1)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
                wall.append(times[-1])
                mem = max(mem, (torch.cuda.max_memory_allocated() - base) / 2 ** 20)
            else:
                with PeakRSS() as pk:
                    t, c = time.perf_counter(), time.thread_time()
                    out = run(f0, f1)
                    wall.append(time.perf_counter() - t)
                    times.append(time.thread_time() - c)
                mem = max(mem, pk.mib)
        rows.append({"device": device, "keypoints": n, "matcher": name, "ms": 1000 * float(np.median(times)),
                     "wall_ms": 1000 * float(np.median(wall)),
                     "repeats": len(times), "peak_mib": mem, **out})
    return rows


def table(rows: List[Dict]) -> str:
    names = list(dict.fromkeys(r["matcher"] for r in rows))
    lines = []
    for device in dict.fromkeys(r["device"] for r in rows):
        sizes = sorted({r["keypoints"] for r in rows if r["device"] == device})
        lines += [f"**{device}** (ms per pair / peak MiB)", "",
                  "| matcher | " + " | ".join(str(s) for s in sizes) + " |",
                  "|---|" + "---|" * len(sizes)]
        for name in names:
            cells = []
            for s in sizes:
                r = next((r for r in rows if (r["device"], r["keypoints"], r["matcher"]) == (device, s, name)), None)
                extra = f", it {r['iterations']}, tok {r['tokens0']}/{r['tokens1']}" if r and "iterations" in r else ""
                cells.append("-" if r is None else f"{r['ms']:.0f} / {r['peak_mib']:.0f}{extra}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
        gm = {r["keypoints"]: r["ms"] for r in rows if r["device"] == device and r["matcher"] == "gm"}
        for name, what in (("imp", "attention sharing (imp vs gm)"), ("eimp", "+ pooling (eimp vs gm)"),
                           ("eimp+stop", "+ early stop (eimp+stop vs gm)")):
            cur = {r["keypoints"]: r["ms"] for r in rows if r["device"] == device and r["matcher"] == name}
            if gm and cur:
                saves = ", ".join(f"{s}: {100 * (1 - cur[s] / gm[s]):+.0f} %" for s in sizes if s in gm and s in cur)
                lines.append(f"- time saved by {what}: {saves}")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    ap.add_argument("--repeats", type=int, nargs="+", default=[2, 1, 1, 1],
                    help="timed repeats per size (same order as --sizes; the median is reported)")
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    ap.add_argument("--matchers", nargs="+", default=["nn", "lightglue", "gm", "imp", "eimp", "eimp+stop"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--weights", nargs="+", default=[], metavar="VARIANT=PATH",
                    help="official weights, e.g. imp=imp_spp.pth eimp=eimp_spp.pth gm=superglue_outdoor.pth "
                         "(default: random weights, so pooling and early stop rarely trigger)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--tag", default=None, help="file name tag (default: the devices)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    repeats = {s: args.repeats[min(i, len(args.repeats) - 1)] for i, s in enumerate(args.sizes)}
    weights = dict(w.split("=", 1) for w in args.weights)
    rows = []
    for d in devices:
        rows += bench(d, args.sizes, repeats, args.matchers, weights)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "platform": platform.platform(),
            "cpu": platform.processor(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "weights": weights or "random"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = args.tag or "_".join(devices)
    (out / f"bench_matchers_{tag}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    md = (f"Run {meta['date']}, torch {meta['torch']}, {meta['threads']} CPU threads, GPU: {meta['cuda']}, "
          f"weights: {meta['weights']}\n\n" + table(rows))
    (out / f"bench_matchers_{tag}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
