#!/usr/bin/env bash
# Start an offline Kubernetes cluster for Dromos: a real etcd + kube-apiserver +
# kube-controller-manager + kube-scheduler (built by build.sh from Go modules, no image
# registry needed) and the kwok controller, which plays the kubelet of N simulated nodes.
#
# Usage: kind-cluster/offline/up.sh [--nodes N] [--real-nodes R] [--real-node-name NODE]
#                                   [--name NAME] [--cpu C] [--memory M] [--pods P]
#                                   [--disable-qps-limits]
#   --nodes N     Node objects to create (default 3): dromos-node-0..N-1, labelled
#                 kubernetes.io/hostname=<name>, topology.kubernetes.io/zone=z1..z3 and
#                 rack=r1..r6 (round robin), each with C cpus, M memory and P pods
#                 allocatable (default 8, 32Gi, 110).
#   --real-nodes R  0 (default) or 1: also start a real node (root needed): a kubelet and
#                 kube-proxy (built from Go modules like the rest) with containerd, runc and
#                 Debian's CNI plugins; pods there run for real (real-node.sh says what it
#                 starts and down.sh removes). Its images are built locally: dromos-test/busybox:1
#                 (busybox-static: sh, httpd, nc...) and the pause image. The cluster must be
#                 created with it (the API server then calls kubelets with a client certificate).
#                 One real node per machine.
#   --real-node-name NODE  its Node name (default NAME-real-0), labelled type=real,
#                 topology.kubernetes.io/zone=z1, rack=r1.
#   --name NAME   cluster name (default dromos); several clusters can run side by side.
#   --disable-qps-limits  lift the client rate limits of the control-plane components
#                 (what the bind benchmark uses, so kube-scheduler is not throttled).
# Pods follow the lifecycle in stages.yaml (no container runs; environment variables of a
# pod script its "process"); `kubectl logs` of a task container shows sim-output.log.
#
# Running it again for a cluster that is up only adds missing nodes. The last line printed is
# KUBECONFIG=<path>; `kind-cluster/offline/down.sh [--name NAME]` stops and removes it.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${DROMOS_K8S_CACHE:-$HOME/.cache/dromos/k8s}
BIN=$CACHE/bin
NAME=dromos
NODES=3
REAL=0
REAL_NODE=""
CPU=8
MEMORY=32Gi
PODS=110
QPS=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) NODES=$2; shift 2 ;;
    --real-nodes) REAL=$2; shift 2 ;;
    --real-node-name) REAL_NODE=$2; shift 2 ;;
    --name) NAME=$2; shift 2 ;;
    --cpu) CPU=$2; shift 2 ;;
    --memory) MEMORY=$2; shift 2 ;;
    --pods) PODS=$2; shift 2 ;;
    --disable-qps-limits) QPS="disableQPSLimits: true"; shift ;;
    -h|--help) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "up.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$NODES" =~ ^[0-9]+$ ]] || { echo "up.sh: --nodes wants a number" >&2; exit 2; }
[[ "$REAL" == 0 || "$REAL" == 1 ]] || { echo "up.sh: --real-nodes is 0 or 1 (one per machine)" >&2; exit 2; }
REAL_NODE=${REAL_NODE:-$NAME-real-0}
log() { echo "[up] $*" >&2; }

if (( REAL )); then bash "$HERE/build.sh" --node >&2; else bash "$HERE/build.sh" >&2; fi

# kwokctl keeps each cluster under $KWOK_WORKDIR/clusters/<name> (default ~/.kwok).
WORKDIR=${KWOK_WORKDIR:-$HOME/.kwok}
CLUSTER_DIR=$WORKDIR/clusters/$NAME
KUBECONFIG_FILE=$CLUSTER_DIR/kubeconfig.yaml
export PATH="$BIN:$PATH"

