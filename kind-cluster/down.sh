#!/usr/bin/env bash
# Delete the kind cluster created by up.sh (name "dromos", or KIND_CLUSTER_NAME).
set -euo pipefail
kind delete cluster --name "${KIND_CLUSTER_NAME:-dromos}"
