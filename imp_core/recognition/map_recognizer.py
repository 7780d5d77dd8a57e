"""A recognizer for every map: instances from the map's 3D points, the recognition network trained on the map's own
database images (day-to-night augmentation) under a wall-clock budget, stored with a model card in the map.

Layout inside the map directory (next to the files ``annotate_map`` writes: instances.json/npz, instance_masks/,
labels.h5, recognition_global.npz)::
    recognition/model.pt           the trained network (+ the instance definition it was trained on)
    recognition/model_card.json    what it is, how it was trained, how long, on what, how well it fits its data
    recognition/MODEL_CARD.md      the same for people
    recognition/train_log.jsonl, train_loss.png, checkpoint_last.pt

``map_recognizer_conf(map_dir)`` is what the localizer asks: the "recognition" conf for a map whose recognizer is
complete and consistent (model + database descriptors of this very model), else None. ``install_recognizer`` makes a
trained model the recognizer of a map without training; ``build_recognizer`` (training under a budget) is in
``imp_core/training/recognition/pipeline.py``.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Union

import numpy as np

from ..mapping import LocalizationMap, read_map_meta
from ..world.synthetic import is_synthetic_world
from .database import RECOGNITION_GLOBAL, map_image_loader
from .instances import INSTANCES_JSON, annotate_map, load_instance_definition
from .night import night_style
from .recognizer import Recognizer

logger = logging.getLogger(__name__)

REC_DIR = "recognition"
MODEL = "model.pt"
CARD_JSON = "model_card.json"
CARD_MD = "MODEL_CARD.md"
CARD_FORMAT = "imp-recognition-card"

DEFAULT_BUDGET_MIN = 15.0
# the localizer uses a map's recognizer only when its top instance is right on at least this share of the map's own
# images: an undertrained one would send instance-guided search to look-alike places (worse than retrieval)
MIN_FIT_TOP1 = 0.5


def default_num_instances(num_images: int, num_points: int) -> int:
    """About one instance per 4 database images (LBR: 452 on Aachen's 4.3k), at least 4, at most 512, and never so
    many that an instance gets fewer than ~40 map points."""
    return int(max(4, min(512, round(num_images / 4), num_points // 40 if num_points else 4)))


def default_mode(map_dir: Union[str, Path]) -> str:
    """Cluster on the ground plane where the map is known to be z-up (synthetic worlds), in 3D otherwise."""

    source = read_map_meta(map_dir).get("source") or ""
    return "xy" if source and is_synthetic_world(source) else "xyz"


def install_recognizer(map_dir: Union[str, Path], model: Union[str, Path],
                       image_dir: Optional[Union[str, Path]] = None, progress: bool = True) -> Dict[str, Any]:
    """Make a trained recognition model (one that carries its instance definition, e.g. the shipped
    ``models/recognition_synthetic.pt`` of the default synthetic world) the recognizer of another map of the same
    place: the map's 3D points are assigned to the model's instances, the model is copied to ``MAP/recognition``
    with the database descriptors it computes, and the model card records where it came from and how well it fits
    this map (the self-check the localizer reads). No training: seconds to a minute, not a budget. Returns the card."""
    from .network import load_model  # lazy: torch

    map_dir, model = Path(map_dir), Path(model)
    meta = read_map_meta(map_dir)
    centroids, mode = load_instance_definition(model)  # refuses a model without instances, naming it
    net = load_model(model)
    if net.num_classes != len(centroids) + 1:
        raise ValueError(f"{model}: the network predicts {net.num_classes - 1} instances but carries "
                         f"{len(centroids)} instance centroids")
    load_image = map_image_loader(map_dir, image_dir)
    if not LocalizationMap.load(map_dir).names:
        raise ValueError(f"map {map_dir} has no registered images: nothing to recognize")
    out = map_dir / REC_DIR
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copyfile(model, out / MODEL)
    t0 = time.time()
    rec = Recognizer({"model": str(out / MODEL)})
    index = annotate_map(map_dir, {"centroids_from": str(model)}, recognizer=rec, load_image=load_image)
    rec.close()
    card = model_card(
        map_dir, meta, net, index, mode, round(time.time() - t0, 1), {"from": str(model)},
        training={"data": f"none here: the trained model {model.name} installed with its own instances (their "
                          "centroids assigned to this map's 3D points)",
                  "budget_min": 0.0, "seconds": 0.0, "steps": 0, "batch_size": 0, "first_loss": None,
                  "final_loss": None, "device": "cpu", "installed_from": str(model)},
        intended_use="instance-guided coarse search (LBR) of the imp localizer on maps of the place the model "
                     "was trained on",
        limitations="the model knows only the place it was trained on; installed on a map of another place its "
                    "self-check fails and the localizer keeps global retrieval")
    return finish_card(card, out, index, load_image, progress,
                       lambda top1: f"recognizer {model} does not fit map {map_dir} (top-1 {top1:.2f} on its images "
                                    f"< {MIN_FIT_TOP1:.2f}): the localizer will keep global retrieval")


def finish_card(card: Dict[str, Any], out: Path, index, load_image, progress: bool,
                unfit: Callable[[float], str]) -> Dict[str, Any]:
    """Self-check the model in ``out`` on the map's images, record whether the localizer will use it, write the card
    (JSON and Markdown) and return it. ``unfit(top1)``: the warning logged when the localizer will not use it."""
    card["fit"] = self_check(out / MODEL, index, load_image, progress=progress)
    card["used_by_localizer"] = card["fit"]["top1"] >= MIN_FIT_TOP1
    if not card["used_by_localizer"]:
        logger.warning(unfit(card["fit"]["top1"]))
    (out / CARD_JSON).write_text(json.dumps(card, indent=2))
    (out / CARD_MD).write_text(card_markdown(card))
    return card


def model_card(map_dir: Path, meta: Mapping[str, Any], net, index, mode: str, annotate_s: float,
               instances_extra: Mapping[str, Any], training: Mapping[str, Any], intended_use: str,
               limitations: str) -> Dict[str, Any]:
    """The model card of a map's recognizer (``build_recognizer`` and ``install_recognizer``), before its
    self-check: map, instances, network and how the model got there."""
    sizes = [len(v) for v in index.instance_images.values()]
    return {
        "format": CARD_FORMAT,
        "version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": f"{REC_DIR}/{MODEL}",
        "map": {"dir": str(map_dir), "map_id": meta.get("map_id"), "features": meta.get("features", {}).get("name"),
                "num_images": meta.get("num_images"), "num_points3D": meta.get("num_points3D"),
                "source": meta.get("source")},
        "instances": {"num_instances": int(index.num_instances), "mode": mode,
                      "images_per_instance": float(np.mean(sizes)) if sizes else 0.0,
                      "instances_seen": int(sum(1 for s in sizes if s > 0)), "seconds": annotate_s,
                      **instances_extra},
        "network": {k: v for k, v in dict(net.conf).items() if isinstance(v, (int, float, str, list, bool))},
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "training": dict(training),
        "intended_use": intended_use,
        "limitations": limitations,
    }


def self_check(model: Path, index, load_image, max_images: int = 150, progress: bool = True) -> Dict[str, Any]:
    """How well the model fits its own map: share of (up to ``max_images``, evenly spread) database images whose
    top recognized instance is one the image shows, as they are and in the night style of the augmentation."""
    from tqdm import tqdm

    names = sorted(n for n, c in index.image_instances.items() if any(int(k) > 0 for k in c))
    if not names:
        return {"top1": 0.0, "top1_night_style": 0.0, "images": 0}
    names = [names[i] for i in np.unique(np.linspace(0, len(names) - 1, min(max_images, len(names))).astype(int))]
    rec = Recognizer({"model": str(model)})
    rng = np.random.default_rng(0)
    hit = hit_night = 0
    for n in tqdm(names, desc="recognizer self-check", leave=False, disable=not progress):
        img = load_image(n)
        shown = {int(k) for k in index.image_instances[n] if int(k) > 0}
        for im, night in ((img, False), (night_style(img, rng), True)):
            r = rec.predict(im)
            ok = bool(r.instances) and r.instances[0][0] in shown
            hit_night += ok and night
            hit += ok and not night
    rec.close()
    return {"top1": hit / len(names), "top1_night_style": hit_night / len(names), "images": len(names)}


def card_markdown(card: Mapping[str, Any]) -> str:
    m, i, t = card["map"], card["instances"], card["training"]
    return "\n".join([
        f"# Recognition model for map `{m['dir']}`",
        "",
        f"- model: `{card['model']}` ({card['parameters']:,} parameters, encoder {card['network'].get('encoder')})",
        f"- map: {m['num_images']} images, {m['num_points3D']} 3D points, {m['features']} features "
        f"(map id {m['map_id']}), source `{m['source']}`",
        f"- instances: {i['num_instances']} clusters of the map's 3D points (axes {i['mode']}), "
        f"{i['images_per_instance']:.1f} images per instance",
        (f"- training: none here (installed from `{t['installed_from']}`)" if t.get("installed_from") else
         f"- training: {t['steps']} steps in {t['seconds']:.0f} s (budget {t['budget_min']:g} min) on {t['device']}, "
         f"batch {t['batch_size']}, loss {t['first_loss'] if t['first_loss'] is None else round(t['first_loss'], 3)}"
         f" -> {t['final_loss'] if t['final_loss'] is None else round(t['final_loss'], 3)}"),
        f"- data: {t['data']}",
        f"- fit on its own images: top-1 {100 * card.get('fit', {}).get('top1', float('nan')):.1f} % (day), "
        f"{100 * card.get('fit', {}).get('top1_night_style', float('nan')):.1f} % (night style); used by the "
        "localizer: " + ("yes" if card.get("used_by_localizer", True)
                         else f"no (below {MIN_FIT_TOP1:.0%}: train longer)"),
        f"- intended use: {card['intended_use']}",
        f"- limitations: {card['limitations']}",
        f"- created {card['created']}",
        "",
    ])


def read_model_card(map_dir: Union[str, Path]) -> Optional[Dict[str, Any]]:
    p = Path(map_dir) / REC_DIR / CARD_JSON
    if not p.is_file():
        return None
    try:
        card = json.loads(p.read_text())
    except ValueError:
        return None
    return card if card.get("format") == CARD_FORMAT else None


def map_recognizer_conf(map_dir: Union[str, Path]) -> Optional[Dict[str, Any]]:
    """{"model": path} when the map has a complete recognizer (model + instances + database descriptors of that
    very model), else None. An inconsistent one is skipped with a warning naming the command that fixes it."""
    import hashlib

    map_dir = Path(map_dir)
    model = map_dir / REC_DIR / MODEL
    if not model.is_file():
        return None
    card = read_model_card(map_dir) or {}
    top1 = (card.get("fit") or {}).get("top1")
    if top1 is not None and top1 < MIN_FIT_TOP1:
        logger.warning("map %s: its recognizer is undertrained (top-1 %.2f on its own images < %.2f): not using it "
                       "(train longer: `imp recognition train --map %s --budget-min N`)", map_dir, top1, MIN_FIT_TOP1,
                       map_dir)
        return None
    missing = [n for n in (INSTANCES_JSON, RECOGNITION_GLOBAL) if not (map_dir / n).is_file()]
    if missing:
        logger.warning("map %s has a recognition model but no %s: not using it (rerun `imp recognition train "
                       "--map %s`)", map_dir, ", ".join(missing), map_dir)
        return None
    try:
        with np.load(map_dir / RECOGNITION_GLOBAL, allow_pickle=False) as z:
            fp = str(z["model"]) if "model" in z.files else None
    except (OSError, ValueError) as e:
        logger.warning("map %s: cannot read %s (%s): not using its recognizer", map_dir, RECOGNITION_GLOBAL, e)
        return None
    if fp is not None and fp != hashlib.sha1(model.read_bytes()).hexdigest()[:16]:
        logger.warning("map %s: its database recognition descriptors come from another model than %s: not using "
                       "it (rerun `imp recognition train --map %s`)", map_dir, model, map_dir)
        return None
    return {"model": str(model)}
