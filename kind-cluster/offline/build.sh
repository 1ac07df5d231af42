#!/usr/bin/env bash
# Build the offline Kubernetes toolchain Dromos's tests and benchmarks run against:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, kwok and
# kwokctl, all compiled from published Go modules through the Go module proxy (no image
# registry is needed, none is reachable in CI). With --node, also kubelet and kube-proxy
# (what `up.sh --real-nodes` runs).
#
# Usage: kind-cluster/offline/build.sh [--node] [--print-go]
#   --print-go   print the Go version the modules to build need (e.g. 1.26.0) and exit.
#
# Contract:
#   * binaries land in  $DROMOS_K8S_CACHE/bin   (default ~/.cache/dromos/k8s/bin)
#   * generated wrapper modules live under $DROMOS_K8S_CACHE/src/<name>-<version>
#   * a binary that already exists and reports the wanted version is never rebuilt,
#     so a second run is a few `--version` calls;
#   * concurrent runs serialise on a lock file instead of racing each other;
#   * nothing here is ever committed: the wrapper go.mod files are a build recipe
#     generated at run time, the sources come from the module cache;
#   * the Go it needs is derived from the modules it builds: the highest `go` line of their
#     go.mod files (read from the module proxy). An older or missing Go is replaced by exactly
#     that toolchain (the golang.org/toolchain module, what GOTOOLCHAIN=auto would fetch),
#     checked against the checksum database and kept under $DROMOS_K8S_CACHE/go. When every
#     binary is cached no Go is needed at all.
#
# Versions can be overridden with DROMOS_K8S_VERSION, DROMOS_ETCD_VERSION,
# DROMOS_KWOK_VERSION (kwok v0.7.0 targets Kubernetes 1.33).
set -euo pipefail

CACHE=${DROMOS_K8S_CACHE:-$HOME/.cache/dromos/k8s}
K8S_VERSION=${DROMOS_K8S_VERSION:-v1.33.13}
ETCD_VERSION=${DROMOS_ETCD_VERSION:-v3.5.35}
KWOK_VERSION=${DROMOS_KWOK_VERSION:-v0.7.0}
BIN=$CACHE/bin
SRC=$CACHE/src

NODE=0
PRINT_GO=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --node) NODE=1; shift ;;
    --print-go) PRINT_GO=1; shift ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