kubectl_() { kubectl --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# A real node's kubelet only accepts the API server with a client certificate: such a
# cluster is created with the flags for that (and its own Service range, see real-node.sh).
SERVICE_CIDR=${DROMOS_REAL_SERVICE_CIDR:-10.234.0.0/24}
real_ready_cluster() { grep -q kubelet-client-certificate "$CLUSTER_DIR/kwok.yaml" 2>/dev/null; }

# answers: the API server is ready (asked three times: a loaded machine can miss one answer,
# and a cluster that "does not answer" is recreated under whoever uses it).
answers() {
  local _
  for _ in 1 2 3; do
    kubectl_ get --raw /readyz --request-timeout=10s >/dev/null 2>&1 && return 0
    sleep 2
  done
  return 1
}
if "$BIN/kwokctl" get clusters 2>/dev/null | grep -qx -- "$NAME" && answers; then
  log "cluster $NAME is already up"
  if (( REAL )) && ! real_ready_cluster; then
    echo "up.sh: cluster $NAME was created without --real-nodes; down.sh --name $NAME first" >&2
    exit 1
  fi
else
  if "$BIN/kwokctl" get clusters 2>/dev/null | grep -qx -- "$NAME"; then
    log "cluster $NAME exists but does not answer; recreating it"
    "$BIN/kwokctl" delete cluster --name "$NAME" >&2 || true
  fi
  # A real node left from an earlier cluster of this name belongs to that cluster: remove it.
  bash "$HERE/real-node.sh" down "$NAME"
  config=$(mktemp "${TMPDIR:-/tmp}/dromos-kwokctl.XXXXXX.yaml")
  trap 'rm -f "$config"' EXIT
  {
    echo "kind: KwokctlConfiguration"
    echo "apiVersion: config.kwok.x-k8s.io/v1alpha1"
    echo "options:"
    echo "  runtime: binary"
    echo "  bindAddress: 127.0.0.1"
    [[ -n "$QPS" ]] && echo "  $QPS"
    if (( REAL )); then
      # kwokctl takes free ports counting down from 32767 and a stopped cluster keeps its
      # own: a cluster made and removed as often as a real-node one would take the ports of
      # another that is stopped for a moment. Its ports come from a range of their own.
      read -r p1 p2 p3 p4 p5 p6 < <(python3 - "${DROMOS_REAL_PORTS:-31900-31999}" <<'PY'
import socket, sys
lo, hi = map(int, sys.argv[1].split("-"))
found = []
for port in range(lo, hi + 1):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    found.append(port)
    if len(found) == 6:
        break
print(*found)
PY
)
      [[ -n "$p6" ]] || { echo "up.sh: no 6 free ports in ${DROMOS_REAL_PORTS:-31900-31999}" >&2; exit 1; }
      echo "  kubeApiserverPort: $p1"
      echo "  etcdPort: $p2"
      echo "  etcdPeerPort: $p3"
      echo "  kubeControllerManagerPort: $p4"
      echo "  kubeSchedulerPort: $p5"
      echo "  kwokControllerPort: $p6"
      echo "componentsPatches:"
      echo "- name: kube-apiserver"
      echo "  extraArgs:"
      echo "  - {key: kubelet-client-certificate, value: $CLUSTER_DIR/pki/admin.crt}"
      echo "  - {key: kubelet-client-key, value: $CLUSTER_DIR/pki/admin.key}"
      echo "  - {key: service-cluster-ip-range, value: $SERVICE_CIDR}"
      # The real node's kubelet serves on its InternalIP; KWOK nodes have only a Hostname.
      echo "  - {key: kubelet-preferred-address-types, value: 'InternalIP,Hostname'}"
      # kwokctl's kwok-controller manages every node; leave the real one to its kubelet.
      echo "- name: kwok-controller"
      echo "  extraArgs:"
      echo "  - {key: manage-all-nodes, value: 'false'}"
      echo "  - {key: manage-nodes-with-annotation-selector, value: kwok.x-k8s.io/node=fake}"
    fi
    echo "---"
    cat "$HERE/stages.yaml"
    # `kubectl logs` of any task container answers with sim-output.log (CRI log format):
    # no container runs, but the API server -> kubelet path for logs is the real one.
    echo "---"
    echo "kind: ClusterLogs"
    echo "apiVersion: kwok.x-k8s.io/v1alpha1"
    echo "metadata: {name: dromos-sim-output}"
    echo "spec:"
    echo "  logs:"
    echo "  - containers: [task]"
    echo "    logsFile: $HERE/sim-output.log"
  } >"$config"
  log "creating cluster $NAME (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok)"
  started=$(date +%s)
  "$BIN/kwokctl" create cluster --name "$NAME" --config "$config" --runtime binary \
    --kubeconfig "" \
    --kube-apiserver-binary "$BIN/kube-apiserver" \
    --kube-controller-manager-binary "$BIN/kube-controller-manager" \
    --kube-scheduler-binary "$BIN/kube-scheduler" \
    --kwok-controller-binary "$BIN/kwok" \
    --etcd-binary "$BIN/etcd" \
    --wait 120s >&2
  log "control plane up in $(( $(date +%s) - started ))s"
fi

# Nodes: created here (not with `kwokctl scale`) so they carry Dromos's labels and capacity.
# Only missing ones are created, in parallel batches (one kubectl per 100 nodes).
node_yaml() {
  local i=$1 name=dromos-node-$1
  cat <<NODE
---
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: $name
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    topology.kubernetes.io/zone: z$(( i % 3 + 1 ))
    rack: r$(( i % 6 + 1 ))
    type: kwok
status:
  allocatable: {cpu: "$CPU", memory: "$MEMORY", pods: "$PODS", ephemeral-storage: 100Gi}
  capacity: {cpu: "$CPU", memory: "$MEMORY", pods: "$PODS", ephemeral-storage: 100Gi}
NODE
}
declare -A existing=()
while read -r name; do
  [[ -n "$name" ]] && existing[$name]=1
done < <(kubectl_ get nodes -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
batches=$(mktemp -d "${TMPDIR:-/tmp}/dromos-nodes.XXXXXX")
missing=0
for (( i = 0; i < NODES; i++ )); do
  [[ -n "${existing[dromos-node-$i]:-}" ]] && continue
  node_yaml "$i" >>"$batches/batch-$(( missing / 100 )).yaml"
  missing=$(( missing + 1 ))
done
if (( missing > 0 )); then
  log "creating $missing node(s)"
  find "$batches" -name 'batch-*.yaml' -print0 |
    xargs -0 -P 4 -I{} kubectl --kubeconfig "$KUBECONFIG_FILE" create -f {} -o name >/dev/null
fi
rm -rf "$batches"
if (( REAL )); then
  log "starting real node $REAL_NODE (containerd, kubelet, kube-proxy; see real-node.sh)"
  bash "$HERE/real-node.sh" up "$NAME" "$REAL_NODE" "$CLUSTER_DIR"
fi
# `kubectl wait --all` asks node by node; count Ready conditions in one list instead.
deadline=$(( $(date +%s) + 300 ))
while :; do
  ready=$(kubectl_ get nodes -o jsonpath='{range .items[*]}{range .status.conditions[?(@.type=="Ready")]}{.status}{"\n"}{end}{end}' | grep -c True || true)
  total=$(kubectl_ get nodes --no-headers 2>/dev/null | wc -l)
  (( ready >= total && total >= NODES + REAL )) && break
  if (( $(date +%s) > deadline )); then
    echo "up.sh: only $ready of $total nodes became Ready" >&2; exit 1
  fi
  sleep 1
done
log "$total node(s) ready"
echo "KUBECONFIG=$KUBECONFIG_FILE"
