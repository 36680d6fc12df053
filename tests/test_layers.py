"""The layer picture, checked from the source: every import arrow points down, and none go round.

    secagg  <-  codream (core)  <-  protos  <-  coordinator | client_node  <-  codream.cli

Each module's imports are read with `ast` (module level and inside functions alike: a deferred
import is still an arrow; only `if TYPE_CHECKING:` blocks are skipped, they never run). A module
may import its own layer and the layers below; the two services never import each other, and
nothing imports the composition root. No two modules import each other, directly or round a
cycle. The core and `secagg` also run without grpc, checked in a fresh interpreter.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("secagg", "codream", "protos", "coordinator", "client_node")
# (layer, rank): a module may import ranks below its own and its own layer; equal ranks of
# different layers (the two services) may not import each other.
LAYERS = {"secagg": 0, "core": 1, "wire": 2, "coordinator": 3, "client_node": 3, "composition root": 4}


def layer_of(module: str) -> str | None:
    top = module.split(".")[0]
    if module == "codream.cli" or module.startswith("codream.cli."):
        return "composition root"
    return {"secagg": "secagg", "codream": "core", "protos": "wire", "coordinator": "coordinator",
            "client_node": "client_node"}.get(top)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, module: str) -> set[str]:
    """The first-party modules `module` (at `path`) imports at run time."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - child.level + 1] + ([base] if base else []))
                found.update(f"{base}.{alias.name}" for alias in child.names)  # trimmed later
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return {name for name in found if name.split(".")[0] in PACKAGES}


def modules_under(root: Path) -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                continue
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the modules of this tree it imports (a `from pkg import name` names pkg.name
    when that is a module, else pkg)."""
    modules = modules_under(root)
    graph = {}
    for name, path in modules.items():
        targets = set()
        for target in imports_of(path, name):
            while target not in modules and "." in target:
                target = target.rpartition(".")[0]
            if target in modules and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for source, targets in sorted(graph.items()):
        here = layer_of(source)
        for target in sorted(targets):
            there = layer_of(target)
            if here is None or there is None or there == here:
                continue
            if LAYERS[there] >= LAYERS[here]:
                way = "sideways" if LAYERS[there] == LAYERS[here] else "upwards"
                bad.append(f"{source} ({here}) imports {target} ({there}): {way}")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), as sorted names.

    A package's `__init__` importing its own submodules is how a package exposes them, not a
    cycle, so arrows from a package to the modules inside it are left out."""
    def inside(package: str, module: str) -> bool:
        return module.startswith(package + ".")

    edges = {m: {t for t in ts if not inside(m, t)} for m, ts in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def strongconnect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                strongconnect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            strongconnect(node)
    return groups


# ---- the repository -----------------------------------------------------------------------
def test_every_import_points_down_the_layers():
    graph = import_graph(ROOT)
    assert {"codream.round_logic", "coordinator.service", "client_node.daemon",
            "codream.cli"} <= set(graph)  # the check really read the tree
    assert layer_violations(graph) == []


def test_no_modules_import_each_other():
    assert cycles(import_graph(ROOT)) == []


def test_nothing_but_the_composition_root_imports_it():
    graph = import_graph(ROOT)
    importers = {s for s, ts in graph.items() for t in ts if layer_of(t) == "composition root"}
    assert {s for s in importers if layer_of(s) != "composition root"} == set()


def _imported_after(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_the_core_and_secagg_run_without_grpc():
    pure = sorted(m for m in modules_under(ROOT) if layer_of(m) in ("secagg", "core"))
    loaded = _imported_after(pure)
    assert set(pure) <= loaded  # the check really imported them
    leaked = sorted(m for m in loaded if m == "grpc" or m.startswith(("grpc.", "grpc_")))
    assert not leaked, f"grpc modules imported by the core: {leaked}"
    assert not any(m.endswith(("_pb2", "_pb2_grpc")) for m in loaded)


# ---- the checks can fail ------------------------------------------------------------------
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").touch()
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize(("files", "expected"), [
    ({"codream/core.py": "from coordinator.service import x\n", "coordinator/service.py": ""},
     "codream.core (core) imports coordinator.service (coordinator): upwards"),
    ({"client_node/daemon.py": "import coordinator.membership\n", "coordinator/membership.py": ""},
     "client_node.daemon (client_node) imports coordinator.membership (coordinator): sideways"),
    ({"secagg/client.py": "def f():\n    from protos import serde\n", "protos/serde.py": ""},
     "secagg.client (secagg) imports protos.serde (wire): upwards"),
    ({"coordinator/service.py": "from codream.cli import main\n", "codream/cli/__init__.py": ""},
     "coordinator.service (coordinator) imports codream.cli (composition root): upwards"),
])
def test_an_arrow_that_points_up_or_sideways_is_found(tmp_path, files, expected):
    assert layer_violations(import_graph(_tree(tmp_path, files))) == [expected]


def test_imports_under_type_checking_and_downward_ones_pass(tmp_path):
    root = _tree(tmp_path, {
        "codream/strategy.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                               "    from codream.cli import x\n    from coordinator import y\n",
        "coordinator/service.py": "from codream import strategy\nfrom protos import serde\n",
        "protos/serde.py": "from . import wire\nimport secagg\n", "protos/wire.py": "",
        "codream/cli/__init__.py": "import coordinator.service\nimport client_node\n",
    })
    assert layer_violations(import_graph(root)) == []


def test_a_cycle_is_found(tmp_path):
    root = _tree(tmp_path, {"codream/a.py": "from codream import b\n",
                            "codream/b.py": "def f():\n    import codream.c\n",
                            "codream/c.py": "from codream.a import x\n"})
    assert cycles(import_graph(root)) == [["codream.a", "codream.b", "codream.c"]]
