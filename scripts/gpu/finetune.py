"""On a bare GPU machine: build ``imp_xfeat``'s training data there and fine-tune the shipped weights at 1024 keypoints
within a time budget (``scripts/gpu/prepare.py`` writes what has to travel; docs/IMP.md, "On a GPU").

Data, built in parallel processes: the preset's training worlds (seeds 11-14) rendered and dumped with XFeat on the
GPU, minus the pairs held out on the preparing machine (``heldout.json``); homography pairs from the carried photos
with seeds other than the local dump's (fresh warps). Training: from ``imp_xfeat.pth``, 1024 keypoints with
U[32, MAXIN] matches (default 1024: every ground-truth match of a pair can be drawn; CPU fine-tunes with 256 were
below the shipped weights on a validation world at every snapshot, with 1024 above at two of three; docs/IMP.md
"fine-tunes at 1024 keypoints"), 50/50 synthetic / homography, Adam 1e-4 constant for 70 % of the steps then down
to 1e-5, fp32 with TF32 matrix products; the step count comes from a timed probe so that training ends by
``DEADLINE_S``. Snapshots at 50 / 70 / 85 / 100 % (``ft_<step>.pth``), the mean of the weights at 8 steps of the
second half (``ft_mean.pth``, exported like a shipped file), ``log.jsonl``, ``curves.png``, ``data.json`` and
``run.log`` go to ``OUT``. Where pycolmap is missing the worlds keep their database poses in JSON (``nocolmap.py``).

    OUT=out DEADLINE_S=480 PYTHONPATH=/tmp/site:$PWD python3 scripts/gpu/finetune.py

Env: OUT, DEADLINE_S (seconds from the start), GPU_DIR (default .gpu), WORK (default /tmp/w), DEV (cuda|cpu),
PRESET (world preset), SEEDS ("11 12 13 14"), PPP (homography pairs per photo, 64), HPROC (homography processes, 8),
MAXPHOTOS, MAXIN (1024), BS (16), WORKERS (10 DataLoader workers), RENDER_WORKERS (3 per world), PROBE (40
steps), MINSTEPS (100), LOGEVERY (10), WORLD0 (1: also render the seed-0 world for ``bench.sh``).
"""
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

T0 = time.time()
OUT = Path(os.environ["OUT"])
W = Path(os.environ.get("WORK", "/tmp/w"))
GPU_DIR = Path(os.environ.get("GPU_DIR", ".gpu"))
DEV = os.environ.get("DEV", "cuda")
PRESET = os.environ.get("PRESET", "default")
SEEDS = [int(s) for s in os.environ.get("SEEDS", "11 12 13 14").split()]
PPP = int(os.environ.get("PPP", "64"))
HPROC = int(os.environ.get("HPROC", "8"))
MAXPHOTOS = int(os.environ.get("MAXPHOTOS", "0")) or None
DEADLINE = float(os.environ.get("DEADLINE_S", "520"))
FEATS = {"name": "xfeat", "max_keypoints": 1024, "device": DEV}
LOG = open(OUT / "run.log", "a", buffering=1)


def say(*a):
    msg = f"[{time.time() - T0:7.1f}s] " + " ".join(str(x) for x in a)
    print(msg, flush=True)
    LOG.write(msg + "\n")


def _quiet():
    os.environ["OMP_NUM_THREADS"] = "1"
    import cv2
    import torch
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def job_world(seed, preset=PRESET, dump=True):
    """Render the world of ``seed`` and dump it with XFeat (``dump``); the benchmarks' seed-0 world for ``bench.sh``
    is rendered with ``preset="default", dump=False``."""
    _quiet()
    import nocolmap
    nocolmap.apply()
    from imp_core.training.dump import dump_synthetic
    from imp_core.world.synthetic import make_world
    t = time.time()
    make_world(W / f"world_s{seed}", preset, seed, progress=False, workers=int(os.environ.get("RENDER_WORKERS", 3)))
    out = {"seed": seed, "render_s": time.time() - t}
    if dump:
        t = time.time()
        out.update(dump_synthetic(W / f"world_s{seed}", W / "raw" / f"syn_s{seed}.h5", {"features": FEATS},
                                  ["day", "night"]), dump_s=time.time() - t)
    return out


def job_hom(i, photos):
    _quiet()
    from imp_core.training.homography import dump_homography
    t = time.time()
    res = dump_homography([str(p) for p in photos], W / "dumps" / f"hom_{i}.h5",
                          {"features": FEATS, "pairs_per_photo": PPP, "seed": 101 + i}, progress=False)
    return {"proc": i, "s": time.time() - t, **res}


def drop_heldout(src, dst, heldout):
    """Copy a dump without the pairs held out on the local machine (by image names)."""
    import h5py
    bad = {tuple(p) for p in heldout}
    with h5py.File(src, "r") as a, h5py.File(dst, "w") as b:
        for k, v in a.attrs.items():
            b.attrs[k] = v
        a.copy(a["features"], b, name="features")
        gp = b.create_group("pairs")
        n = dropped = 0
        for k in sorted(a["pairs"], key=int):
            g = a["pairs"][k]
            if (str(g.attrs["name0"]), str(g.attrs["name1"])) in bad:
                dropped += 1
                continue
            a.copy(g, gp, name=str(n))
            n += 1
    return n, dropped


