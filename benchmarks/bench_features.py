"""Benchmark the local feature extractors and the basic matchers on a real 640x480 pair.

Per extractor: ms per extraction (median of ``--runs``), keypoints; per matcher on that extractor's features: ms per
pair, matches and fundamental-matrix inliers (OpenCV USAC_MAGSAC, 1 px). Each extractor runs in a fresh process so
that the peak RSS it reports is its own (after extraction, then after matching); CUDA peak memory is reported when
the device is CUDA. Prints a table, writes ``bench_features.json`` and ``bench_features.png`` to ``--out``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_features.py --out /tmp/bench

SuperPoint weights are not shipped: pass ``--superpoint-weights superpoint_v1.pth``; without it SuperPoint is timed
with random weights (network cost only; its matches are meaningless and are not reported).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from imp_core.eval.report import dumps_strict  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("IMP_SHARED_DATA", ROOT.parent / "shared" / "data"))
MATCHERS_FOR = {"aliked": ["nn", "lightglue"], "disk": ["nn", "lightglue"]}


def load_frame(path: Path, size=(640, 480)) -> np.ndarray:
    """Centre-crop a photo to the aspect of ``size`` and resize it: an RGB uint8 frame."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    h, w = img.shape[:2]
    tw, th = size
    if w * th > h * tw:
        cw = int(round(h * tw / th))
        img = img[:, (w - cw) // 2:(w - cw) // 2 + cw]
    else:
        ch = int(round(w * th / tw))
        img = img[(h - ch) // 2:(h - ch) // 2 + ch]
    img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def f_inliers(f0, f1, m) -> int:
    import cv2

    if len(m) < 8:
        return 0
    p0 = f0.keypoints[m.indices[:, 0]].astype(np.float64)
    p1 = f1.keypoints[m.indices[:, 1]].astype(np.float64)
    _, mask = cv2.findFundamentalMat(p0, p1, cv2.USAC_MAGSAC, 1.0, 0.999, 10000)
    return 0 if mask is None else int(mask.sum())


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def timed(fn, runs: int):
    """(median ms over ``runs`` calls after one warm-up call, last result)."""
    import torch

    out = fn()
    times = []
    for _ in range(runs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times), out


def bench_one(name: str, conf: Dict[str, Any], frames, runs: int, match: bool) -> Dict[str, Any]:
    """Run in a fresh process: build, time extraction, then time each applicable matcher."""
    import torch

    from imp_core.features.base import create_extractor
    from imp_core.matching.base import create_matcher

    cuda = conf.get("device", "auto") != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    ext = create_extractor(conf)
    res: Dict[str, Any] = {"extractor": name, "device": getattr(ext, "device", "cpu"),
                           "torch_threads": torch.get_num_threads(), "build_ms": 1000 * (time.perf_counter() - t)}
    res["extract_ms"], f0 = timed(lambda: ext.extract(frames[0]), runs)
    f1 = ext.extract(frames[1])
    res.update(keypoints=[len(f0), len(f1)], descriptor_dim=int(f0.descriptors.shape[1]),
               extract_peak_rss_mb=peak_rss_mb())
    if cuda:
        res["extract_cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    res["matchers"] = []
    if not match:
        return res
    for mname in MATCHERS_FOR.get(name, ["nn"]):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        matcher = create_matcher({"name": mname, "device": conf.get("device", "auto")})
        ms, m = timed(lambda: matcher.match(f0, f1), runs)
        row = {"matcher": mname, "match_ms": ms, "matches": len(m), "f_inliers": f_inliers(f0, f1, m),
               "peak_rss_mb": peak_rss_mb()}
        if cuda:
            row["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        res["matchers"].append(row)
    return res


def random_superpoint_weights(path: Path) -> Path:
    import torch

    from imp_core.features.superpoint import SuperPointNet

    torch.manual_seed(0)
    torch.save(SuperPointNet().state_dict(), path)
    return path


def print_table(results: List[Dict[str, Any]]) -> str:
    head = (f"{'extractor':<20}{'kpts':>11}{'extract ms':>12}{'RSS MB':>8} | {'matcher':<10}{'pair ms':>9}"
            f"{'matches':>9}{'F-inl':>7}{'inl %':>7}{'RSS MB':>8}")
    lines = [head, "-" * len(head)]
    for r in results:
        left = (f"{r['label']:<20}{'/'.join(map(str, r['keypoints'])):>11}{r['extract_ms']:>12.1f}"
                f"{r['extract_peak_rss_mb']:>8.0f}")
        if "extract_cuda_peak_mb" in r:
            left += f" (cuda {r['extract_cuda_peak_mb']:.0f} MB)"
        if not r["matchers"]:
            lines.append(left + " | -")
        for i, m in enumerate(r["matchers"]):
            pct = 100.0 * m["f_inliers"] / max(1, m["matches"])
            right = (f"{m['matcher']:<10}{m['match_ms']:>9.1f}{m['matches']:>9}{m['f_inliers']:>7}{pct:>7.1f}"
                     f"{m['peak_rss_mb']:>8.0f}")
            if "cuda_peak_mb" in m:
                right += f" (cuda {m['cuda_peak_mb']:.0f} MB)"
            lines.append((left if i == 0 else " " * len(left)) + " | " + right)
    text = "\n".join(lines)
    print(text)
    return text


def plot(results: List[Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    labels = [r["label"] for r in results]
    axes[0].bar(labels, [r["extract_ms"] for r in results], color="tab:blue")
    axes[0].set_ylabel("ms per 640x480 extraction (median)")
    axes[0].set_title("extraction")
    pairs = [(f"{r['label']}\n+{m['matcher']}", m) for r in results for m in r["matchers"]]
    x = np.arange(len(pairs))
    axes[1].bar(x - 0.2, [m["matches"] for _, m in pairs], 0.4, label="matches", color="tab:gray")
    axes[1].bar(x + 0.2, [m["f_inliers"] for _, m in pairs], 0.4, label="F-inliers", color="tab:green")
    axes[1].set_xticks(x, [p for p, _ in pairs], fontsize=8)
    axes[1].legend()
    axes[1].set_title("matching DSC_0410 / DSC_0411")
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    from tqdm import tqdm

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", nargs=2, type=Path,
                   default=[DEFAULT_DATA / "DSC_0410.JPG", DEFAULT_DATA / "DSC_0411.JPG"])
    p.add_argument("--extractors", default="sift,aliked,disk,xfeat,superpoint")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--max-keypoints", type=int, default=2048)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--superpoint-weights", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="folder for bench_features.json / .png")
    args = p.parse_args(argv)

    frames = [load_frame(path) for path in args.images]
    names = [n.strip() for n in args.extractors.split(",") if n.strip()]
    results = []
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        for name in tqdm(names, desc="extractors"):
            conf: Dict[str, Any] = {"name": name, "max_keypoints": args.max_keypoints, "device": args.device}
            label, match = name, True
            if name == "superpoint":
                if args.superpoint_weights is None:
                    conf["weights"] = str(random_superpoint_weights(Path(tmp) / "superpoint_random.pth"))
                    label, match = "superpoint (random)", False
                else:
                    conf["weights"] = str(args.superpoint_weights)
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                res = pool.submit(bench_one, name, conf, frames, args.runs, match).result()
            res["label"] = label
            results.append(res)
    table = print_table(results)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        meta = {"images": [str(x) for x in args.images], "frame_size": [640, 480], "runs": args.runs,
                "max_keypoints": args.max_keypoints, "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
        (args.out / "bench_features.json").write_text(dumps_strict({"meta": meta, "results": results}, indent=2))
        (args.out / "bench_features.txt").write_text(table + "\n")
        plot(results, args.out / "bench_features.png")
        print(f"wrote {args.out / 'bench_features.json'} and bench_features.png")
    return results


if __name__ == "__main__":
    main()
