"""How much to trust a PnP pose: quality measures of the inlier set and one confidence score in [0, 1].

An absolute inlier count is a poor gate: 30 inliers out of 948 matches, all in one corner of the image, came
back OK 51.7 degrees off. What separates true poses from wrong ones is how the inliers sit, not how many:

- ``inlier_ratio``: inliers / 2D-3D matches. Wrong poses are RANSAC's best guess among mostly wrong matches;
  for a true pose a sizeable share of the matches agree.
- ``coverage``: fraction of the cells of a 6x6 grid over the image that hold an inlier. Inliers packed in one
  small region constrain rotation poorly and are what repeated structure produces.
- ``rotation_std_deg``: the 1-sigma rotation uncertainty from the pose covariance (scaled by the measured
  reprojection noise). Inliers that are few, far, noisy or bunched up leave the rotation poorly determined; on
  the synthetic world this separates wrong poses best.
- ``num_inliers``.
- ``best_reference_ratio``: the inlier ratio of the reference with most inliers alone (a wrong retrieval candidate
  among the top-k does not dilute it). Reported; not in the shipped model: a refit with it on the synthetic world
  (``bench_confidence.py --reuse --fit --features log_inliers inlier_ratio coverage log_rotation_std
  best_reference_ratio``) kept one more SIFT night query with an unknown focal but let four more hard negatives
  (day, far references, unknown focal) pass.

The score (see :func:`confidence_score`) is a logistic model of some of these (by name, :data:`FEATURES`), fitted
on the synthetic world (not on the real photos, which only evaluate it). The localizer's
``acceptance.min_confidence`` is the threshold: 0.6, with the localizer's second look (a pose it would not report is
verified again against the references near it, which can bring a wrong pose back with a little more support); 0.5,
more likely right than wrong, is the one without it. ``acceptance.confidence_model``
names the model (:data:`CONF_MODELS`) or gives one fitted on other data as a JSON file (:func:`confidence_model`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import numpy as np

GRID = 6


def inlier_coverage(points2D: np.ndarray, width: int, height: int, grid: int = GRID) -> float:
    """Fraction of the ``grid`` x ``grid`` image cells holding at least one of ``points2D`` (OpenCV pixels)."""
    if points2D is None or len(points2D) == 0:
        return 0.0
    p = np.asarray(points2D, dtype=np.float64)
    cx = np.clip((p[:, 0] + 0.5) / width * grid, 0, grid - 1).astype(int)
    cy = np.clip((p[:, 1] + 0.5) / height * grid, 0, grid - 1).astype(int)
    return float(len(np.unique(cy * grid + cx))) / (grid * grid)


def _log_rotation_std(q: Mapping[str, float]) -> float:
    rot = q["rotation_std_deg"]
    return float(np.log(max(rot if np.isfinite(rot) and rot > 0 else 10.0, 1e-3)))


#: The inputs a confidence model may use, by name, each computed from ``pose_quality``'s measures.
FEATURES: Dict[str, Callable[[Mapping[str, float]], float]] = {
    "log_inliers": lambda q: float(np.log(max(q["num_inliers"], 1.0))),
    "inlier_ratio": lambda q: float(q["inlier_ratio"]),
    "coverage": lambda q: float(q["coverage"]),
    "log_rotation_std": _log_rotation_std,
    "best_reference_ratio": lambda q: float(q["best_reference_ratio"]),
    "focal_estimated": lambda q: float(q.get("focal_estimated", 0.0)),
}


def confidence_features(quality: Mapping[str, float], names: Sequence[str]) -> np.ndarray:
    """The inputs ``names`` (keys of :data:`FEATURES`) of a confidence model for one pose's quality measures."""
    return np.array([FEATURES[n](quality) for n in names])


def confidence_score(quality: Mapping[str, float], model: Optional[Mapping[str, Any]] = None) -> float:
    """Confidence in [0, 1] that the pose is right (within 5 deg and 10 % of the scene depth); see the module doc.
    ``quality``: ``pose_quality``'s measures; ``model``: default :data:`CONF_MODEL`."""
    model = CONF_MODEL if model is None else model
    x = confidence_features(quality, model["features"])
    z = model["bias"] + float(np.dot(model["weights"], x))
    return float(1.0 / (1.0 + np.exp(-z)))


