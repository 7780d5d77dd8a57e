"""Shared fixtures: paths to the real photos in ../shared/data and a session-wide small synthetic world."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("IMP_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _load_benchmark(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark(name)`` imports the script ``benchmarks/<name>.py`` as a module (benchmarks/ is no package)."""
    return _load_benchmark


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test photos not found at {SHARED_DATA} (set IMP_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """The tiny synthetic world (deterministic, generated once per test session)."""
    from imp_core.world.synthetic import SyntheticWorld, make_world

    root = make_world(tmp_path_factory.getbasetemp() / "worlds" / "tiny", preset="tiny", seed=0, progress=False)
    return SyntheticWorld(root)


TINY_MAP_CONF = {
    "features": {"name": "sift", "max_keypoints": 2048},
    "matcher": {"name": "nn", "ratio_threshold": 0.9},
    "global": {"name": "vlad", "num_clusters": 16},
}


@pytest.fixture(scope="session")
def tiny_map(tiny_world, tmp_path_factory):
    """A SIFT map of the tiny world (fast to build and to localize against on 2 cores)."""
    import pycolmap

    from imp_core.mapping import build_map

    pycolmap.logging.minloglevel = 2
    return build_map(tiny_world, tmp_path_factory.mktemp("maps") / "tiny_sift", TINY_MAP_CONF, progress=False)


@pytest.fixture(scope="session")
def robotcar_rig(tmp_path_factory):
    """RobotCar Seasons rendered from the synthetic street with a left/rear/right camera rig, in the layout of the
    real download (``make_robotcar_rig``); shared by the dataset, benchmark and bag tests, which only read it."""
    from imp_core.world.export import make_robotcar_rig

    return make_robotcar_rig(tmp_path_factory.getbasetemp() / "robotcar_rig" / "RobotCar-Seasons")
