#!/usr/bin/env python
"""Seconds per matcher training step (forward, loss, backward, Adam) on a run's data, as the trainer takes them.

The model, its Sinkhorn (``sinkhorn_grad_iterations``) and the batches come from a training run's ``conf.json``
(its dumps, keypoint and match sampling, batch size); ``--keypoints`` / ``--max-inliers`` / ``--batch-size``
override them. The first ``--warmup`` steps are not timed (allocator, caches); each timed step runs on a batch of
its own, drawn with a fixed seed, so two checkouts of the code time the same batches and print the same losses::

    OMP_NUM_THREADS=1 python benchmarks/bench_train_step.py --run WORKDIR/runs/imp_xfeat --keypoints 1024 \\
        --max-inliers 1024 --batch-size 8

Writes ``<out>/bench_train_step.json`` (per-step seconds and losses, the median, the settings).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from imp_core.eval.report import dumps_strict  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="training run directory (with conf.json)")
    p.add_argument("--weights", default=None, help="start from these weights (default: the run's last.pth)")
    p.add_argument("--keypoints", type=int, default=None)
    p.add_argument("--max-inliers", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--steps", type=int, default=4, help="timed steps")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_train_step")
    a = p.parse_args()

    import torch

    from imp_core.matching.imp.checkpoint import load_model
    from imp_core.training.losses import total_loss
    from imp_core.training.trainer import make_datasets, run_conf

    torch.set_num_threads(a.threads)
    over = {k: v for k, v in (("n_keypoints", a.keypoints), ("max_inliers", a.max_inliers),
                              ("batch_size", a.batch_size)) if v is not None}
    try:
        conf, data = run_conf(a.run, over)
    except FileNotFoundError as e:
        raise SystemExit(f"--run {e}") from None
    weights = Path(a.weights) if a.weights else a.run / "last.pth"
    if not weights.is_file():
        raise SystemExit(f"{weights} does not exist (--weights PATH)")
    train_set, _ = make_datasets(data, conf)
    overrides = {k: v for k, v in conf["model"].items() if v is not None}
    model, _ = load_model(weights, conf["variant"], overrides)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=conf["lr"])
    gen = torch.Generator().manual_seed(conf["seed"])
    loader = iter(torch.utils.data.DataLoader(train_set, batch_size=conf["batch_size"], shuffle=True,
                                              generator=gen, drop_last=True))
    seconds, losses = [], []
    for i in range(a.warmup + a.steps):
        batch = next(loader)
        t = time.perf_counter()
        loss = total_loss(model(batch), batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= a.warmup:
            seconds.append(time.perf_counter() - t)
            losses.append(float(loss.detach()))
    res = {"run": str(a.run), "weights": str(weights), "threads": a.threads, "n_keypoints": conf["n_keypoints"],
           "max_inliers": conf["max_inliers"], "batch_size": conf["batch_size"],
           "sinkhorn_grad_iterations": model.conf.get("sinkhorn_grad_iterations"),
           "seconds": seconds, "losses": losses, "median_s": statistics.median(seconds)}
    print(f"{conf['batch_size']} pairs x {conf['n_keypoints']} keypoints, {a.threads} thread(s): median "
          f"{res['median_s']:.2f} s per step over {a.steps} (steps {[round(s, 2) for s in seconds]}; losses "
          f"{[round(x, 5) for x in losses]})")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "bench_train_step.json").write_text(dumps_strict(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
