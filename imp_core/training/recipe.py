"""``imp train-matcher --preset NAME``: render, dump, train in stages, export the weights and a model card.

Every step reuses what a previous (interrupted) run left in ``workdir``: complete worlds are reused, the homography
dump resumes, training resumes from ``runs/NAME/last.pth``. The exported file holds the model state dict, the model
conf (``num_heads`` etc., which the tensors cannot tell) and the training step: no optimizer state, so it stays
small. It loads with the ``imp`` / ``eimp`` / ``gm`` matchers' ``weights`` key (``weights_only=True``).
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..matching.imp.checkpoint import parse_checkpoint
from ..matching.imp.model import IMPModel
from ..world.synthetic import make_world
from .calibrate import calibrate_pool_threshold, pool_threshold_table, pooling_masses
from .dump import dump_synthetic, read_dump_info
from .homography import dump_homography
from .presets import PRESETS
from .trainer import train


def preset(name: str) -> Dict[str, Any]:
    if name not in PRESETS:
        raise ValueError(f"unknown matcher preset {name!r}; available: {', '.join(sorted(PRESETS))}")
    return json.loads(json.dumps(PRESETS[name]))


def _dump_ok(path: Path) -> bool:
    try:
        return read_dump_info(path)["pairs"] > 0
    except (OSError, ValueError, KeyError):
        return False


def build_data(p: Mapping[str, Any], workdir: Path, progress: bool = True) -> Dict[str, List[Path]]:
    """Worlds and dumps of a preset under ``workdir`` (reused when complete); returns dump paths by source."""
    feats = dict(p["features"])
    fname = feats["name"]
    out: Dict[str, List[Path]] = {"synthetic": [], "homography": []}
    syn = p["data"]["synthetic"]
    for seed in syn["seeds"]:
        world = workdir / f"world_s{seed}"
        make_world(world, syn["preset"], int(seed), progress=progress)
        dump = workdir / "dumps" / f"syn_s{seed}_{fname}.h5"
        if not _dump_ok(dump):
            dump_synthetic(world, dump, {"features": {**feats, "device": "auto"}}, syn["conditions"])
        out["synthetic"].append(dump)
    hom = p["data"]["homography"]
    missing = [r for r in hom["roots"] if not Path(r).expanduser().exists()]
    if missing:
        raise FileNotFoundError(f"photo folders {missing} not found: the homography pairs come from the Debian "
                                f"packages {hom['packages']} (sudo apt-get install {' '.join(hom['packages'])})")
    dump = workdir / "dumps" / f"homography{hom['pairs_per_photo']}_{fname}.h5"
    dump_homography(hom["roots"], dump, {"features": {**feats, "device": "cpu"},
                                         "pairs_per_photo": hom["pairs_per_photo"]}, progress=progress)
    out["homography"].append(dump)
    return out


def export_weights(run_dir: Path, out: Path, which: str = "best",
                   calibration_dumps: Sequence[Path] = (), pool_threshold: Optional[float] = None) -> Dict[str, Any]:
    """Copy the model of ``run_dir/{which}.pth`` (without optimizer state) to ``out``: its weight average where the
    run kept one (``average_every``), else its weights. With ``calibration_dumps``, EIMP's pooling threshold is
    calibrated on their held-out pairs and stored in the conf; a given ``pool_threshold`` is stored instead, with
    what it prunes on those pairs."""
    src = run_dir / f"{which}.pth"
    ck = torch.load(src, map_location="cpu", weights_only=True)
    slim = {k: ck[k] for k in ("epoch", "iteration", "model", "min_loss", "conf") if k in ck}
    averaged = int(ck.get("averaged", 0)) if ck.get("average") is not None else 0
    if averaged:
        slim["model"] = ck["average"]
    calibration = None
    if calibration_dumps:
        state, conf = parse_checkpoint(slim, src)  # the file read above, not a second torch.load
        model = IMPModel({**conf, "variant": "eimp"})
        model.load_state_dict(state)
        train_conf = json.loads((run_dir / "conf.json").read_text())["train"]
        masses = pooling_masses(model, calibration_dumps, val_fraction=train_conf["val_fraction"],
                                seed=train_conf["seed"])
        calibration = {**(calibrate_pool_threshold(masses) if pool_threshold is None
                          else pool_threshold_table(masses, pool_threshold)), "fixed": pool_threshold is not None}
        slim["conf"] = json.dumps({**json.loads(slim.get("conf") or "{}"),
                                   "pool_threshold": calibration["pool_threshold"]})
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(slim, str(out))
    return {"file": str(out), "bytes": out.stat().st_size, "step": int(ck["iteration"]), "averaged": averaged,
            "parameters": int(sum(v.numel() for v in slim["model"].values())), "calibration": calibration}


def model_card(name: str, p: Mapping[str, Any], run_dir: Path, exported: Mapping[str, Any],
               dumps: Mapping[str, List[Path]], card_dir: Path) -> Path:
    """``docs/models/NAME.md`` + ``NAME_curves.png``: data, steps, wall time, held-out precision/recall, size."""
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    evals = [r for r in log if "precision" in r]
    train_rows = [r for r in log if "time_s" in r]
    card_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "curves.png").is_file():
        shutil.copy(run_dir / "curves.png", card_dir / f"{name}_curves.png")
    data_lines = []
    for src, paths in dumps.items():
        for d in paths:
            info = read_dump_info(d)
            data_lines.append(f"| {src} | `{d.name}` | {info['pairs']} | {info['images']} |")
    conf = json.loads((run_dir / "conf.json").read_text())
    cal = exported.get("calibration")
    # the run's model conf with what the export stored over it (the pooling threshold)
    model_conf = {**conf["model"], **({"pool_threshold": cal["pool_threshold"]} if cal else {})}
    size_line = (f"{exported['parameters']:,}; file size {exported['bytes'] / 1e6:.2f} MB; "
                 f"exported at step {exported['step']}")
    where = p.get("output") or Path(exported["file"]).name  # the preset's repository path of the file
    hours, processes = training_time(train_rows)
    trainer = {k: v for k, v in conf["train"].items() if k != "model"}
    started = ""
    warm = next((r for r in log if "warm_start" in r), None)
    if warm is not None:  # the preset's repository path, not the absolute one the run resolved
        trainer["warm_start"] = p["train"].get("warm_start", trainer.get("warm_start"))
        pca = (", the input projection from the principal directions of the training descriptors"
               if "input_proj.weight" in warm["fresh"] else "")
        unshared = ("; GM's layers where IMP shares attention take the query / key projections of the layer whose "
                    "attention IMP reused there and IMP's value projection and merge, `warm_start.unshare`"
                    if warm.get("unshared") else "")
        started = (f"- Started from `{trainer['warm_start']}` (warm start: {warm['copied']} tensors copied; new: "
                   f"{', '.join(warm['fresh']) or 'none'}{pca}{unshared})\n")
    model_evals = [r for r in evals if "averaged" not in r]  # the run's weights (not their mean)
    best = min(model_evals, key=lambda r: r["val_loss"]) if model_evals else {}
    last = model_evals[-1] if model_evals else {}
    if exported.get("averaged"):  # the file is the mean of the last stage's snapshots, evaluated at the end
        mean: Dict[str, Any] = next((r for r in reversed(evals) if "averaged" in r), {})
        eval_rows = [_eval_row("lowest loss", best), _eval_row("last", last),
                     _eval_row(f"mean of {exported['averaged']} snapshots (exported)", mean)]
        size_line += f" as the mean of the weights at {exported['averaged']} steps (`average_every`)"
    else:
        eval_rows = [_eval_row("lowest loss", best), _eval_row("last (exported)", last)]
    if warm is not None and evals and evals[0]["step"] == 0:  # the warm-started model before any step
        eval_rows.insert(0, _eval_row("start (warm)", evals[0]))
    text = f"""# Matcher weights `{where}` (preset `{name}`)

