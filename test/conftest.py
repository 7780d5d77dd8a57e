"""Shared fixtures: paths to the real photos in ../shared/data and a session-wide small synthetic world."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("IMP_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test photos not found at {SHARED_DATA} (set IMP_SHARED_DATA)")
    return SHARED_DATA
