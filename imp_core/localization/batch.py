"""Localize every query of a dataset (benchmarks, `imp localize`); sequences can be run in tracking mode."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..imageio import read_image
from ..types import LocalizationResult


def localize_queries(localizer, queries: Sequence, tracking: bool = False, progress: bool = True,
                     log_path: Optional[Path] = None) -> Dict[str, LocalizationResult]:
    """``queries``: QueryItem list (name, path, camera, condition, gt_pose, stamp).

    Without ``tracking`` each query is localized globally (the localizer is reset before each). With it, queries
    are processed in the given order (sort by sequence/stamp first) and each fix seeds the next frame.
    A query that raises is recorded as failed with its error message; the run goes on.
    """
    from tqdm import tqdm

    results: Dict[str, LocalizationResult] = {}
    log = open(log_path, "w") if log_path else None
    try:
        for q in tqdm(queries, desc="localize", unit="img", disable=not progress):
            if not tracking:
                localizer.reset()
            try:
                res = localizer.localize(read_image(q.path), q.camera, name=q.name,
                                         stamp=getattr(q, "stamp", None) if tracking else None)
            except Exception as e:  # keep going: one bad image must not lose the others
                res = LocalizationResult(message=f"{type(e).__name__}: {e}")
            results[q.name] = res
            if log:
                log.write(json.dumps(result_record(q.name, res, getattr(q, "condition", ""))) + "\n")
                log.flush()
    finally:
        if log:
            log.close()
    return results


def result_record(name: str, res: LocalizationResult, condition: str = "") -> dict:
    rec = {"name": name, "condition": condition, "status": res.status, "mode": res.mode,
           "num_matches": res.num_matches, "num_inliers": res.num_inliers, "references": res.references,
           "instances": [[int(i), float(c)] for i, c in res.instances],
           "timings_ms": {k: round(v, 2) for k, v in res.timings.items()}, "message": res.message}
    rec["reason"] = "" if res.success else (res.message or "not localized")
    rec["confidence"] = round(float(res.confidence), 4)
    rec["quality"] = {k: (round(float(v), 4) if v == v else None) for k, v in res.quality.items()}
    if res.camera is not None:
        rec["camera"] = {"model": res.camera.model, "width": res.camera.width, "height": res.camera.height,
                         "params": [float(v) for v in res.camera.params], "focal_estimated": bool(res.focal_estimated)}
    if res.pose is not None:
        rec["qvec_wxyz"] = res.pose.qvec.tolist()
        rec["tvec"] = res.pose.t.tolist()
        rec["center"] = res.pose.center.tolist()
    if res.covariance is not None:
        rec["covariance"] = np.asarray(res.covariance).round(10).tolist()
    return rec


def order_for_tracking(queries: Sequence) -> List:
    """Sort queries by (condition, sequence prefix, stamp or name) so tracking sees frames in time order."""
    def key(q):
        stem = Path(q.name).stem
        seq = stem.rsplit("_", 1)[0] if "_" in stem else ""
        return (q.condition, seq, q.stamp if q.stamp is not None else 0.0, q.name)

    return sorted(queries, key=key)
