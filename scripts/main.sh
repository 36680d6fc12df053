#!/usr/bin/env bash
# The README's main job: sets up .venv if needed and runs a real local cluster — a coordinator
# and 4 node daemons as processes on 127.0.0.1 — training CoDream with secure aggregation on
# the bundled digits data (4 architectures, Dirichlet(0.5) label skew). Writes runs/main/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/codream cluster --nodes 4 --strategy codream --dataset digits \
  --partition dirichlet:0.5 --models cnn,wide_cnn,resnet8,vgg --out runs/main --force "$@"