Reproduce: `imp train-matcher --preset {name} --workdir WORKDIR` (resumable; then the same command exports).

- Features: `{json.dumps(p['features'])}`
- Model: `{json.dumps(model_conf)}`
- Parameters: {size_line}
- Trainer: `{json.dumps(trainer)}`
{started}- Stages: `{json.dumps(p['stages'])}`
- Training wall time: {hours:.1f} h over {processes} training
  processes (resumed across sessions; one CPU thread on a 2-core machine shared with other jobs; `log.jsonl` in the
  run directory has every step)

## Data (no MegaDepth; `../shared/data/sacre_coeur_mapping` never used)
| source | dump | pairs | images |
|---|---|---|---|
{chr(10).join(data_lines)}

Synthetic worlds: `imp world --preset {p['data']['synthetic']['preset']}` with seeds {p['data']['synthetic']['seeds']}
(the demo and benchmarks use seed 0), day and night queries. Homography pairs: photos under
{p['data']['homography']['roots']} (Debian packages {', '.join(p['data']['homography']['packages'])}),
random crops, rotations up to 35 deg, scale 0.6-1.5, perspective, and a night rendering of one image in 40 %.

## Held-out pairs (last iteration, mutual matches with p > 0.2)
| checkpoint | step | precision | recall | loss |
|---|---|---|---|---|
{chr(10).join(eval_rows)}

