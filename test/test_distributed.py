"""Batch runs on Ray (issue 14 §3): Ray workers give the same results files as one process, in the same order;
an interrupted Ray run keeps every finished result and a resumed one ends with the single-process files."""
from __future__ import annotations

import json
import sys
import time

import pytest

from imp_core.cli import main


def _ray():
    return pytest.importorskip("ray", reason="ray is not installed (pip install ray; pinned in requirements.txt): "
                                             "the Ray fan-out cannot run")


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs for this module (the code under test joins it instead of starting its own)."""
    import logging

    ray = _ray()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()


def _records(path, drop_timings=True):
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    for r in recs:
        if drop_timings:
            r.pop("timings_ms")  # measured per run: the only field that may differ
    return recs


def test_ray_address_auto_without_a_cluster_says_how_to_start_one(tiny_world, tiny_map, tmp_path, monkeypatch,
                                                                  capsys):
    ray = _ray()
    if ray.is_initialized():  # runs before the module's cluster starts (first test here)
        pytest.skip("a Ray connection is open in this process")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "no_cluster"))  # no running cluster's address file here
    t = time.time()
    rc = main(["localize", "--map", str(tiny_map), "--dataset", str(tiny_world.root), "--out", str(tmp_path / "o"),
               "--workers", "2", "--ray-address", "auto"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "ray start --head" in err, err
    assert time.time() - t < 60


@pytest.fixture(scope="module")
def one_process(tiny_world, tiny_map, tmp_path_factory):
    """The synthetic benchmark on the tiny world, localized in this process (the reference of the Ray runs)."""
    from imp_core.localization.benchmark import run_benchmark

    out = tmp_path_factory.mktemp("one_process")
    run_benchmark("synthetic", tiny_world.root, out, map_dir=tiny_map, loc_conf={"device": "cpu"}, progress=False)
    return out


def test_localize_two_workers_identical_to_one_process(ray_cluster, one_process, tiny_world, tiny_map, tmp_path):
    out = tmp_path / "ray"
    assert main(["localize", "--map", str(tiny_map), "--dataset", str(tiny_world.root), "--device", "cpu",
                 "--out", str(out), "--workers", "2"]) == 0
    # the same poses file and the same records in the same order as one process (imp benchmark writes both files
    # with the same functions as imp localize: results.txt = the submission, log.jsonl = queries_log.jsonl)
    assert (out / "results.txt").read_bytes() == (one_process / "synthetic_imp.txt").read_bytes()
    assert len((out / "results.txt").read_text().splitlines()) >= 8  # the day queries at least: not trivially equal
    assert _records(out / "log.jsonl") == _records(one_process / "queries_log.jsonl")
    assert len(_records(out / "log.jsonl")) == len(tiny_world.queries())
    assert not (out / "log.jsonl.pending").exists()


def test_tracking_on_two_workers_identical_to_one_process(ray_cluster, tiny_world, tiny_map):
    """Tracking: each sequence runs whole on one worker, from a reset localizer, so the results match one process
    running them one after the other; each worker holds one map, uses 1 torch thread, and is its own process."""
    from imp_core.localization import Localizer
    from imp_core.localization.batch import localize_queries, order_for_tracking
    from imp_core.localization.distributed import RayLocalizerPool

    queries = order_for_tracking(tiny_world.queries())
    assert len({(q.condition, q.name.rsplit("_", 1)[0]) for q in queries}) >= 2  # two sequences for two workers
    conf = {"map": str(tiny_map), "device": "cpu"}
    loc = Localizer(conf)
    one = localize_queries(loc, queries, tracking=True, progress=False)
    loc.close()
    with RayLocalizerPool(conf, workers=2, progress=False) as pool:
        assert len({i["pid"] for i in pool.info}) == 2
        assert all(i["torch_threads"] == 1 for i in pool.info)
        two = localize_queries(pool, queries, tracking=True, progress=False)
    assert list(one) == list(two) == [q.name for q in queries]
    assert any(r.mode == "tracking" for r in one.values())
    for name in one:
        a, b = one[name], two[name]
        assert (a.status, a.mode, a.num_inliers, a.references, a.message) == (b.status, b.mode, b.num_inliers,
                                                                                b.references, b.message), name
        assert (a.pose is None) == (b.pose is None), name
        assert (a.pose is None or (
            a.pose.qvec.tobytes() == b.pose.qvec.tobytes() and a.pose.t.tobytes() == b.pose.t.tobytes())), name


def test_benchmark_interrupted_on_ray_resumes_to_single_process_files(ray_cluster, one_process, tiny_world, tiny_map,
                                                                      tmp_path, monkeypatch):
    """Ctrl-C (KeyboardInterrupt in the main thread) in the middle of a Ray benchmark run: the results already
    finished are kept (in order in the log, those that overtook an unfinished query in .pending); the rerun
    does not redo them and ends with the same log (order, records) and submission file as one process.

    The interrupt arrives in the main thread right after the third result is logged (a watcher thread polling
    the log raced with the end of the run: on a loaded machine all results were in before it fired)."""
    from imp_core.localization import batch
    from imp_core.localization.benchmark import run_benchmark

    kw = dict(map_dir=tiny_map, loc_conf={"device": "cpu"}, progress=False)
    out = tmp_path / "ray"
    log = out / "queries_log.jsonl"
    total = len(tiny_world.queries())
    add = batch.ResultLog.add

    def add_then_ctrl_c(self, q, res):
        add(self, q, res)
        if len(log.read_text().splitlines()) >= 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(batch.ResultLog, "add", add_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark("synthetic", tiny_world.root, out, workers=2, **kw)
    monkeypatch.undo()
    first = log.read_text().splitlines()
    pending = out / "queries_log.jsonl.pending"
    early = pending.read_text().splitlines() if pending.exists() else []
    assert 3 <= len(first) < total, len(first)
    reference = _records(one_process / "queries_log.jsonl")
    assert [json.loads(line) for line in first]
    assert _records(log) == reference[:len(first)]  # in order, no gap

    run_benchmark("synthetic", tiny_world.root, out, workers=2, **kw)
    final = log.read_text().splitlines()
    assert final[:len(first)] == first  # kept byte for byte: not localized again
    assert all(line in final for line in early)  # the results that finished early, in their place
    assert _records(log) == reference
    assert (out / "synthetic_imp.txt").read_bytes() == (one_process / "synthetic_imp.txt").read_bytes()
    assert not pending.exists()


def test_worker_that_cannot_open_the_map_is_a_clear_error(ray_cluster, tmp_path):
    from imp_core.localization.distributed import RayLocalizerPool, WorkerFailed

    with pytest.raises(WorkerFailed, match=r"could not start a localizer on map .*nomap: .*map directory not found"):
        RayLocalizerPool({"map": str(tmp_path / "nomap"), "device": "cpu"}, workers=1, progress=False)


def test_result_log_writes_query_order_whatever_order_results_come_in(tmp_path):
    """Out-of-order results wait; an interruption saves them to .pending; the resumed log is the in-order one."""
    from types import SimpleNamespace

    from imp_core.localization.batch import ResultLog
    from imp_core.types import LocalizationResult

    qs = [SimpleNamespace(name=f"q{i}.png", condition="day") for i in range(6)]
    res = {q.name: LocalizationResult(message=q.name, num_matches=i) for i, q in enumerate(qs)}
    path = tmp_path / "log.jsonl"
    log = ResultLog(path, qs, resume=False)
    for i in (1, 0, 4, 3):  # q2 and q5 not finished when interrupted
        log.add(qs[i], res[qs[i].name])
    assert [r["name"] for r in _records(path)] == ["q0.png", "q1.png"]
    log.interrupted()
    log.close()
    assert [json.loads(x)["name"] for x in (tmp_path / "log.jsonl.pending").read_text().splitlines()] == \
        ["q3.png", "q4.png"]
    log = ResultLog(path, qs, resume=True)
    assert sorted(log.done) == ["q0.png", "q1.png", "q3.png", "q4.png"]
    for i in (5, 2):
        log.add(qs[i], res[qs[i].name])
    log.close()
    assert [r["name"] for r in _records(path)] == [q.name for q in qs]
    assert [r["num_matches"] for r in _records(path)] == list(range(6))
    assert not (tmp_path / "log.jsonl.pending").exists()
    # a name listed twice is written once and does not hold back the queries after it
    dup = [qs[0], qs[1], qs[0], qs[2]]
    log = ResultLog(tmp_path / "dup.jsonl", dup, resume=False)
    for q in (qs[2], qs[1], qs[0]):
        log.add(q, res[q.name])
    log.close()
    assert [r["name"] for r in _records(tmp_path / "dup.jsonl")] == ["q0.png", "q1.png", "q2.png"]


def test_workers_without_ray_installed_name_the_install(tiny_world, tiny_map, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    rc = main(["localize", "--map", str(tiny_map), "--dataset", str(tiny_world.root), "--out", str(tmp_path),
               "--workers", "2"])
    assert rc == 2
    assert "pip install ray" in capsys.readouterr().err
    rc = main(["localize", "--map", str(tiny_map), "--dataset", str(tiny_world.root), "--out", str(tmp_path),
               "--workers", "0"])
    assert rc == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
