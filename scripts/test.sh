#!/usr/bin/env bash
# The README's test command: sets up .venv if needed, lints, type-checks the pure layers
# (secagg and the codream core; pyproject.toml [tool.mypy]) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/python -m ruff check .
.venv/bin/python -m mypy
.venv/bin/python -m pytest -q "$@"
