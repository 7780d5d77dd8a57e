"""Run a graph of imp nodes from a YAML config as separate ROS 2 processes, without ``ros2 launch``.

The same YAML drives the launch files in ``launch/`` (``graph_actions`` in ``launch/_graph_launch.py``). Format::

    graph:
      args: {dataset: synthetic}                # arguments with defaults (imp_graph --arg, launch arguments)
      params_file: config/{dataset}.yaml       # ROS parameters, keyed by node name (relative to the YAML's repo)
      fastdds_profile: config/fastdds_shm.xml   # exported as FASTDDS_DEFAULT_PROFILES_FILE
      env: {MY_VAR: value}                       # extra environment for the node processes
      nodes:
        - {name: localizer, executable: localizer, parameters: {autostart: true}}
        - {name: evaluator, executable: evaluator, required: true}
        - {name: replay, executable: replay}

``{name}`` in ``params_file``, ``fastdds_profile`` and ``env`` values is replaced by the argument's value, so one
YAML serves several datasets (``config/graph_replay.yaml``). The graph ends when every ``required`` node has
exited (default: all nodes that are not ``daemon: true``) or when any node fails; the others then get SIGINT, then
SIGKILL after a grace period.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, TextIO, Union

import yaml

from imp_core.errors import ImpError
from imp_ros.share import package_file

REPO = Path(__file__).resolve().parents[1]
EXECUTABLES = {
    "localizer": "imp_ros.localizer_node",
    "replay": "imp_ros.replay_node",
    "evaluator": "imp_ros.evaluator_node",
}


class GraphError(ImpError, ValueError):
    """A graph config that cannot be run (the message names the file and key)."""


@dataclass
class NodeSpec:
    name: str
    executable: str
    parameters: Dict[str, Any] = field(default_factory=dict)
    remappings: Dict[str, str] = field(default_factory=dict)
    required: bool = True
    daemon: bool = False


@dataclass
class GraphSpec:
    nodes: List[NodeSpec]
    params_file: Optional[Path] = None
    fastdds_profile: Optional[Path] = None
    env: Dict[str, str] = field(default_factory=dict)


def _resolve(p: Optional[str], base: Optional[Path], what: str = "") -> Optional[Path]:
    """A file named in a graph YAML: relative to the YAML's folder, then the package share directory (so an
    installed package works from any directory), then the current directory."""
    if not p:
        return None
    try:
        return package_file(p, "file", base)
    except FileNotFoundError as e:
        raise GraphError(f"{what}: {e}" if what else str(e)) from None


def find_graph(name: Union[str, Path]) -> Path:
    """A graph YAML given on the command line: the path as given, else ``config/<name>`` in the package share
    directory (``imp_graph graph_replay.yaml`` works from any directory)."""
    p = Path(name)
    if p.is_file():
        return p
    for cand in (p, Path("config") / p, Path("config") / f"{p}.yaml", Path("config") / f"graph_{p}.yaml"):
        try:
            return package_file(cand, "graph config")
        except FileNotFoundError:
            continue
    dataset = p.name[len("graph_"):-len(".yaml")] if p.name.startswith("graph_") and p.suffix == ".yaml" else ""
    hint = f"; graph_{dataset}.yaml is now graph_replay.yaml --arg dataset={dataset}" if dataset in DATASETS else ""
    raise GraphError(f"graph config {str(name)!r} not found as a file nor in the package's config/ "
                     f"(e.g. graph_replay.yaml){hint}")


DATASETS = ("synthetic", "aachen", "robotcar")  # config/<dataset>.yaml: the parameters graph_replay.yaml runs with


def graph_args(g: Dict[str, Any], args: Optional[Dict[str, Any]], where: str) -> Dict[str, str]:
    """The graph's arguments: its ``args`` defaults updated by ``args`` (an unknown name is an error)."""
    declared = g.get("args") or {}
    if not isinstance(declared, dict):
        raise GraphError(f"{where}: graph.args must be a mapping of argument names to defaults")
    unknown = sorted(set(args or {}) - set(declared))
    if unknown:
        raise GraphError(f"{where}: unknown graph argument(s) {unknown}; this graph takes: "
                         f"{', '.join(sorted(declared)) or 'none'}")
    return {str(k): str(v) for k, v in {**declared, **(args or {})}.items()}


def _substitute(text: Any, values: Dict[str, str], where: str) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return text.format(**values)
    except (KeyError, IndexError, ValueError) as e:
        raise GraphError(f"{where}: {text!r} names an argument the graph does not declare ({e}); "
                         f"graph.args: {', '.join(sorted(values)) or 'none'}") from None


