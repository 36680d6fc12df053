#!/usr/bin/env bash
# The README's main job: sets up .venv if needed and runs CoDream on the bundled digits data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/codream simulate --strategy codream --dataset digits --clients 4 \
  --partition dirichlet:0.5 --models cnn,wide_cnn,resnet8,vgg --out runs/main "$@"