#: Logistic models by name (``acceptance.confidence_model``), fitted by ``benchmarks/bench_confidence.py --fit``
#: on synthetic worlds, never on real photos. A model fitted on one's own data (``--fit --save model.json``) is
#: given to the localizer as a file instead.
CONF_MODELS: Dict[str, Dict[str, Any]] = {
    # sift+nn and xfeat+nn maps of the demo world; day and night queries; given and unknown focal; retrieved
    # references plus hard negatives from references 20 m away, which the repetitive street makes look right
    "default": {"features": ["log_inliers", "inlier_ratio", "coverage", "log_rotation_std"],
                "bias": -2.023, "weights": [0.092, 0.788, 0.011, -2.023]},
}
CONF_MODEL = CONF_MODELS["default"]


def confidence_model(spec: Any = "default") -> Dict[str, Any]:
    """The confidence model ``spec`` names: a key of :data:`CONF_MODELS`, or a JSON file ({features, bias,
    weights}) written by ``bench_confidence.py --fit --save``; checked here, so a bad one fails at start-up."""
    from ..config import ConfigError

    where = "acceptance.confidence_model"
    if isinstance(spec, str) and spec in CONF_MODELS:
        return CONF_MODELS[spec]
    if isinstance(spec, (str, Path)):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ConfigError(f"{where}: {str(spec)!r} is neither a model name ({', '.join(sorted(CONF_MODELS))}) "
                              "nor a JSON file")
        try:
            spec = json.loads(path.read_text())
        except ValueError as e:
            raise ConfigError(f"{where}: {path} is not valid JSON ({e})") from None
    if not isinstance(spec, Mapping) or not {"features", "bias", "weights"} <= set(spec):
        raise ConfigError(f"{where}: a model needs 'features', 'bias' and 'weights', got {spec!r}")
    unknown = [f for f in spec["features"] if f not in FEATURES]
    if unknown:
        raise ConfigError(f"{where}: unknown features {unknown} (known: {', '.join(sorted(FEATURES))})")
    if len(spec["features"]) != len(spec["weights"]):
        raise ConfigError(f"{where}: {len(spec['features'])} features but {len(spec['weights'])} weights")
    return {"features": list(spec["features"]), "bias": float(spec["bias"]),
            "weights": [float(w) for w in spec["weights"]]}


def pose_quality(pnp, num_matches: int, contributions: np.ndarray,
                 matches_per_reference: Optional[np.ndarray] = None,
                 model: Optional[Mapping[str, Any]] = None) -> Dict[str, float]:
    """Quality measures of one PnP result (``pnp``: PnPResult on ``num_matches`` 2D-3D matches, ``contributions``:
    its inliers per reference image, most first; ``matches_per_reference``: the 2D-3D matches of each, same order)
    and its ``confidence`` (by ``model``, default :data:`CONF_MODEL`)."""
    k = int(pnp.num_inliers)
    ratio = k / max(int(num_matches), 1)
    cov = inlier_coverage(pnp.inlier_points2D, pnp.camera.width, pnp.camera.height)
    refs = int((np.asarray(contributions) >= 5).sum())
    rot_std = float("nan")
    if pnp.covariance is not None:
        rot_std = float(np.degrees(np.sqrt(max(np.linalg.eigvalsh(pnp.covariance[3:, 3:]).max(), 0.0))))
    out = {"num_inliers": float(k), "inlier_ratio": float(ratio), "coverage": cov, "references_agreeing": float(refs),
           "residual_px": float(pnp.residual_sigma_px), "rotation_std_deg": rot_std,
           "focal_estimated": float(bool(getattr(pnp, "focal_estimated", False)))}
    # the inlier ratio of the reference with most inliers (the overall ratio when per-reference counts are unknown)
    contrib = np.asarray(contributions)
    out["best_reference_ratio"] = (float(contrib[0]) / max(float(matches_per_reference[0]), 1.0)
                                   if matches_per_reference is not None and len(contrib) else out["inlier_ratio"])
    out["confidence"] = confidence_score(out, model)
    return out