def main():
    sys.path.insert(0, os.getcwd())  # the repository root (spawned workers inherit sys.path)
    (W / "raw").mkdir(parents=True, exist_ok=True)
    (W / "dumps").mkdir(parents=True, exist_ok=True)
    from imp_core.training.homography import find_photos
    photos = find_photos([str(GPU_DIR / "photos")])[:MAXPHOTOS]
    say("photos", len(photos), "device", DEV)
    chunks = [photos[i::HPROC] for i in range(HPROC)]
    # not a multiprocessing.Pool: its workers are daemonic and could not start make_world's render workers
    with ProcessPoolExecutor(len(SEEDS) + HPROC + 1, mp_context=mp.get_context("spawn")) as ex:
        rw = [ex.submit(job_world, s) for s in SEEDS]
        r0 = ex.submit(job_world, 0, "default", False) if os.environ.get("WORLD0", "1") == "1" else None
        rh = [ex.submit(job_hom, i, c) for i, c in enumerate(chunks) if c]
        info = {"worlds": [r.result() for r in rw], "homography": [r.result() for r in rh],
                "world0_s": r0.result()["render_s"] if r0 is not None else None}
    say("data", json.dumps(info))
    heldout = json.loads((GPU_DIR / "heldout.json").read_text())
    for s in SEEDS:
        n, d = drop_heldout(W / "raw" / f"syn_s{s}.h5", W / "dumps" / f"syn_s{s}.h5", heldout.get(str(s), []))
        info.setdefault("dropped", {})[s] = [n, d]
    say("held-out pairs dropped", info["dropped"])
    (OUT / "data.json").write_text(json.dumps(info, indent=1))

    import torch
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    from imp_core.training.trainer import train
    syn = [W / "dumps" / f"syn_s{s}.h5" for s in SEEDS]
    hom = sorted((W / "dumps").glob("hom_*.h5"))
    conf = {"variant": "imp", "init_weights": "imp_core/matching/imp/weights/imp_xfeat.pth",
            "model": {"n_layers": 9, "num_heads": 1, "sinkhorn_grad_iterations": 3, "keypoint_encoder": [32, 64]},
            "n_keypoints": 1024, "min_inliers": 32, "max_inliers": int(os.environ.get("MAXIN", 1024)),
            "batch_size": int(os.environ.get("BS", 16)),
            "lr": 1e-4, "min_lr": 1e-6, "amp": False, "device": DEV,
            "num_workers": int(os.environ.get("WORKERS", 10)), "max_val_pairs": 24,
            "log_every": int(os.environ.get("LOGEVERY", 10)),
            "dump_weights": [0.5 / len(syn)] * len(syn) + [0.5 / len(hom)] * len(hom)}
    data = syn + hom
    # probe: seconds per step
    probe = W / "probe"
    P = int(os.environ.get("PROBE", 40))
    r = train(data, probe, {**conf, "steps": P, "decay_step": 10**9, "decay": 1.0, "val_every": 10**9,
                            "ckpt_every": 10**9}, progress=False)
    rows = [x for x in r["log"] if "loss" in x]
    a, b = next(x for x in rows if x["step"] >= P // 4), rows[-1]
    sps = (b["time_s"] - a["time_s"]) / max(1, b["step"] - a["step"])
    left = DEADLINE - (time.time() - T0) - 40  # 4 stage starts + validations
    n = max(int(os.environ.get("MINSTEPS", 100)), int(left / (sps * 1.08)))
    decay_step = int(0.7 * n)
    decay = 0.1 ** (1.0 / max(1, n - decay_step))
    say(f"probe: {sps * 1000:.1f} ms/step, {left:.0f} s left -> {n} steps, anneal from {decay_step}, "
        f"first losses {[round(x['loss'], 3) for x in rows[:3]]} last {rows[-1]['loss']:.3f}")
    run = W / "run"
    # the mean of the weights at 8 evenly spaced steps of the second half (trainer's average_every): single
    # snapshots of CPU fine-tunes swung by a validation query from one to the next (docs/IMP.md)
    conf.update({"decay_step": decay_step, "decay": decay, "ckpt_every": 10**9,
                 "average_every": max(1, (n - n // 2) // 8), "average_from": n // 2})
    marks = sorted({int(n * f) for f in (0.5, 0.7, 0.85)} | {n})
    for i, m in enumerate(marks):
        r = train(data, run, {**conf, "steps": m, "val_every": m}, resume=i > 0, progress=False)
        shutil.copy(run / "last.pth", OUT / f"ft_{m}.pth")
        val = [x for x in r["log"] if "val_loss" in x][-1]
        say(f"snapshot {m}: device held-out P {val['precision']:.3f} R {val['recall']:.3f} "
            f"loss {val['val_loss']:.3f}")
    from imp_core.training.recipe import export_weights
    mean = export_weights(run, OUT / "ft_mean.pth", which="last")
    means = [x for x in r["log"] if "averaged" in x]
    say(f"ft_mean.pth: mean of {mean['averaged']} snapshots" + (
        f", device held-out P {means[-1]['precision']:.3f} R {means[-1]['recall']:.3f} loss "
        f"{means[-1]['val_loss']:.3f}" if means else ""))
    shutil.copy(run / "log.jsonl", OUT / "log.jsonl")
    shutil.copy(run / "curves.png", OUT / "curves.png")
    say("done")


if __name__ == "__main__":
    main()
