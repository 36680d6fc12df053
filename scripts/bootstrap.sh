#!/usr/bin/env bash
# Creates .venv and installs the project into it. CPU torch is pinned first: an unpinned
# torch would pull gigabytes of CUDA wheels, while the project's own requirement is a range.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
