#!/usr/bin/env bash
# Writes a development PKI into certs/ next to this script, for the dev overlay's
# secretGenerator: ca.pem, server.pem/.key (SANs: the coordinator Service's DNS names) and
# codream-node-N.pem/.key (CN = the pod name = the node id; the certificate carries the node's
# identity key), codream-node-N.identity.key and identities.toml (the roster the overlay pins,
# for authenticated secure aggregation). Not for production: the CA key
# is discarded and the certificates live 30 days; rerun to regenerate (pods then roll).
#
# Uses $CODREAM if set, else `codream` on PATH, else the repository's .venv/bin/codream, else
# `python3 -m codream.cli certs` (needs the package importable).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../../.." && pwd)"
out="$here/certs"

# Must match the StatefulSet's pod names (codream-node, 4 replicas) and the Service name.
nodes="codream-node-0,codream-node-1,codream-node-2,codream-node-3"
hosts="codream-coordinator,codream-coordinator.codream,codream-coordinator.codream.svc"
hosts="$hosts,codream-coordinator.codream.svc.cluster.local"

if [[ -n "${CODREAM:-}" ]]; then
    certs=("$CODREAM" certs)
elif command -v codream >/dev/null 2>&1; then
    certs=(codream certs)
elif [[ -x "$repo/.venv/bin/codream" ]]; then
    certs=("$repo/.venv/bin/codream" certs)
else
    certs=(python3 -m codream.cli certs)
fi

"${certs[@]}" --out "$out" --nodes "$nodes" --hosts "$hosts"
