#!/usr/bin/env bash
# Create the kind cluster of cluster.yaml (needs Docker and kind; kind pulls its node image,
# so this needs a registry -- without one use offline/up.sh) and load local images into it.
#
# Usage: kind-cluster/up.sh [IMAGE:TAG ...]
#   Every image named (and, by default, every local image tagged dromos/*) is loaded with
#   `kind load docker-image`, so pods can use it without a registry. Use a tag other than
#   `latest`: Dromos's pods pull IfNotPresent, and kind nodes never pull what was loaded.
# The cluster name is "dromos" (override with KIND_CLUSTER_NAME). The last line printed is
# KUBECONFIG=<path> (a kubeconfig for this cluster only; ~/.kube/config is also updated).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
NAME=${KIND_CLUSTER_NAME:-dromos}
command -v kind >/dev/null || { echo "up.sh: kind is not installed (go install sigs.k8s.io/kind@v0.29.0)" >&2; exit 2; }
command -v docker >/dev/null || { echo "up.sh: docker is not installed" >&2; exit 2; }

if kind get clusters 2>/dev/null | grep -qx -- "$NAME"; then
  echo "[kind] cluster $NAME exists" >&2
else
  kind create cluster --name "$NAME" --config "$HERE/cluster.yaml" --wait 120s >&2
fi

images=("$@")
if [[ ${#images[@]} -eq 0 ]]; then
  mapfile -t images < <(docker images --format '{{.Repository}}:{{.Tag}}' | grep '^dromos/' | grep -v ':<none>$' || true)
fi
for image in "${images[@]}"; do
  echo "[kind] loading $image" >&2
  kind load docker-image "$image" --name "$NAME" >&2
done

config=${KIND_KUBECONFIG:-$HOME/.kube/kind-$NAME.yaml}
mkdir -p "$(dirname "$config")"
kind get kubeconfig --name "$NAME" >"$config"
chmod 600 "$config"
echo "KUBECONFIG=$config"
