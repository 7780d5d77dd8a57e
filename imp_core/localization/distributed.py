"""Fan the queries of a batch run out to Ray workers (`imp localize --dataset ... --workers N`, `imp benchmark`).

Each worker is a Ray actor holding one ``Localizer``: it opens the map from its path once, when it starts (the map
directory and the query images must be reachable under the same paths on every node: a shared or copied
filesystem), and is then handed work units (one query, or one whole sequence in tracking mode) a few at a time,
so a fast worker takes more. Results come back in completion order; ``batch.ResultLog`` writes them in query
order, so the log and the results file are the same as the single-process path's. Nothing is pickled but the
localizer configuration, the query items (name, path, camera) and the results.

``--ray-address local`` (the default with ``--workers N > 1``) starts a private Ray instance on this machine and
stops it afterwards; ``auto`` joins the cluster started with ``ray start --head`` on this machine (or the one named
by ``$RAY_ADDRESS``); ``host:port`` or ``ray://host:10001`` joins that cluster. When the process is already
connected to Ray (``ray.init`` in a notebook or a test), that connection is used as it is.

Each worker sets torch (and OpenMP/BLAS) to ``threads`` threads, 1 by default, and asks Ray for that many CPUs:
N one-thread workers beat one N-thread process on CPU, and several torch processes with default threads
oversubscribe the cores.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import socket
import time
from collections import deque
from pathlib import Path
from typing import Dict, List, Optional

from ..datasets.base import QueryItem
from ..errors import ImpError
from ..threads import set_threads
from .batch import Sink, localize_unit
from .localizer import Localizer

log = logging.getLogger(__name__)

RAY_MISSING = ("the Ray fan-out (--workers N > 1 or --ray-address) needs Ray, which is not installed: "
               "pip install ray (requirements.txt pins the tested version)")
OBJECT_STORE_MB = 128  # a local instance's object store: results are small, nothing large goes through it


def add_worker_args(p: argparse.ArgumentParser) -> None:
    """--workers / --ray-address / --worker-threads (``imp benchmark``, ``imp localize --dataset``)."""
    g = p.add_argument_group("Ray fan-out (needs `pip install ray`; same results and files as one process)")
    g.add_argument("--workers", type=int, default=1,
                   help="Ray workers, each holding the map once (default 1: this process, no Ray)")
    g.add_argument("--ray-address", metavar="local|auto|HOST:PORT",
                   help="local: a private Ray instance on this machine (default with --workers > 1); auto: the "
                        "cluster started with `ray start --head`; HOST:PORT or ray://HOST:10001: that cluster. The "
                        "map and the dataset must be at the same paths on every node")
    g.add_argument("--worker-threads", type=int, default=1, help="torch threads (and Ray CPUs) per worker")


class RayUnavailable(ImpError, RuntimeError):
    """Ray is not installed or no cluster can be reached."""


class WorkerFailed(ImpError, RuntimeError):
    """A Ray worker died or could not start (the results finished before are kept)."""


def require_ray():
    try:
        import ray
    except ImportError as e:
        raise RayUnavailable(f"{RAY_MISSING} ({e})") from None
    return ray


def connect(address: str = "local", num_cpus: Optional[int] = None) -> bool:
    """Connect this process to Ray; True when this call started (and the caller must shut down) the connection.

    ``local``: a private instance with at least ``num_cpus`` CPUs (oversubscribing this machine when asked to);
    ``auto``, ``host:port``, ``ray://...``: an existing cluster."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    kw = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    if address == "local":
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, int(num_cpus or 1)),
                 object_store_memory=OBJECT_STORE_MB * 2**20, **kw)
        return True
    try:
        ray.init(address=address, **kw)
    except ConnectionError as e:
        raise RayUnavailable(f"no Ray cluster at --ray-address {address} ({e}); start one with `ray start --head` "
                             "on the head node (and `ray start --address HEAD:6379` on the others), or use "
                             "--ray-address local for a private instance on this machine") from None
    return True


class LocalizerWorker:
    """The body of a Ray actor: one localizer, its map opened once from the path in ``conf['map']``."""

    def __init__(self, conf: dict, threads: int = 1):
        set_threads(int(threads))  # before the first torch work (the localizer's 'threads' says the same)

        self.threads = int(threads)
        self.localizer = Localizer(conf, progress=False)

    def info(self) -> dict:
        import torch

        return {"host": socket.gethostname(), "pid": os.getpid(), "torch_threads": torch.get_num_threads(),
                "map": str(self.localizer.conf["map"]), "cpu_s": time.process_time()}

    def run(self, unit: list, tracking: bool) -> list:
        """[(name, LocalizationResult)] for the queries of one unit, in order (``batch.localize_unit``)."""
        return [(q.name, res) for q, res in localize_unit(self.localizer, unit, tracking)]


