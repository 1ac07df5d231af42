#!/usr/bin/env bash
# Stop and remove an offline cluster started by up.sh (default name: dromos), with its real
# node if it has one (real-node.sh down). The built binaries and images stay cached.
# Usage: kind-cluster/offline/down.sh [--name NAME]
set -euo pipefail
CACHE=${DROMOS_K8S_CACHE:-$HOME/.cache/dromos/k8s}
NAME=dromos
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) NAME=$2; shift 2 ;;
    *) echo "down.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
# A real node first (its containers, mounts, network namespaces, bridge, iptables chains),
# while the API server still answers.
bash "$(dirname "$0")/real-node.sh" down "$NAME"
if ! "$CACHE/bin/kwokctl" get clusters 2>/dev/null | grep -qx -- "$NAME"; then
  echo "[down] no cluster named $NAME" >&2
  exit 0
fi
PATH="$CACHE/bin:$PATH" "$CACHE/bin/kwokctl" delete cluster --name "$NAME"
