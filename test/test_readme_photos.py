"""The README's "Localize your own images" commands, exactly as written (defaults only), on the shared photos.

The two commands are read from README.md and run with the placeholder folders replaced: a map from 8 of the 10
Sacre-Coeur photos, then the other 2 (a long-lens and a wide-angle photo) localized as a folder with an unknown
camera. Slow: ALIKED + LightGlue, the README's defaults, on the CPU (about 5 minutes on 2 cores).
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from imp_core.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ("93341989_396310999.jpg", "44120379_8371960244.jpg")  # long lens (about 19 deg across), wide angle


def readme_command(prefix: str) -> list:
    """The first command line of README.md's shell blocks that starts with ``prefix`` (comments stripped)."""
    for line in (ROOT / "README.md").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith(prefix):
            return shlex.split(line)
    raise AssertionError(f"README.md has no command starting with {prefix!r}")


def substitute(argv: list, paths: dict) -> list:
    return [paths.get(a, a) for a in argv]


@pytest.mark.slow
def test_readme_localize_your_own_images(shared_data, tmp_path, monkeypatch):
    photos = shared_data / "sacre_coeur_mapping"
    db, queries = tmp_path / "db_images", tmp_path / "query_images"
    db.mkdir()
    queries.mkdir()
    for p in sorted(photos.iterdir()):
        if p.suffix.lower() in (".jpg", ".jpeg", ".png"):
            shutil.copy(p, (queries if p.name in QUERIES else db) / p.name)
    assert len(list(queries.iterdir())) == 2 and len(list(db.iterdir())) == 8
    monkeypatch.chdir(tmp_path)  # the README's relative maps/ and outputs/ land here
    paths = {"path/to/db_images": str(db), "path/to/query_images": str(queries)}

    build = readme_command("imp map build --images")
    localize = readme_command("imp localize --map maps/mine --images")
    assert main(substitute(build, paths)[1:]) == 0
    assert main(substitute(localize, paths)[1:]) == 0

    out = tmp_path / "outputs" / "mine"
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if x.strip()]
    assert sorted(r["name"] for r in lines) == sorted(QUERIES)
    for r in lines:
        assert r["status"] == "OK", r
    results = [x.split() for x in (out / "results.txt").read_text().splitlines() if x.strip()]
    assert sorted(r[0] for r in results) == sorted(QUERIES)
    assert all(len(r) == 8 and all(re.fullmatch(r"-?[0-9.e+-]+", v) for v in r[1:]) for r in results)
    assert len(list((out / "overlays").glob("*_matches.png"))) == 2
