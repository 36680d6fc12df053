"""`codream simulate` needs no grpc: building the whole parser (every subcommand) loads none of it."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _grpc_modules_after(code: str) -> list[str]:
    code += ("\nimport json, sys\n"
             "grpc = [m for m in sys.modules if m == 'grpc' or m.startswith(('grpc.', 'grpc_'))]\n"
             "print(json.dumps(sorted(grpc)))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_simulate_builds_the_whole_parser_without_grpc():
    code = ("from codream.cli import make_parser\n"
            "from codream.cli.simulate_command import run_simulate\n"
            "args = make_parser().parse_args(['simulate', '--rounds', '1'])\n"
            "assert args.func is run_simulate\n")
    assert _grpc_modules_after(code) == []


def test_the_check_can_fail():
    assert "grpc" in _grpc_modules_after("import client_node.daemon\n")
