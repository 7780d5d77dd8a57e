"""Localize every query of a dataset (benchmarks, `imp localize`); sequences can be run in tracking mode.

One engine serves the single-process path and the Ray fan-out (``distributed.py``): the queries are cut into
units (one query each, or one whole sequence in tracking mode, which a single localizer must see in time order),
each unit is localized by ``localize_unit`` (here, or inside a Ray worker), and ``ResultLog`` writes one JSON line
per query to the log **in query order**, whatever order the units finish in. A run that stops (Ctrl-C, a dead
worker) keeps every finished result: those that finished ahead of an unfinished query are kept in
``<log>.pending`` and put in their place by the next run (``resume``), so the log of an interrupted and resumed run
is the same file, line for line, as the log of one uninterrupted single-process run.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

from ..eval.report import json_safe
from ..imageio import read_image
from ..types import LocalizationResult, Pose

Sink = Callable[[object, LocalizationResult], None]


def localize_queries(localizer, queries: Sequence, tracking: bool = False, progress: bool = True,
                     log_path: Optional[Path] = None, resume: bool = False,
                     desc: str = "localize") -> Dict[str, LocalizationResult]:
    """``queries``: QueryItem list (name, path, camera, condition, gt_pose, stamp).

    Without ``tracking`` each query is localized globally (the localizer is reset before each). With it, queries
    are processed in the given order (sort by sequence/stamp first, ``order_for_tracking``); each fix seeds the next
    frame of the same sequence, and the localizer is reset where a new sequence starts (``sequence_key``).
    A query that raises is recorded as failed with its error message; the run goes on.

    ``localizer``: a ``Localizer``, or a ``distributed.RayLocalizerPool`` (same results, computed by Ray workers).
    ``log_path``: one JSON line per query (``result_record``), in query order. ``resume``: keep the queries already
    in it (and in its ``.pending`` file) and localize only the others; their results come back from the records.
    """
    from tqdm import tqdm

    log = ResultLog(log_path, queries, resume=resume) if log_path else None
    done = log.done if log else {}
    results: Dict[str, LocalizationResult] = {}

    with tqdm(total=len(queries), initial=len(done), desc=desc, unit="img", disable=not progress,
              smoothing=0.1) as bar:
        def sink(q, res: LocalizationResult) -> None:
            if q.name in done or q.name in results:
                return  # tracking mode recomputes a resumed sequence's finished frames to rebuild its state
            results[q.name] = res
            if log:
                log.add(q, res)
            bar.update(1)

        try:
            run_units(localizer, make_units(queries, tracking, skip=set(done)), tracking, sink)
        except BaseException:
            if log:
                log.interrupted()
            raise
        finally:
            if log:
                log.close()
    if log:

        for name, rec in done.items():
            results.setdefault(name, record_result(rec))
    return {q.name: results[q.name] for q in queries if q.name in results}


def sequence_key(q) -> tuple:
    """(condition, sequence prefix of the name): the frames a tracker follows from one to the next."""
    stem = Path(q.name).stem
    return (getattr(q, "condition", ""), stem.rsplit("_", 1)[0] if "_" in stem else "")


def make_units(queries: Sequence, tracking: bool, skip: Iterable[str] = ()) -> List[List]:
    """Work units: one query each, or in tracking mode each run of consecutive queries of one sequence (whole, even
    when some of its frames are in ``skip``: a tracker needs the frames before to reach the same state)."""
    skip = set(skip)
    if not tracking:
        return [[q] for q in queries if q.name not in skip]
    units: List[List] = []
    for q in queries:
        if units and sequence_key(units[-1][-1]) == sequence_key(q):
            units[-1].append(q)
        else:
            units.append([q])
    return [u for u in units if any(q.name not in skip for q in u)]


def localize_one(localizer, q, tracking: bool = False) -> LocalizationResult:
    """One query (image read from ``q.path``); an exception becomes a failed result with its message."""
    if not tracking:
        localizer.reset()
    try:
        return localizer.localize(read_image(q.path), q.camera, name=q.name,
                                  stamp=getattr(q, "stamp", None) if tracking else None)
    except Exception as e:  # keep going: one bad image must not lose the others
        return LocalizationResult(message=f"{type(e).__name__}: {e}")


def localize_unit(localizer, unit: Sequence, tracking: bool = False, sink: Optional[Sink] = None) -> list:
    """The queries of one unit in order (a tracking unit starts from a reset localizer); [(query, result)]."""
    if tracking:
        localizer.reset()
    out = []
    for q in unit:
        res = localize_one(localizer, q, tracking)
        if sink:
            sink(q, res)
        out.append((q, res))
    return out


def run_units(localizer, units: List[List], tracking: bool, sink: Sink) -> None:
    """Localize the units, calling ``sink(query, result)`` for each query as its result is known: in order with a
    ``Localizer``, in completion order with a Ray pool (which hands over every finished result before it raises)."""
    if hasattr(localizer, "run_units"):
        localizer.run_units(units, tracking, sink)
        return
    for unit in units:
        localize_unit(localizer, unit, tracking, sink)


class ResultLog:
    """The per-query JSON-lines log of a run, written in query order.

    ``done``: records already in the log (or waiting in ``<log>.pending``) when resuming. ``add`` takes results in
    any order and appends every record whose turn has come; ``interrupted`` saves the records still waiting for an
    earlier query to ``<log>.pending``; ``close`` removes the pending file once everything in it is in the log.
    """

    def __init__(self, path, queries: Sequence, resume: bool = True):

        self.path = Path(path)
        self.pending_path = self.path.with_name(self.path.name + ".pending")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not resume:
            self.path.unlink(missing_ok=True)
            self.pending_path.unlink(missing_ok=True)
        logged = read_log(self.path)
        self._early: Dict[str, dict] = {n: r for n, r in read_log(self.pending_path).items() if n not in logged}
        self.done: Dict[str, dict] = {**logged, **self._early}
        # the names still to be written, in query order (queries of other runs in the same log are left alone)
        self._order = list(dict.fromkeys(q.name for q in queries if q.name not in logged))
        self._next = 0
        self._file = open(self.path, "a", encoding="utf-8")
        self._flush()

    def add(self, q, res: LocalizationResult) -> None:
        self._early[q.name] = result_record(q.name, res, getattr(q, "condition", ""))
        self._flush()

    def _flush(self) -> None:
        wrote = False
        while self._next < len(self._order) and self._order[self._next] in self._early:
            name = self._order[self._next]
            self._file.write(json.dumps(self._early[name]) + "\n")
            del self._early[name]
            self._next += 1
            wrote = True
        if wrote:
            self._file.flush()

    def interrupted(self) -> None:
        """Keep the finished records that are still waiting (their earlier queries did not finish)."""
        if not self._early:
            return
        tmp = self.pending_path.with_name(self.pending_path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for name in self._order[self._next:]:
                if name in self._early:
                    f.write(json.dumps(self._early[name]) + "\n")
        os.replace(tmp, self.pending_path)

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.close()
        if self._early:  # results whose earlier queries never came: keep them for the next run
            self.interrupted()
        else:
            self.pending_path.unlink(missing_ok=True)


def result_record(name: str, res: LocalizationResult, condition: str = "") -> dict:
    rec = {"name": name, "condition": condition, "status": res.status, "mode": res.mode,
           "num_matches": res.num_matches, "num_inliers": res.num_inliers, "references": res.references,
           "instances": [[int(i), float(c)] for i, c in res.instances],
           "timings_ms": {k: round(v, 2) for k, v in res.timings.items()}, "message": res.message}
    rec["reason"] = "" if res.success else (res.message or "not localized")
    rec["confidence"] = round(float(res.confidence), 4)
    rec["quality"] = {k: round(float(v), 4) for k, v in res.quality.items()}  # not finite: null (json_safe)
    if res.camera is not None:
        rec["camera"] = {"model": res.camera.model, "width": res.camera.width, "height": res.camera.height,
                         "params": [float(v) for v in res.camera.params], "focal_estimated": bool(res.focal_estimated)}
    if res.pose is not None:
        rec["qvec_wxyz"] = res.pose.qvec.tolist()
        rec["tvec"] = res.pose.t.tolist()
        rec["center"] = res.pose.center.tolist()
    if res.covariance is not None:
        rec["covariance"] = np.asarray(res.covariance).round(10).tolist()
    return json_safe(rec)


def order_for_tracking(queries: Sequence) -> List:
    """Sort queries by (condition, sequence prefix, stamp or name) so tracking sees frames in time order."""
    def key(q):
        return (*sequence_key(q), q.stamp if q.stamp is not None else 0.0, q.name)

    return sorted(queries, key=key)


def read_log(path: Path) -> Dict[str, dict]:
    """Records of a per-query log; a torn last line (the run was killed mid-write) is cut off the file."""
    records: Dict[str, dict] = {}
    if not path.is_file():
        return records
    good = 0
    with open(path, "rb") as f:
        data = f.read()
    for line in data.splitlines(keepends=True):
        try:
            rec = json.loads(line)
        except ValueError:
            break
        if not line.endswith(b"\n") or not isinstance(rec, dict) or "name" not in rec:
            break
        records[rec["name"]] = rec
        good += len(line)
    if good != len(data):
        with open(path, "r+b") as f:
            f.truncate(good)
    return records


def record_result(rec: dict) -> LocalizationResult:
    pose = Pose.from_qvec(rec["qvec_wxyz"], rec["tvec"]) if rec.get("qvec_wxyz") is not None else None
    return LocalizationResult(status=rec.get("status", "LOST"), pose=pose, num_matches=rec.get("num_matches", 0),
                              num_inliers=rec.get("num_inliers", 0), references=rec.get("references", []),
                              timings=rec.get("timings_ms", {}), mode=rec.get("mode", ""),
                              message=rec.get("message", ""))


def check_run_file(path, run: dict, resume: bool) -> None:
    """``<out>/run.json``: what produced the results in ``<out>``. With ``resume`` a different run is refused (its
    results must not mix into these); the file is then (re)written with ``run``."""
    path = Path(path)
    run = json.loads(json.dumps(run, default=str))
    if resume and path.is_file():
        old = json.loads(path.read_text())
        diff = [k for k in sorted(set(old) | set(run)) if old.get(k) != run.get(k)]
        if diff:
            raise ValueError(f"--resume: {path.parent} holds results of another run (different {', '.join(diff)}): "
                             "drop --resume to start over, or choose another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run, indent=1, sort_keys=True))