def _reason(e: BaseException) -> str:
    """The useful line of a Ray error (the last 'SomeError: message' line of the remote traceback)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in reversed(lines):
        head = ln.split(":", 1)[0]
        if ":" in ln and head.replace(".", "").isidentifier() and head.split(".")[-1][:1].isupper():
            return ln
    return lines[-1] if lines else type(e).__name__


class RayLocalizerPool:
    """``workers`` Ray actors, each with a ``Localizer`` of ``conf``; ``run_units`` is ``batch.run_units``' engine.

    Starting the pool waits until every worker has opened the map (progress bar), so a map that a node cannot read
    fails here, naming the worker's host and the error."""

    def __init__(self, conf: dict, workers: int, address: str = "local", threads: int = 1, progress: bool = True):
        if workers < 1:
            raise ValueError(f"--workers must be at least 1, got {workers}")
        if threads < 1:
            raise ValueError(f"--worker-threads must be at least 1, got {threads}")
        self._ray = ray = require_ray()
        conf = dict(conf)
        if not conf.get("map"):
            raise ValueError("localizer conf needs 'map' (the map directory every worker opens)")
        conf["map"] = os.path.abspath(str(conf["map"]))  # the same path on every node; not resolved (shared mounts)
        conf["threads"] = int(threads)  # the localizer's own thread setting: what Ray reserves CPUs for
        self.workers, self.threads, self.address, self.progress = int(workers), int(threads), address, progress
        self.map = conf["map"]
        self.actors: List = []
        self._started = connect(address, workers * threads)
        try:
            self._check_resources()
            remote = ray.remote(LocalizerWorker)
            env = {k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
            self.actors = [remote.options(num_cpus=threads, max_restarts=1, max_task_retries=1,
                                          runtime_env={"env_vars": env}).remote(conf, threads)
                           for _ in range(workers)]
            self.info = self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _check_resources(self) -> None:
        total = self._ray.cluster_resources().get("CPU", 0)
        if total < self.workers * self.threads:
            log.warning("the Ray cluster has %d CPUs but %d workers x %d threads ask for %d: workers wait until "
                        "CPUs free up (or the cluster scales up)", total, self.workers, self.threads,
                        self.workers * self.threads)

    def _wait_ready(self) -> List[dict]:
        from tqdm import tqdm

        ray = self._ray
        refs = {a.info.remote(): i for i, a in enumerate(self.actors)}
        info: Dict[int, dict] = {}  # worker index -> its info
        with tqdm(total=len(refs), desc="ray workers opening the map", unit="worker",
                  disable=not self.progress) as bar:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
                for ref in ready:
                    i = refs.pop(ref)
                    try:
                        info[i] = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        raise WorkerFailed(f"Ray worker {i} could not start a localizer on map {self.map}: "
                                           f"{_reason(e)}") from None
                    bar.update(1)
        hosts = sorted({d["host"] for d in info.values()})
        log.info("%d Ray workers ready on %s", len(info), ", ".join(hosts))
        return [info[i] for i in range(len(self.actors))]

    def worker_info(self) -> List[dict]:
        """Each worker's host, pid, torch threads and CPU seconds used so far (``cpu_s``)."""
        return self._ray.get([a.info.remote() for a in self.actors])

    # ------------------------------------------------------------------ work
    def run_units(self, units: List[list], tracking: bool, sink: Sink) -> None:
        """Localize the units on the workers; ``sink(query, result)`` for each query as results come back.

        Each worker has at most two units queued (one in tracking mode: sequences are long), so the next unit
        starts without a round trip and a slow worker holds little back. If this is interrupted (Ctrl-C) or a
        worker fails, every result that already came back is handed to ``sink`` before the exception goes on."""
        ray = self._ray
        queue = deque(units)
        inflight: Dict = {}  # ObjectRef -> (worker index, unit)
        depth = 1 if tracking else 2

        def submit(w: int) -> None:
            unit = queue.popleft()
            sent = [dataclasses.replace(q, path=Path(os.path.abspath(q.path))) if isinstance(q, QueryItem)
                    else q for q in unit]
            inflight[self.actors[w].run.remote(sent, tracking)] = (w, unit)

        try:
            for _ in range(depth):
                for w in range(len(self.actors)):
                    if queue:
                        submit(w)
            while inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
                for ref in ready:
                    w, unit = inflight[ref]
                    self._deliver(ref, w, unit, sink)
                    del inflight[ref]
                    if queue:
                        submit(w)
        except BaseException:
            self._drain(inflight, sink)
            raise

    def _deliver(self, ref, w: int, unit: list, sink: Sink) -> None:
        ray = self._ray
        try:
            out = ray.get(ref)
        except ray.exceptions.RayError as e:
            raise WorkerFailed(f"Ray worker {w} failed on {unit[0].name!r}"
                               + (f" (a sequence of {len(unit)} queries)" if len(unit) > 1 else "")
                               + f": {_reason(e)}; the results finished so far are saved") from None
        by_name = {q.name: q for q in unit}
        for name, res in out:
            sink(by_name[name], res)

    def _drain(self, inflight: Dict, sink: Sink) -> None:
        """After an interruption or a failure: hand over what already finished, cancel the rest."""
        ray = self._ray
        try:
            if inflight:
                ready, rest = ray.wait(list(inflight), num_returns=len(inflight), timeout=0)
                for ref in ready:
                    w, unit = inflight[ref]
                    try:
                        self._deliver(ref, w, unit, sink)
                    except WorkerFailed:
                        pass
                for ref in rest:
                    try:
                        ray.cancel(ref)
                    except Exception:  # actor tasks cannot always be cancelled; close() kills the actors
                        pass
        except Exception as e:  # never hide the original exception
            log.warning("could not collect the finished results of the Ray workers: %s", e)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        ray = self._ray
        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:
                pass
        self.actors = []
        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_localizer(conf: dict, workers: int = 1, ray_address: Optional[str] = None, worker_threads: int = 1,
                   progress: bool = True):
    """A ``Localizer`` in this process (``workers`` 1 and no ``ray_address``: today's path), else a
    ``RayLocalizerPool`` of ``workers`` Ray actors, each holding its own localizer and map (both have ``close``)."""
    if workers is None or workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if workers == 1 and not ray_address:
        return Localizer(conf, progress=progress)
    return RayLocalizerPool(conf, workers, ray_address or "local", worker_threads, progress=progress)