{_calibration_text(exported.get("calibration"))}
![curves]({name}_curves.png)
"""
    path = card_dir / f"{name}.md"
    path.write_text(text)
    return path


def training_time(train_rows: Sequence[Mapping[str, Any]]) -> Tuple[float, int]:
    """(hours, processes) of a run's training log: ``time_s`` counts from each (re)start, so it drops at a resume;
    each process adds the last time it logged."""
    times = [float(r["time_s"]) for r in train_rows]
    ends = [a for a, b in zip(times, times[1:]) if b < a] + times[-1:]
    return sum(ends) / 3600, len(ends)


def _eval_row(label: str, r: Mapping[str, Any]) -> str:
    """One row of the model card's held-out table: step, precision, recall, loss (nan where not evaluated)."""
    vals = " | ".join(f"{r.get(k, float('nan')):.3f}" for k in ("precision", "recall", "val_loss"))
    return f"| {label} | {r.get('step', '-')} | {vals} |"


def _calibration_text(cal: Optional[Mapping[str, Any]]) -> str:
    if not cal:
        return ""
    rows = "\n".join(f"| {i} | {r['unmatched_below']:.0%} | {r['matched_below']:.1%} | "
                     f"{r['unmatched']} | {r['matched']} |" for i, r in sorted(cal["per_iteration"].items()))
    if cal.get("fixed"):
        head = f"""
## EIMP pooling threshold (set by the preset; what it prunes on the held-out pairs, `imp_core/training/calibrate.py`)
`pool_threshold` = {cal['pool_threshold']:.2f} (the preset's `pool_threshold`, see its comment): it prunes at most
{cal['max_lost']:.1%} of the ground-truth matched tokens at any pooling iteration (1024 keypoints per image, all
ground-truth matches kept)."""
    else:
        head = f"""
## EIMP pooling threshold (calibrated on the held-out pairs; `imp_core/training/calibrate.py`)
`pool_threshold` = {cal['pool_threshold']:.2f}: the largest value that keeps {1 - cal['max_lost']:.0%} of the
ground-truth matched tokens at every pooling iteration (1024 keypoints per image, all ground-truth matches kept)."""
    return f"""{head}
| iteration | unmatched tokens below | matched tokens below | unmatched | matched |
|---|---|---|---|---|
{rows}
"""


RUNTIME_KEYS = ("device", "num_workers", "amp")  # trainer settings of the machine, not of the recipe


def run_preset(name: str, workdir, steps: Optional[int] = None, export: bool = True, progress: bool = True,
               repo_root: Optional[Path] = None, runtime: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Run every stage of preset ``name`` (resuming), then export weights + model card into the repository.
    ``runtime``: trainer settings of the machine (``RUNTIME_KEYS``: device, DataLoader workers, autocast)."""
    runtime = dict(runtime or {})
    unknown = sorted(set(runtime) - set(RUNTIME_KEYS))
    if unknown:
        raise ValueError(f"run_preset: {unknown} are recipe settings, not runtime ones (allowed: {RUNTIME_KEYS})")
    p = preset(name)
    workdir = Path(workdir).expanduser()
    root = Path(repo_root) if repo_root else Path(__file__).resolve().parents[2]
    dumps = build_data(p, workdir, progress)
    run_dir = workdir / "runs" / name
    t0 = time.time()
    stages = p["stages"]
    if steps is not None:
        stages = [s for s in stages if s["steps"] < steps] + [{**stages[-1], "steps": int(steps)}]
    res: Dict[str, Any] = {}
    last = run_dir / "last.pth"
    done = int(torch.load(last, map_location="cpu", weights_only=True)["iteration"]) if last.is_file() else 0
    for i, stage in enumerate(stages):
        data = [d for key in stage["data"] for d in dumps[key]]
        if done >= stage["steps"]:
            continue
        # a "restart" stage starts as a new run from the previous stage's last weights (fresh optimizer and pass
        # over the data); a run interrupted inside it resumes as usual
        restart = bool(stage.get("restart")) and i > 0 and done == stages[i - 1]["steps"]
        conf = {**p["train"], **stage.get("train", {}), "steps": stage["steps"], **runtime}
        if conf.get("warm_start"):  # a path inside the repository (another preset's shipped weights)
            conf["warm_start"] = str(root / conf["warm_start"])
        if stage.get("weights"):  # share of the draws per data source, spread evenly over its dumps
            conf["dump_weights"] = [stage["weights"][key] / len(dumps[key]) for key in stage["data"]
                                    for _ in dumps[key]]
        res = train(data, run_dir, conf, resume=last.is_file(), progress=progress, restart=restart)
        done = int(res["step"])
    out: Dict[str, Any] = {"run": str(run_dir), "train_s": time.time() - t0, **res}
    if export:
        # the last step, not the lowest held-out loss: each stage changes the held-out sampling (keypoints,
        # matches), so losses of different stages do not compare
        pooled = p["train"]["variant"] != "gm"  # GM never pools: no threshold to calibrate
        exported = export_weights(run_dir, root / p["output"], which="last",
                                  calibration_dumps=[d for paths in dumps.values() for d in paths] if pooled else [],
                                  pool_threshold=p.get("pool_threshold"))
        card = model_card(name, p, run_dir, exported, dumps, root / "docs" / "models")
        out.update({"exported": exported, "card": str(card)})
    return out
