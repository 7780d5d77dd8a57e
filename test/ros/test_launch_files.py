"""Discovery range and package files in the launch files and in imp_graph (issue 11: the graph forced
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, wrong for a vehicle whose camera runs on another host).

`launch`/`launch_ros` are not on PyPI, so the launch files are executed here against small recording stand-ins
for those two packages (only the constructors the files call); what is checked is the launch files' own logic:
the declared argument, its default, and the actions they produce from the graph YAML."""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

from rosutil import ROOT


class _Rec:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _stub_modules():
    mods = {n: types.ModuleType(n) for n in ("launch", "launch.actions", "launch.substitutions",
                                               "launch.event_handlers", "launch.events", "launch_ros",
                                               "launch_ros.actions")}

    class LaunchDescription:
        def __init__(self, entities):
            self.entities = list(entities)

    class DeclareLaunchArgument(_Rec):
        @property
        def name(self):
            return self.args[0]

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context[self.name]

    mods["launch"].LaunchDescription = LaunchDescription
    for n in ("EmitEvent", "RegisterEventHandler", "SetEnvironmentVariable", "OpaqueFunction"):
        setattr(mods["launch.actions"], n, type(n, (_Rec,), {}))
    mods["launch.actions"].DeclareLaunchArgument = DeclareLaunchArgument
    mods["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    mods["launch.event_handlers"].OnProcessExit = type("OnProcessExit", (_Rec,), {})
    mods["launch.events"].Shutdown = type("Shutdown", (_Rec,), {})
    mods["launch_ros.actions"].Node = type("Node", (_Rec,), {})
    return mods


def _run_launch(monkeypatch, name, **given):
    for k, m in _stub_modules().items():
        monkeypatch.setitem(sys.modules, k, m)
    monkeypatch.delitem(sys.modules, "_graph_launch", raising=False)
    spec = importlib.util.spec_from_file_location(f"launch_{name}", ROOT / "launch" / name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ld = mod.generate_launch_description()
    decl = {e.name: e for e in ld.entities if type(e).__name__ == "DeclareLaunchArgument"}
    context = {k: e.kwargs.get("default_value", "") for k, e in decl.items()}
    context.update(given)
    opaque = next(e for e in ld.entities if type(e).__name__ == "OpaqueFunction")
    return decl, opaque.kwargs["function"](context)


def _env(actions):
    return {a.args[0]: a.args[1] for a in actions if type(a).__name__ == "SetEnvironmentVariable"}


@pytest.mark.parametrize("launch_file", ["localize.launch.py", "replay_localize_evaluate.launch.py"])
def test_launch_discovery_range_argument(monkeypatch, launch_file):
    decl, actions = _run_launch(monkeypatch, launch_file)
    arg = decl["discovery_range"]
    assert arg.kwargs["default_value"] == "SUBNET"
    assert "LOCALHOST" in arg.kwargs["choices"]
    assert _env(actions)["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"
    _, actions = _run_launch(monkeypatch, launch_file, discovery_range="LOCALHOST")
    assert _env(actions)["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    nodes = [a for a in actions if type(a).__name__ == "Node"]
    assert nodes
    assert all(a.kwargs["package"] == "imp" for a in nodes)
    for n in nodes:  # the params file comes from the package share directory, as an absolute existing path
        files = [p for p in n.kwargs["parameters"] if isinstance(p, str)]
        assert files, files
        assert all(Path(f).is_absolute() and Path(f).is_file() for f in files), files


def test_graph_yamls_do_not_force_localhost():
    from imp_ros.graph import load_graph

    for f in sorted((ROOT / "config").glob("graph_*.yaml")):
        assert "ROS_AUTOMATIC_DISCOVERY_RANGE" not in load_graph(f).env, f


def test_imp_graph_discovery_range(monkeypatch):
    from imp_ros.graph import GraphError, ros_env

    monkeypatch.delenv("ROS_AUTOMATIC_DISCOVERY_RANGE", raising=False)
    assert ros_env()["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"
    assert ros_env(discovery_range="LOCALHOST")["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    assert ros_env()["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    with pytest.raises(GraphError, match="NOWHERE"):
        ros_env(discovery_range="NOWHERE")