def load_graph(path_or_dict, overrides: Optional[Dict[str, Dict[str, Any]]] = None,
               args: Optional[Dict[str, Any]] = None) -> GraphSpec:
    """Parse a graph YAML (or dict). ``overrides`` = {node name: {param: value}} added to the node's parameters;
    ``args`` = {argument: value} over the graph's ``args`` defaults (e.g. {"dataset": "aachen"})."""
    if isinstance(path_or_dict, dict):
        raw, where, base = path_or_dict, "<dict>", None
    else:
        where = str(path_or_dict)
        try:
            raw = yaml.safe_load(Path(path_or_dict).read_text())
        except (OSError, yaml.YAMLError) as e:
            raise GraphError(f"cannot read graph config {where}: {e}") from e
        base = Path(path_or_dict).resolve().parent
    g = (raw or {}).get("graph")
    if not isinstance(g, dict) or not isinstance(g.get("nodes"), list) or not g["nodes"]:
        raise GraphError(f"{where}: needs a 'graph' mapping with a non-empty 'nodes' list")
    nodes = []
    for i, n in enumerate(g["nodes"]):
        if not isinstance(n, dict) or "name" not in n or "executable" not in n:
            raise GraphError(f"{where}: graph.nodes[{i}] needs 'name' and 'executable'")
        if n["executable"] not in EXECUTABLES:
            raise GraphError(f"{where}: graph.nodes[{i}].executable {n['executable']!r} unknown; "
                             f"choose from {sorted(EXECUTABLES)}")
        unknown = set(n) - {"name", "executable", "parameters", "remappings", "required", "daemon"}
        if unknown:
            raise GraphError(f"{where}: graph.nodes[{i}] has unknown keys {sorted(unknown)}")
        params = dict(n.get("parameters") or {})
        params.update((overrides or {}).get(n["name"], {}))
        daemon = bool(n.get("daemon", False))
        nodes.append(NodeSpec(n["name"], n["executable"], params, dict(n.get("remappings") or {}),
                              bool(n.get("required", not daemon)), daemon))
    values = graph_args(g, args, where)
    given = ", ".join(f"{k}={v}" for k, v in sorted(values.items()))

    def path(key: str) -> Optional[Path]:
        what = f"{where}: graph.{key}" + (f" (arguments {given})" if given else "")
        return _resolve(_substitute(g.get(key), values, what), base, what)

    return GraphSpec(nodes, path("params_file"), path("fastdds_profile"),
                     {str(k): str(_substitute(v, values, f"{where}: graph.env.{k}"))
                      for k, v in (g.get("env") or {}).items()})


DISCOVERY_RANGES = ("SUBNET", "LOCALHOST", "OFF", "SYSTEM_DEFAULT")
# A vehicle's camera driver may run on another host: discover the subnet unless told otherwise (the tests and the
# demo pass LOCALHOST). The launch files have the same default (launch argument `discovery_range`).
DEFAULT_DISCOVERY_RANGE = "SUBNET"


def ros_env(profile: Optional[Path] = None, domain_id: Optional[int] = None,
            extra: Optional[Dict[str, str]] = None, discovery_range: Optional[str] = None) -> Dict[str, str]:
    """Environment for node processes: DDS discovery range (``discovery_range``, else the caller's
    ROS_AUTOMATIC_DISCOVERY_RANGE, else SUBNET), the SHM profile, the venv as ament prefix."""
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = env.get("ROS_AUTOMATIC_DISCOVERY_RANGE") or DEFAULT_DISCOVERY_RANGE
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if profile is not None:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    env.update(extra or {})
    if discovery_range:
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = discovery_range
    rng = env["ROS_AUTOMATIC_DISCOVERY_RANGE"]
    if rng.upper() not in DISCOVERY_RANGES:
        raise GraphError(f"ROS_AUTOMATIC_DISCOVERY_RANGE {rng!r} is not one of {', '.join(DISCOVERY_RANGES)}")
    return env


def node_command(spec: NodeSpec, params_file: Optional[Path], override_file: Optional[Path]) -> List[str]:
    cmd = [sys.executable, "-m", EXECUTABLES[spec.executable], "--ros-args", "-r", f"__node:={spec.name}"]
    for a, b in spec.remappings.items():
        cmd += ["-r", f"{a}:={b}"]
    for f in (params_file, override_file):
        if f is not None:
            cmd += ["--params-file", str(f)]
    return cmd


