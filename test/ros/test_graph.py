"""The graph runner's config parsing (process running is covered by test_pipeline)."""
from __future__ import annotations

from pathlib import Path

import pytest

from imp_ros.graph import GraphError, find_graph, load_graph, node_command, parse_args, parse_set

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_graphs_load():
    for name in ("graph_replay", "graph_localize"):
        g = load_graph(ROOT / "config" / f"{name}.yaml")
        assert g.params_file.is_file()
        assert g.fastdds_profile.is_file()
        assert "localizer" in [n.name for n in g.nodes]
    # one replay graph for every dataset: the argument picks the parameters file
    assert load_graph(ROOT / "config" / "graph_replay.yaml").params_file.name == "synthetic.yaml"
    for dataset in ("synthetic", "aachen", "robotcar"):
        g = load_graph(ROOT / "config" / "graph_replay.yaml", args={"dataset": dataset})
        assert g.params_file == (ROOT / "config" / f"{dataset}.yaml").resolve()
    g = load_graph(ROOT / "config" / "graph_replay.yaml", {"replay": {"speed": 2.0}})
    replay = next(n for n in g.nodes if n.name == "replay")
    assert replay.parameters == {"speed": 2.0}
    assert replay.required
    assert not next(n for n in g.nodes if n.name == "localizer").required
    cmd = node_command(replay, g.params_file, Path("/tmp/o.yaml"))
    assert cmd[1:3] == ["-m", "imp_ros.replay_node"]
    assert "__node:=replay" in cmd
    assert cmd[-1] == "/tmp/o.yaml"


def test_errors(tmp_path):
    with pytest.raises(GraphError, match="non-empty 'nodes'"):
        load_graph({"graph": {}})
    with pytest.raises(GraphError, match="unknown"):
        load_graph({"graph": {"nodes": [{"name": "a", "executable": "rm"}]}})
    with pytest.raises(GraphError, match="not found"):
        load_graph({"graph": {"params_file": "nope.yaml", "nodes": [{"name": "a", "executable": "replay"}]}})
    bad = tmp_path / "g.yaml"
    bad.write_text("graph: [")
    with pytest.raises(GraphError, match="g.yaml"):
        load_graph(bad)
    assert parse_set(["localizer.device=cpu", "replay.speed=2.5"]) == {"localizer": {"device": "cpu"},
                                                                      "replay": {"speed": 2.5}}
    with pytest.raises(GraphError, match="NODE.PARAM=VALUE"):
        parse_set(["device=cpu"])
    replay = ROOT / "config" / "graph_replay.yaml"
    with pytest.raises(GraphError, match=r"unknown graph argument.*\['datset'\].*takes: dataset"):
        load_graph(replay, args={"datset": "aachen"})
    with pytest.raises(GraphError, match="mars.yaml"):  # a dataset without a parameters file
        load_graph(replay, args={"dataset": "mars"})
    with pytest.raises(GraphError, match="does not declare"):
        load_graph({"graph": {"params_file": "config/{dataset}.yaml",
                              "nodes": [{"name": "a", "executable": "replay"}]}})
    assert parse_args(["dataset=aachen"]) == {"dataset": "aachen"}
    with pytest.raises(GraphError, match="NAME=VALUE"):
        parse_args(["aachen"])
    with pytest.raises(GraphError, match="graph_replay.yaml --arg dataset=aachen"):  # the old per-dataset files
        find_graph("graph_aachen.yaml")
