"""The import graph of imp_core and imp_ros, read from the source (ast): no cycles among the project's modules at
module level, and no import from the ROS-free library (imp_core) into the ROS layer (imp_ros)."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("imp_core", "imp_ros")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> List[str]:
    """Absolute names an ``from X import a, b`` refers to (X itself, and X.a where that is a module)."""
    if node.level:
        base = module.split(".") if is_pkg else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target] + [f"{target}.{a.name}" for a in node.names]


def import_graph(module_level_only: bool = True) -> Dict[str, Set[str]]:
    """{module: project modules it imports}; with ``module_level_only`` the imports inside functions (lazy ones,
    kept for heavy optional dependencies) and under ``if TYPE_CHECKING`` are left out."""
    files = {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}
    graph: Dict[str, Set[str]] = {}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        nodes: List[ast.AST] = []
        if module_level_only:
            stack: List[ast.AST] = list(tree.body)
            while stack:
                n = stack.pop()
                if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
                    continue
                if isinstance(n, (ast.Import, ast.ImportFrom)):
                    nodes.append(n)
                elif isinstance(n, (ast.If, ast.Try)):
                    stack += n.body + n.orelse + [h for t in getattr(n, "handlers", []) for h in t.body] + \
                        list(getattr(n, "finalbody", []))
        else:
            nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        deps: Set[str] = set()
        for n in nodes:
            names = [a.name for a in n.names] if isinstance(n, ast.Import) else \
                _resolve(mod, path.name == "__init__.py", n)
            # importing a.b.c runs the packages a and a.b first (their __init__), except those mod lives in
            names += [".".join(d.split(".")[:i]) for d in list(names) for i in range(1, d.count(".") + 1)]
            deps |= {d for d in names if d in files and d != mod and not mod.startswith(d + ".")}
        graph[mod] = deps
    return graph


def find_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_among_project_modules():
    """Module-level imports, and the function-local ones too (a lazy import hides a cycle, it does not remove it).
    A package's own submodules importing the package they live in is not a cycle (``from . import x``)."""
    for module_level_only in (True, False):
        cycles = find_cycles(import_graph(module_level_only))
        assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _is_command_layer(module: str) -> bool:
    """The ``imp`` subcommands (``*.commands``, and imp_core.cli that loads them): the application layer above every
    package, imported by nothing in the library."""
    return module.endswith(".commands") or module == "imp_core.cli"


def test_no_cycles_between_packages():
    """imp_core's packages form layers (e.g. mapping below recognition below localization): no package imports one
    that imports it back, lazily or not. The command modules sit above them all and are left out."""
    graph = import_graph(module_level_only=False)
    packages: Dict[str, Set[str]] = {}
    for m, deps in graph.items():
        if _is_command_layer(m):
            continue
        packages.setdefault(_package(m), set())
        packages[_package(m)] |= {_package(d) for d in deps if _package(d) != _package(m)}
    for deps in list(packages.values()):
        for d in deps:
            packages.setdefault(d, set())
    cycles = find_cycles(packages)
    assert not cycles, "package cycles: " + "; ".join(" <-> ".join(c) for c in cycles)
    users = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps
                   if _is_command_layer(d) and not _is_command_layer(m))
    assert not users, users


def test_imp_core_never_imports_imp_ros():
    graph = import_graph(module_level_only=False)  # lazy imports count too
    bad = sorted(f"{m} -> {d}" for m, deps in graph.items() if m.startswith("imp_core") for d in deps
                 if d.startswith("imp_ros"))
    assert not bad, bad


def test_the_checks_see_a_cycle_and_a_layer_violation():
    """The graph reader itself: a made-up cycle and an imp_core -> imp_ros edge are found."""
    g = {"imp_core.a": {"imp_core.b"}, "imp_core.b": {"imp_core.c"}, "imp_core.c": {"imp_core.a"}, "imp_ros.x": set()}
    assert find_cycles(g) == [["imp_core.a", "imp_core.b", "imp_core.c"]]
    real = import_graph()
    assert "imp_core.types" in real["imp_core.localization.pnp"]  # relative imports resolved
    assert "imp_core.types" in real["imp_ros.conversions"]  # absolute ones too
    assert "imp_core.datasets" in real["imp_core.world.synthetic"]  # and the packages an import runs
