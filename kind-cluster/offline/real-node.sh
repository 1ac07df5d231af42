#!/usr/bin/env bash
# A real Kubernetes node for an offline cluster (called by up.sh --real-nodes 1 and down.sh):
# containerd + runc (Debian's packages) with Debian's CNI plugins (bridge, host-local,
# loopback, portmap), a kubelet and a kube-proxy built by build.sh --node, and two images built
# locally (node-images.sh) and imported into containerd's k8s.io namespace. Needs root.
#
# Usage: real-node.sh up   NAME NODE_NAME CLUSTER_DIR   (CLUSTER_DIR: kwokctl's, with
#                                                         kubeconfig.yaml and pki/)
#        real-node.sh down NAME
#
# What it starts, and down removes again:
#   processes  containerd (own root, state and socket, never the machine's or Docker's),
#              kubelet, kube-proxy; pids in $RUN_DIR/*.pid, logs in $STATE_DIR/logs/
#   network    bridge $DROMOS_REAL_BRIDGE (default dromos-br0) holding the gateway of the pod
#              range $DROMOS_REAL_POD_CIDR (default 10.233.0.0/24), a route of the Service range
#              $DROMOS_REAL_SERVICE_CIDR (default 10.234.0.0/24) to it (so a ClusterIP never
#              leaves the machine, even before kube-proxy has a rule for it), one veth and
#              network namespace per pod, kube-proxy's KUBE-* iptables chains, and two FORWARD
#              rules letting pods of the bridge reach each other (Docker's FORWARD policy is DROP)
#   files      $STATE_DIR = /var/lib/dromos-k8s/NAME (containerd root, kubelet root, pod logs,
#              IPAM), $RUN_DIR = /run/dromos-k8s/NAME (containerd state and socket, pids)
#   cgroups    kubepods/ under every cgroup v1 hierarchy (or the v2 root)
# Pods get no default route and the bridge does no masquerading: pod traffic stays on this
# machine. kube-proxy's chains are machine-wide, so one real node runs per machine at a time
# (a second `up` for another cluster is refused).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${DROMOS_K8S_CACHE:-$HOME/.cache/dromos/k8s}
BIN=$CACHE/bin
BRIDGE=${DROMOS_REAL_BRIDGE:-dromos-br0}
POD_CIDR=${DROMOS_REAL_POD_CIDR:-10.233.0.0/24}
SERVICE_CIDR=${DROMOS_REAL_SERVICE_CIDR:-10.234.0.0/24}
GATEWAY=${POD_CIDR%.*}.1
PREFIX=${POD_CIDR#*/}
OWNER_FILE=/run/dromos-k8s/real-node.owner
PAUSE_IMAGE=dromos.local/pause:1
log() { echo "[real-node] $*" >&2; }
die() { echo "real-node.sh: $*" >&2; exit 1; }

cmd=${1:-}; NAME=${2:-}
[[ "$cmd" == up || "$cmd" == down ]] && [[ -n "$NAME" ]] ||
  die "usage: real-node.sh up NAME NODE_NAME CLUSTER_DIR | real-node.sh down NAME"
STATE_DIR=/var/lib/dromos-k8s/$NAME
RUN_DIR=/run/dromos-k8s/$NAME
SOCK=$RUN_DIR/containerd.sock
ctr_() { ctr --address "$SOCK" --namespace k8s.io "$@"; }

pid_alive() { [[ -s "$RUN_DIR/$1.pid" ]] && kill -0 "$(cat "$RUN_DIR/$1.pid")" 2>/dev/null; }

# start NAME COMMAND...: run it in its own session, outliving this script; log and pid kept.
start() {
  local name=$1; shift
  if pid_alive "$name"; then log "$name already running (pid $(cat "$RUN_DIR/$name.pid"))"; return; fi
  setsid "$@" >>"$STATE_DIR/logs/$name.log" 2>&1 </dev/null 8>&- &
  echo $! >"$RUN_DIR/$name.pid"
  log "$name started (pid $!, log $STATE_DIR/logs/$name.log)"
}

# stop NAME [SECONDS]: TERM, then KILL after SECONDS (default 10); waits until it is gone.
stop() {
  local name=$1 wait=${2:-10} pid
  [[ -s "$RUN_DIR/$name.pid" ]] || return 0
  pid=$(cat "$RUN_DIR/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq $(( wait * 10 ))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$RUN_DIR/$name.pid"
}

free_port() {
  python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$1"
}

# --- up ----------------------------------------------------------------------------------------

up() {
  local node=${3:?NODE_NAME} cluster_dir=${4:?CLUSTER_DIR}
  [[ $(id -u) == 0 ]] || die "a real node needs root (containerd, mounts, network namespaces, iptables)"
  local c
  for c in containerd containerd-shim-runc-v2 runc ctr iptables ip; do
    command -v "$c" >/dev/null || die "$c is missing (apt-get install containerd runc iptables iproute2)"
  done
  for c in bridge host-local loopback portmap; do
    [[ -x /usr/lib/cni/$c ]] || die "CNI plugin /usr/lib/cni/$c is missing (apt-get install containernetworking-plugins)"
  done
  [[ -x "$BIN/kubelet" && -x "$BIN/kube-proxy" ]] || die "kubelet/kube-proxy not built (build.sh --node)"
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null ||
    die "the kernel has no overlay filesystem (containerd's overlayfs snapshotter needs it)"

  mkdir -p /run/dromos-k8s
  exec 8>/run/dromos-k8s/real-node.lock
  flock 8
  if [[ -s "$OWNER_FILE" && "$(cat "$OWNER_FILE")" != "$NAME" ]]; then
    local other; other=$(cat "$OWNER_FILE")
    if [[ -d /run/dromos-k8s/$other ]]; then
      die "cluster $other already has this machine's real node (kube-proxy's iptables chains are machine-wide); down.sh --name $other first"
    fi
  fi
  echo "$NAME" >"$OWNER_FILE"
  mkdir -p "$STATE_DIR"/{logs,kubelet,pod-logs,cni/net.d,cni/ipam,images,opt,pki} "$RUN_DIR"

  # Kernel settings pods and kube-proxy rely on: forwarding between the bridge's ports, and
  # bridged traffic seen by iptables (kube-proxy's rules for pod -> Service -> pod).
  sysctl -qw net.ipv4.ip_forward=1
  if [[ ! -e /proc/sys/net/bridge/bridge-nf-call-iptables ]]; then
    modprobe br_netfilter 2>/dev/null || log "no br_netfilter: pods cannot reach Services (the host can)"
  fi
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] && sysctl -qw net.bridge.bridge-nf-call-iptables=1

  # The bridge, made here (the CNI plugin would make it at the first pod) so the kubelet can
  # serve on its address from the start: the node's InternalIP, reachable only from here.
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  ip addr replace "$GATEWAY/$PREFIX" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  ip route replace "$SERVICE_CIDR" dev "$BRIDGE" src "$GATEWAY"
  iptables -C FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT -m comment --comment dromos-real-node 2>/dev/null ||
    iptables -I FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT -m comment --comment dromos-real-node

  cat >"$STATE_DIR/cni/net.d/10-dromos.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "dromos-$NAME",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false,
     "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$STATE_DIR/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$GATEWAY"}]],
              "routes": [{"dst": "$SERVICE_CIDR"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON

  # Can this process lower its oom_score_adj (CAP_SYS_RESOURCE)? Try in a child.
  local RESTRICT_OOM=false
  sh -c 'echo -1 >/proc/self/oom_score_adj' 2>/dev/null || RESTRICT_OOM=true
  pid_alive containerd || cat >"$STATE_DIR/containerd.toml" <<TOML
version = 2
root = "$STATE_DIR/containerd"
state = "$RUN_DIR/containerd"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$STATE_DIR/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$PAUSE_IMAGE"
    # The kubelet asks for oom_score_adj -998 (sandboxes) and -997 (Guaranteed pods); lowering
    # it needs CAP_SYS_RESOURCE, which some machines (this CI VM) do not grant even to root:
    # runc then fails every sandbox ("can't get final child's PID from pipe"). Keep pods at or
    # above containerd's own score instead.
    restrict_oom_score_adj = $RESTRICT_OOM
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$STATE_DIR/cni/net.d"
      max_conf_num = 1
TOML
  start containerd containerd --config "$STATE_DIR/containerd.toml"
  for _ in $(seq 100); do ctr_ version >/dev/null 2>&1 && break; sleep 0.1; done
  ctr_ version >/dev/null 2>&1 || die "containerd did not answer; see $STATE_DIR/logs/containerd.log"

  bash "$HERE/node-images.sh" "$CACHE/images"
  local ref file
  for ref in "$PAUSE_IMAGE:pause" "docker.io/dromos-test/busybox:1:busybox"; do
    file=${ref##*:}; ref=${ref%:*}
    if ! ctr_ images ls -q | grep -qx -- "$ref"; then
      ctr_ images import --snapshotter overlayfs "$CACHE/images/$file.tar" >/dev/null
      log "imported $ref into containerd's k8s.io namespace"
    fi
  done

  local kubeconfig=$STATE_DIR/kubeconfig.yaml
  if ! cmp -s "$cluster_dir/kubeconfig.yaml" "$kubeconfig"; then
    # A new control plane (new CA, maybe new port): a kubelet or kube-proxy still running
    # would keep talking to the old one.
    stop kubelet 20
    stop kube-proxy
    cp "$cluster_dir/kubeconfig.yaml" "$kubeconfig"
  fi
  # Configurations are written only for a component about to start: kube-proxy exits when
  # its file changes, and both keep the ports they were started with.
  local port; port=$(free_port "$GATEWAY")
  pid_alive kubelet || cat >"$STATE_DIR/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $GATEWAY
port: $port
readOnlyPort: 0
healthzPort: 0
# Only the API server (with the cluster CA's client certificate) may use the kubelet's API.
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $cluster_dir/pki/ca.crt}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
podLogsDirectory: $STATE_DIR/pod-logs
# Images come from node-images.sh, never from a registry: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# A shared CI disk must not evict test pods.
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
rotateCertificates: false
serializeImagePulls: false
YAML
  local labels="type=real,topology.kubernetes.io/zone=${DROMOS_REAL_ZONE:-z1},rack=${DROMOS_REAL_RACK:-r1}"
  start kubelet "$BIN/kubelet" --config "$STATE_DIR/kubelet.yaml" --kubeconfig "$kubeconfig" \
    --root-dir "$STATE_DIR/kubelet" --cert-dir "$STATE_DIR/pki" --hostname-override "$node" \
    --node-ip "$GATEWAY" --node-labels "$labels" --v 1

  local healthz metrics; healthz=$(free_port 127.0.0.1); metrics=$(free_port 127.0.0.1)
  pid_alive kube-proxy || cat >"$STATE_DIR/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $kubeconfig}
hostnameOverride: $node
mode: iptables
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:$healthz
metricsBindAddress: 127.0.0.1:$metrics
# NodePorts answer on the bridge's address only, never on the machine's network.
nodePortAddresses: ["$GATEWAY/32"]
iptables: {localhostNodePorts: false}
# Leave the machine's conntrack sysctls as they are.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
  start kube-proxy "$BIN/kube-proxy" --config "$STATE_DIR/kube-proxy.yaml" --v 1
  echo "$node" >"$RUN_DIR/node-name"
}

# --- down --------------------------------------------------------------------------------------

# our_netns: the network namespaces containerd made for pods of our bridge (an address of the
# pod range inside).
our_netns() {
  local ns
  for ns in /run/netns/cni-*; do
    [[ -e "$ns" ]] || continue
    ip netns exec "${ns##*/}" ip -4 -o addr show 2>/dev/null | grep -q " ${POD_CIDR%.*}\." && echo "$ns"
  done
  return 0
}

# unmount_under DIR: every mount below DIR, deepest first.
unmount_under() {
  local m
  findmnt -rn -o TARGET | awk -v d="$1/" 'index($0, d) == 1' | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

down() {
  if [[ ! -d "$RUN_DIR" && ! -d "$STATE_DIR" ]]; then return 0; fi
  [[ $(id -u) == 0 ]] || die "removing a real node needs root"
  log "removing the real node of $NAME"
  stop kubelet 20
  stop kube-proxy
  local netns; netns=$(our_netns)
  if pid_alive containerd; then
    # Every container's process, then the shims (found by our socket, no other containerd's).
    local id
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    sleep 0.5
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks rm -f "$id" >/dev/null 2>&1 || true; done
    for id in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers rm "$id" >/dev/null 2>&1 || true; done
  fi
  stop containerd
  local p
  for p in /proc/[0-9]*; do
    if { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q -- "-address $SOCK "; then
      kill -KILL "${p#/proc/}" 2>/dev/null || true
    fi
  done
  for p in $netns; do umount "$p" 2>/dev/null || umount -l "$p" 2>/dev/null || true; rm -f "$p"; done
  unmount_under "$STATE_DIR"
  unmount_under "$RUN_DIR"

  # Network: the pods' veths went with their namespaces; anything left on the bridge goes now.
  local link
  for link in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link delete "$link" 2>/dev/null || true
  done
  ip link delete "$BRIDGE" 2>/dev/null || true   # its address and the Service route with it
  while iptables -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT -m comment --comment dromos-real-node 2>/dev/null; do :; done
  if [[ -x "$BIN/kube-proxy" ]]; then
    "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  fi
  # What the kubelet itself adds (its canaries, KUBE-FIREWALL and its jumps, KUBE-MARK-MASQ,
  # the hint chain), left behind by kube-proxy --cleanup; one real node per machine, so
  # these are ours.
  local ipt table rule
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for table in filter nat mangle; do
      "$ipt" -t "$table" -S 2>/dev/null | grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j KUBE-(FIREWALL|MARK-MASQ)$' |
        while read -r rule; do eval "$ipt -t $table ${rule/-A/-D}" 2>/dev/null || true; done || true
      for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-PROXY-CANARY KUBE-IPTABLES-HINT KUBE-MARK-MASQ; do
        "$ipt" -t "$table" -F "$chain" 2>/dev/null && "$ipt" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
  # portmap's chains exist only if a pod ever asked for a hostPort.
  if iptables -t nat -S CNI-HOSTPORT-DNAT >/dev/null 2>&1; then
    iptables -t nat -D PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT 2>/dev/null || true
    iptables -t nat -D OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT 2>/dev/null || true
    local chain
    for chain in $(iptables -t nat -S | awk '$1 == "-N" && $2 ~ /^CNI-(HOSTPORT|DN-)/ {print $2}'); do
      iptables -t nat -F "$chain" 2>/dev/null || true
    done
    for chain in $(iptables -t nat -S | awk '$1 == "-N" && $2 ~ /^CNI-(HOSTPORT|DN-)/ {print $2}'); do
      iptables -t nat -X "$chain" 2>/dev/null || true
    done
  fi

  # The kubelet's cgroups (empty now that every container is gone), deepest first.
  local root
  for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/kubepods.slice /sys/fs/cgroup/kubepods; do
    [[ -d "$root" ]] && find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done

  if findmnt -rn -o TARGET | grep -q -e "^$STATE_DIR/" -e "^$RUN_DIR/"; then
    die "mounts under $STATE_DIR or $RUN_DIR survived; not deleting them"
  fi
  rm -rf "$STATE_DIR" "$RUN_DIR"
  if [[ -s "$OWNER_FILE" && "$(cat "$OWNER_FILE")" == "$NAME" ]]; then rm -f "$OWNER_FILE"; fi
  log "real node of $NAME removed"
}

case "$cmd" in
  up) up "$@" ;;
  down) down ;;
esac