# Never let the go command fetch another toolchain behind our back; the module proxy
# is only used for modules (and, below, for exactly the toolchain the modules ask for).
export GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false"
PROXY=${GOPROXY:-https://proxy.golang.org}; PROXY=${PROXY%%[,|]*}
if [[ "$PROXY" == off || "$PROXY" == direct ]]; then PROXY=https://proxy.golang.org; fi

started=$(date +%s)
log() { printf '[build %4ss] %s\n' "$(( $(date +%s) - started ))" "$*"; }

K8S_MINOR=${K8S_VERSION#v1.}; K8S_MINOR=${K8S_MINOR%%.*}
K8S_CMDS="kube-apiserver kube-controller-manager kube-scheduler kubectl"
(( NODE )) && K8S_CMDS+=" kubelet kube-proxy"

# The modules built, as path@version: their go.mod files decide which Go is needed.
MODULES="k8s.io/kubernetes@$K8S_VERSION go.etcd.io/etcd/server/v3@$ETCD_VERSION sigs.k8s.io/kwok@$KWOK_VERSION"

# go_line MODULE@VERSION: the `go` directive of that module's go.mod, from the proxy.
go_line() {
  local path=${1%@*} version=${1#*@} escaped
  # The proxy protocol escapes capital letters as !lower.
  escaped=$(printf '%s' "$path" | sed 's/[A-Z]/!\L&/g')
  local text; text=$(curl -fsSL --retry 3 "$PROXY/$escaped/@v/$version.mod") || return 1
  awk '$1 == "go" { print $2; exit }' <<<"$text"
}

# go_needed: the highest `go` line among MODULES (as 1.26.0: a two-part line means .0).
go_needed() {
  local m v best=""
  for m in $MODULES; do
    v=$(go_line "$m") || { echo "build.sh: cannot read the go.mod of $m from $PROXY" >&2; return 1; }
    [[ -n "$v" ]] || { echo "build.sh: the go.mod of $m has no go line" >&2; return 1; }
    [[ "$v" =~ ^[0-9]+\.[0-9]+$ ]] && v+=.0
    best=$(printf '%s\n%s\n' "$best" "$v" | sed '/^$/d' | sort -V | tail -1)
  done
  echo "$best"
}

if (( PRINT_GO )); then go_needed; exit; fi

mkdir -p "$BIN" "$SRC"

# One build at a time: the test fixture and CI may both call us.
exec 9>"$CACHE/.build.lock"
if ! flock -n 9; then
  log "another build holds $CACHE/.build.lock; waiting for it"
  flock 9
fi

# version_of BINARY: what the cached binary says its version is ("" when it is missing).
version_of() {
  [[ -x "$BIN/$1" ]] || return 0
  case "$1" in
    kubectl) "$BIN/$1" version --client 2>&1 || true ;;
    *) "$BIN/$1" --version 2>&1 || true ;;
  esac
}
# has_version BINARY NEEDLE: the binary exists and its version output mentions NEEDLE.
has_version() { version_of "$1" | grep -qF -- "$2"; }

missing_k8s="" missing_etcd="" missing_kwok=""
for c in $K8S_CMDS; do has_version "$c" "$K8S_VERSION" || missing_k8s+=" $c"; done
has_version etcd "etcd Version: ${ETCD_VERSION#v}" || missing_etcd=" etcd"
for c in kwok kwokctl; do has_version "$c" "$KWOK_VERSION" || missing_kwok+=" $c"; done
if [[ -z "$missing_k8s$missing_etcd$missing_kwok" ]]; then
  log "kubernetes $K8S_VERSION ($K8S_CMDS), etcd $ETCD_VERSION, kwok $KWOK_VERSION: cached"
  log "all binaries ready in $BIN"
  exit 0
fi

# go_version_of GO: its version as 1.26.0 (go1.26 -> 1.26.0), or "" without one.
go_version_of() {
  local v; v=$("$1" env GOVERSION 2>/dev/null) || return 0
  v=${v#go}; v=${v%% *}
  [[ "$v" =~ ^[0-9]+\.[0-9]+$ ]] && v+=.0
  echo "$v"
}
# at_least HAVE NEED: version HAVE >= NEED.
at_least() { [[ -n "$1" && "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1)" == "$2" ]]; }

GO_NEED=$(go_needed)
have=""
command -v go >/dev/null && have=$(go_version_of go)
if ! at_least "$have" "$GO_NEED"; then
  arch=$(uname -m); case "$arch" in x86_64) arch=amd64 ;; aarch64|arm64) arch=arm64 ;; esac
  # Toolchain names: go1.21.0 and later keep the .0; older lines are named go1.N.
  tc=go$GO_NEED; [[ "$GO_NEED" =~ ^1\.([0-9]+)\.0$ ]] && (( BASH_REMATCH[1] < 21 )) && tc=go${GO_NEED%.0}
  mod=golang.org/toolchain@v0.0.1-$tc.linux-$arch
  toolchain=$CACHE/go/$mod
  if [[ ! -x "$toolchain/bin/go" ]]; then
    log "the modules to build need Go >= $GO_NEED (machine: ${have:-no Go}); fetching $tc from the Go module proxy (~70 MB)"
    mkdir -p "$CACHE/go"
    zip=$CACHE/go/toolchain-$tc.zip
    curl -fsSL --retry 3 -o "$zip" "$PROXY/golang.org/toolchain/@v/v0.0.1-$tc.linux-$arch.zip"
    # The checksum database vouches for the zip (its h1: hash, as `go` itself would check).
    want=$(curl -fsSL --retry 3 "$PROXY/sumdb/sum.golang.org/lookup/$mod" |
      awk -v m="golang.org/toolchain" -v v="v0.0.1-$tc.linux-$arch" '$1 == m && $2 == v { print $3 }' || true)
    got=$(python3 - "$zip" <<'PY'
import base64, hashlib, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    lines = "".join(f"{hashlib.sha256(z.read(n)).hexdigest()}  {n}\n"
                    for n in sorted(z.namelist()) if not n.endswith("/"))
print("h1:" + base64.b64encode(hashlib.sha256(lines.encode()).digest()).decode())
PY
)
    if [[ -z "$want" || "$want" != "$got" ]]; then
      rm -f "$zip"
      echo "build.sh: $tc from $PROXY does not match the checksum database (${want:-no entry} != $got)" >&2
      exit 2
    fi
    python3 -m zipfile -e "$zip" "$CACHE/go/"
    rm -f "$zip"
    chmod -R u+x "$toolchain/bin" "$toolchain/pkg/tool"
  fi
  export PATH="$toolchain/bin:$PATH"
  have=$(go_version_of go)
  at_least "$have" "$GO_NEED" || { echo "build.sh: no usable Go toolchain (>= $GO_NEED)" >&2; exit 2; }
