"""The `imp` command end to end on the tiny world: map build -> localize -> eval, plus --help of every command."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from imp_core.cli import build_parser, main


def test_every_subcommand_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"world", "map", "localize", "eval", "instances", "dump", "train-matcher"} <= set(sub.choices)
    for name, p in sub.choices.items():
        assert p.format_help().strip(), name
    out = subprocess.run([sys.executable, "-m", "imp_core.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "localize" in out.stdout


def test_imp_core_never_imports_ros_layers():
    """imp_core is the ROS-free library: no module of it imports imp_ros or rclpy, nor names one as a string to
    import later; `imp bag make` still exists because imp_ros registers it through the ``imp.commands`` entry point."""
    module_name = re.compile(r"(imp_ros|rclpy)(\.\w+)*")
    offenders = []
    for path in sorted((Path(__file__).parents[1] / "imp_core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [node.value] if isinstance(node, ast.Constant) and isinstance(node.value, str) else []
            offenders += [f"{path.name}:{node.lineno}: {n}" for n in names if module_name.fullmatch(n)
                          or n.split(".")[0] in ("imp_ros", "rclpy") and not isinstance(node, ast.Constant)]
    assert not offenders, offenders
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert "bag" in sub.choices


def test_build_localize_eval(tiny_world, tmp_path, capsys):
    map_dir = tmp_path / "map"
    assert main(["map", "build", "--dataset", str(tiny_world.root), "--out", str(map_dir),
                 "--features", "sift", "--matcher", "nn"]) == 0
    assert (map_dir / "map.json").is_file()
    out = tmp_path / "loc"
    assert main(["localize", "--map", str(map_dir), "--dataset", str(tiny_world.root), "--matcher", "nn",
                 "--condition", "day", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "0.25m,2deg" in printed
    assert "extraction" in printed
    lines = (out / "results.txt").read_text().splitlines()
    assert len(lines) >= 6
    assert len(lines[0].split()) == 8
    assert (out / "error_cdf.png").is_file()
    assert (out / "log.jsonl").is_file()
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
