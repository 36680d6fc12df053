"""The method core and both logic objects never import grpc (checked in a fresh interpreter)."""

import json
import subprocess
import sys

import pytest

PURE_MODULES = [
    "codream.dream_objective",
    "codream.local_dreaming",
    "codream.server_optimizer",
    "codream.training",
    "codream.aggregation",
    "codream.config",
    "codream.data",
    "codream.models",
    "codream.partition",
    "codream.round_logic",
    "codream.node_logic",
]


def _imported_after(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_core_and_logic_modules_do_not_import_grpc():
    loaded = _imported_after(PURE_MODULES)
    assert set(PURE_MODULES) <= loaded  # the check really imported them
    leaked = sorted(m for m in loaded if m == "grpc" or m.startswith(("grpc.", "grpc_")))
    assert not leaked, f"grpc modules imported by the core: {leaked}"
    assert not any(m.endswith("_pb2") or m.endswith("_pb2_grpc") for m in loaded)


def test_the_check_can_fail():
    pytest.importorskip("grpc")
    assert "grpc" in _imported_after(["grpc"])