fi

STAGING="api apiextensions-apiserver apimachinery apiserver cli-runtime client-go
  cloud-provider cluster-bootstrap code-generator component-base component-helpers
  controller-manager cri-api cri-client csi-translation-lib dynamic-resource-allocation
  endpointslice externaljwt kms kube-aggregator kube-controller-manager kube-proxy
  kube-scheduler kubectl kubelet metrics mount-utils pod-security-admission
  sample-apiserver sample-cli-plugin sample-controller"

build_kubernetes() {
  local missing=$missing_k8s c
  if [[ -z "$missing" ]]; then log "kubernetes $K8S_VERSION: cached ($K8S_CMDS)"; return; fi
  local dir=$SRC/kubernetes-$K8S_VERSION staging_ver="v0.${K8S_MINOR}.${K8S_VERSION##*.}"
  log "kubernetes $K8S_VERSION: building$missing (wrapper module $dir)"
  mkdir -p "$dir/out"
  {
    echo "module dromos.local/k8sbuild"
    echo
    echo "go $GO_NEED"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    # k8s.io/kubernetes pins its staging modules to v0.0.0 with local-path replaces that
    # only apply inside its own repository, so the wrapper pins the published tags.
    for m in $STAGING; do echo "replace k8s.io/$m => k8s.io/$m $staging_ver"; done
  } >"$dir/go.mod"
  {
    echo "//go:build tools"
    echo
    echo "// Package tools only records which commands this wrapper module builds."
    echo "package tools"
    echo
    echo "import ("
    for c in $K8S_CMDS; do echo "	_ \"k8s.io/kubernetes/cmd/$c\""; done
    echo ")"
  } >"$dir/tools.go"
  log "kubernetes: resolving modules (go mod tidy)"
  (cd "$dir" && go mod tidy)
  local pkg="k8s.io/component-base/version"
  local ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$K8S_MINOR"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  # kubectl reads its version from client-go's copy of the variables.
  local cpkg="k8s.io/client-go/pkg/version"
  ldflags+=" -X $cpkg.gitVersion=$K8S_VERSION -X $cpkg.gitMajor=1 -X $cpkg.gitMinor=$K8S_MINOR"
  ldflags+=" -X $cpkg.gitTreeState=clean -X $cpkg.buildDate=1970-01-01T00:00:00Z"
  for c in $missing; do
    log "kubernetes: compiling $c (the first one is the slow one; later ones reuse the Go build cache)"
    (cd "$dir" && go build -trimpath -ldflags "$ldflags" -o "out/$c" "k8s.io/kubernetes/cmd/$c")
    mv -f "$dir/out/$c" "$BIN/$c"
    log "kubernetes: $c done ($(version_of "$c" | head -1))"
  done
}

build_etcd() {
  if [[ -z "$missing_etcd" ]]; then log "etcd $ETCD_VERSION: cached"; return; fi
  local dir=$SRC/etcd-$ETCD_VERSION
  log "etcd $ETCD_VERSION: building (wrapper module $dir)"
  mkdir -p "$dir/out"
  printf 'module dromos.local/etcdbuild\n\ngo %s\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$GO_NEED" "$ETCD_VERSION" >"$dir/go.mod"
  printf '//go:build tools\n\n// Package tools only records which command this wrapper module builds.\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"$dir/tools.go"
  (cd "$dir" && go mod tidy)
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o out/etcd go.etcd.io/etcd/server/v3)
  mv -f "$dir/out/etcd" "$BIN/etcd"
  log "etcd: done ($(version_of etcd | head -1))"
}

build_kwok() {
  local c missing=$missing_kwok
  if [[ -z "$missing" ]]; then log "kwok $KWOK_VERSION: cached (kwok kwokctl)"; return; fi
  log "kwok $KWOK_VERSION: building$missing"
  local ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=$K8S_VERSION"
  for c in $missing; do
    # kwok has no replace lines, so a plain `go install module@version` works.
    GOBIN="$BIN" go install -trimpath -ldflags "$ldflags" "sigs.k8s.io/kwok/cmd/$c@$KWOK_VERSION"
    log "kwok: $c done ($(version_of "$c" | head -1))"
  done
}

log "cache $CACHE, go $(go env GOVERSION) (modules need >= $GO_NEED), $(nproc) cores"
build_kubernetes
build_etcd
build_kwok
log "all binaries ready in $BIN"