class Graph:
    """Started node processes; use as a context manager so they are always stopped."""

    def __init__(self, spec: GraphSpec, domain_id: Optional[int] = None, log: Optional[TextIO] = None,
                 log_dir: Optional[Path] = None, discovery_range: Optional[str] = None) -> None:
        self.spec = spec
        self.env = ros_env(spec.fastdds_profile, domain_id, spec.env, discovery_range)
        self.log = log if log is not None else sys.stdout
        self.log_dir = Path(log_dir) if log_dir else None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        self._tmp = tempfile.TemporaryDirectory(prefix="imp_graph_")
        self.procs: Dict[str, subprocess.Popen] = {}
        self.output: Dict[str, List[str]] = {}
        self._threads: List[threading.Thread] = []
        self._log_lock = threading.Lock()
        self.killed = False

    def start(self) -> "Graph":
        for n in self.spec.nodes:
            override = None
            if n.parameters:
                override = Path(self._tmp.name) / f"{n.name}.yaml"
                override.write_text(yaml.safe_dump({n.name: {"ros__parameters": n.parameters}}))
            cmd = node_command(n, self.spec.params_file, override)
            p = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, bufsize=1, start_new_session=True)
            self.procs[n.name] = p
            self.output[n.name] = []
            t = threading.Thread(target=self._pump, args=(n.name, p), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _pump(self, name: str, p: subprocess.Popen) -> None:
        f = open(self.log_dir / f"{name}.log", "w") if self.log_dir else None
        try:
            for line in p.stdout:
                self.output[name].append(line)
                if f:
                    f.write(line)
                with self._log_lock:
                    self.log.write(f"[{name}] {line}")
                    self.log.flush()
        finally:
            if f:
                f.close()

    def wait(self, timeout: Optional[float] = None) -> Dict[str, Optional[int]]:
        """Until all required nodes exit, a node fails, or ``timeout``; returns {name: exit code or None}."""
        deadline = None if timeout is None else time.monotonic() + timeout
        required = [n.name for n in self.spec.nodes if n.required]
        while True:
            codes = {k: p.poll() for k, p in self.procs.items()}
            if any(c not in (None, 0) for c in codes.values()):
                break
            if all(codes[k] is not None for k in required):
                break
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.1)
        return {k: p.poll() for k, p in self.procs.items()}

    def stop(self, grace: float = 10.0) -> Dict[str, Optional[int]]:
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
                self.killed = True
        for t in self._threads:
            t.join(timeout=2.0)
        if self.killed:
            clean_shm()
        self._tmp.cleanup()
        return {k: p.returncode for k, p in self.procs.items()}

    def __enter__(self) -> "Graph":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def clean_shm() -> None:
    """Remove Fast DDS shared-memory segments left by killed processes (only zombies: the CLI checks locks)."""
    exe = Path(sys.executable).parent / "fastdds"
    if exe.exists():
        subprocess.run([str(exe), "shm", "clean"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=30, check=False)


def run_graph(path_or_dict, overrides=None, domain_id=None, timeout=None, log=None, log_dir=None,
              discovery_range=None, args=None) -> int:
    """Start, wait, stop; 0 when every required node exited with 0."""
    spec = load_graph(path_or_dict, overrides, args)
    with Graph(spec, domain_id, log, log_dir, discovery_range) as g:
        codes = g.wait(timeout)
        timed_out = any(codes[n.name] is None for n in spec.nodes if n.required)
    codes = {k: p.returncode for k, p in g.procs.items()}
    bad = {n.name: codes[n.name] for n in spec.nodes if n.required and codes[n.name] not in (0,)}
    if timed_out:
        print(f"[imp_graph] timed out after {timeout} s", file=sys.stderr)
    if bad:
        print(f"[imp_graph] nodes failed: {bad}", file=sys.stderr)
    return 0 if not bad and not timed_out else 1


def parse_set(items: List[str]) -> Dict[str, Dict[str, Any]]:
    """['localizer.device=cpu', ...] -> {'localizer': {'device': 'cpu'}} (values parsed as YAML scalars)."""
    out: Dict[str, Dict[str, Any]] = {}
    for it in items:
        key, sep, val = it.partition("=")
        node, dot, name = key.partition(".")
        if not sep or not dot or not node or not name:
            raise GraphError(f"--set {it!r}: expected NODE.PARAM=VALUE")
        out.setdefault(node, {})[name] = yaml.safe_load(val)
    return out


def parse_args(items: List[str]) -> Dict[str, str]:
    """['dataset=aachen'] -> {'dataset': 'aachen'}."""
    out: Dict[str, str] = {}
    for it in items:
        name, sep, val = it.partition("=")
        if not sep or not name.strip():
            raise GraphError(f"--arg {it!r}: expected NAME=VALUE (e.g. dataset=aachen)")
        out[name.strip()] = val.strip()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="imp_graph", description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="graph YAML (e.g. config/graph_replay.yaml, or graph_replay.yaml from anywhere)")
    ap.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE",
                    help="a graph argument (repeatable), e.g. dataset=aachen for graph_replay.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                    help="override a node parameter (repeatable)")
    ap.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID for all nodes")
    ap.add_argument("--timeout", type=float, default=None, help="stop the graph after this many seconds")
    ap.add_argument("--log-dir", type=Path, default=None, help="also write one log file per node here")
    ap.add_argument("--discovery-range", default=None, type=str.upper, choices=DISCOVERY_RANGES,
                    help="ROS_AUTOMATIC_DISCOVERY_RANGE for the nodes (default: the environment's, else SUBNET; "
                         "LOCALHOST keeps a demo or test on this machine)")
    a = ap.parse_args(argv)
    try:
        return run_graph(find_graph(a.config), parse_set(a.set), a.domain_id, a.timeout, log_dir=a.log_dir,
                         discovery_range=a.discovery_range, args=parse_args(a.arg))
    except GraphError as e:
        print(f"imp_graph: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
