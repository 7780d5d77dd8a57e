"""The `imp` command end to end on the tiny world: map build -> localize -> eval, plus --help of every command."""
from __future__ import annotations

import subprocess
import sys

import pytest

from imp_core.cli import build_parser, main


def test_every_subcommand_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"world", "map", "localize", "eval", "instances", "dump", "train-matcher"} <= set(sub.choices)
    for name, p in sub.choices.items():
        assert p.format_help().strip(), name
    out = subprocess.run([sys.executable, "-m", "imp_core.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "localize" in out.stdout


def test_build_localize_eval(tiny_world, tmp_path, capsys):
    map_dir = tmp_path / "map"
    assert main(["map", "build", "--dataset", str(tiny_world.root), "--out", str(map_dir),
                 "--features", "sift", "--matcher", "nn"]) == 0
    assert (map_dir / "map.json").is_file()
    out = tmp_path / "loc"
    assert main(["localize", "--map", str(map_dir), "--dataset", str(tiny_world.root), "--matcher", "nn",
                 "--condition", "day", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "0.25m,2deg" in printed and "extraction" in printed
    lines = (out / "results.txt").read_text().splitlines()
    assert len(lines) >= 6 and len(lines[0].split()) == 8
    assert (out / "error_cdf.png").is_file() and (out / "log.jsonl").is_file()
    assert main(["eval", "--results", str(out / "results.txt"), "--dataset", str(tiny_world.root),
                 "--condition", "day"]) == 0
    # wrong feature type for the map -> clear error, exit code 2
    assert main(["localize", "--map", str(map_dir), "--dataset", str(tiny_world.root), "--config",
                 str(_yaml(tmp_path, "localizer:\n  features: {name: disk}\n")), "--out", str(tmp_path / "x")]) == 2
    assert "holds 'sift' features" in capsys.readouterr().err


def _yaml(tmp_path, text):
    p = tmp_path / "conf.yaml"
    p.write_text(text)
    return p


def test_missing_map_is_a_clear_error(tmp_path, capsys):
    assert main(["map", "info", str(tmp_path / "nope")]) == 2
    assert "map directory not found" in capsys.readouterr().err
