#!/usr/bin/env bash
# Build the offline Kubernetes toolchain Dromos's tests and benchmarks run against:
# kube-apiserver, kube-controller-manager, kube-scheduler, etcd, kwok and kwokctl,
# all compiled from published Go modules through the Go module proxy (no image
# registry is needed, none is reachable in CI).
#
# Contract:
#   * binaries land in  $DROMOS_K8S_CACHE/bin   (default ~/.cache/dromos/k8s/bin)
#   * generated wrapper modules live under $DROMOS_K8S_CACHE/src/<name>-<version>
#   * a binary that already exists and reports the wanted version is never rebuilt,
#     so a second run is a few `--version` calls;
#   * concurrent runs serialise on a lock file instead of racing each other;
#   * nothing here is ever committed: the wrapper go.mod files are a build recipe
#     generated at run time, the sources come from the module cache.
#
# Versions can be overridden with DROMOS_K8S_VERSION, DROMOS_ETCD_VERSION,
# DROMOS_KWOK_VERSION (kwok v0.7.0 targets Kubernetes 1.33 and Go >= 1.24).
set -euo pipefail

CACHE=${DROMOS_K8S_CACHE:-$HOME/.cache/dromos/k8s}
K8S_VERSION=${DROMOS_K8S_VERSION:-v1.33.13}
ETCD_VERSION=${DROMOS_ETCD_VERSION:-v3.5.35}
KWOK_VERSION=${DROMOS_KWOK_VERSION:-v0.7.0}
BIN=$CACHE/bin
SRC=$CACHE/src

# Never let the go command fetch another toolchain behind our back; the module proxy
# is only used for modules.
export GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false"

started=$(date +%s)
log() { printf '[build %4ss] %s\n' "$(( $(date +%s) - started ))" "$*"; }

mkdir -p "$BIN" "$SRC"

# A Go toolchain >= 1.24 (Kubernetes 1.33 and kwok v0.7.0 need it). Without one, fetch the
# official toolchain module (golang.org/toolchain, what GOTOOLCHAIN=auto downloads) from the
# Go module proxy into the cache, once.
GO_FALLBACK=${DROMOS_GO_TOOLCHAIN:-go1.24.11}
go_ok() {
  command -v go >/dev/null || return 1
  local v; v=$(go env GOVERSION 2>/dev/null) || return 1
  v=${v#go}; local major=${v%%.*} rest=${v#*.}; local minor=${rest%%.*}
  (( major > 1 || (major == 1 && minor >= 24) ))
}
if ! go_ok; then
  arch=$(uname -m); case "$arch" in x86_64) arch=amd64 ;; aarch64|arm64) arch=arm64 ;; esac
  toolchain=$CACHE/go/golang.org/toolchain@v0.0.1-$GO_FALLBACK.linux-$arch
  if [[ ! -x "$toolchain/bin/go" ]]; then
    log "no Go >= 1.24 found; fetching $GO_FALLBACK from the Go module proxy"
    proxy=${GOPROXY:-https://proxy.golang.org}; proxy=${proxy%%[,|]*}
    if [[ "$proxy" == off || "$proxy" == direct ]]; then proxy=https://proxy.golang.org; fi
    mkdir -p "$CACHE/go"
    curl -fsSL -o "$CACHE/go/toolchain.zip" \
      "$proxy/golang.org/toolchain/@v/v0.0.1-$GO_FALLBACK.linux-$arch.zip"
    python3 -m zipfile -e "$CACHE/go/toolchain.zip" "$CACHE/go/"
    rm -f "$CACHE/go/toolchain.zip"
    chmod -R u+x "$toolchain/bin" "$toolchain/pkg/tool"
  fi
  export PATH="$toolchain/bin:$PATH"
  go_ok || { echo "build.sh: no usable Go toolchain (>= 1.24)" >&2; exit 2; }
fi

# One build at a time: the test fixture and CI may both call us.
exec 9>"$CACHE/.build.lock"
if ! flock -n 9; then
  log "another build holds $CACHE/.build.lock; waiting for it"
  flock 9
fi

# has_version BINARY NEEDLE: the binary exists and its --version output mentions NEEDLE.
has_version() {
  [[ -x "$BIN/$1" ]] && "$BIN/$1" --version 2>&1 | grep -qF -- "$2"
}

K8S_MINOR=${K8S_VERSION#v1.}; K8S_MINOR=${K8S_MINOR%%.*}
STAGING="api apiextensions-apiserver apimachinery apiserver cli-runtime client-go
  cloud-provider cluster-bootstrap code-generator component-base component-helpers
  controller-manager cri-api cri-client csi-translation-lib dynamic-resource-allocation
  endpointslice externaljwt kms kube-aggregator kube-controller-manager kube-proxy
  kube-scheduler kubectl kubelet metrics mount-utils pod-security-admission
  sample-apiserver sample-cli-plugin sample-controller"

build_kubernetes() {
  local cmds="kube-apiserver kube-controller-manager kube-scheduler" missing="" c
  for c in $cmds; do has_version "$c" "Kubernetes $K8S_VERSION" || missing+=" $c"; done
  if [[ -z "$missing" ]]; then log "kubernetes $K8S_VERSION: cached ($cmds)"; return; fi
  local dir=$SRC/kubernetes-$K8S_VERSION staging_ver="v0.${K8S_MINOR}.${K8S_VERSION##*.}"
  log "kubernetes $K8S_VERSION: building$missing (wrapper module $dir)"
  mkdir -p "$dir/out"
  {
    echo "module dromos.local/k8sbuild"
    echo
    echo "go 1.24.0"
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
    for c in $cmds; do echo "	_ \"k8s.io/kubernetes/cmd/$c\""; done
    echo ")"
  } >"$dir/tools.go"
  log "kubernetes: resolving modules (go mod tidy)"
  (cd "$dir" && go mod tidy)
  local pkg="k8s.io/component-base/version"
  local ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$K8S_MINOR"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  for c in $missing; do
    log "kubernetes: compiling $c (the first one is the slow one; later ones reuse the Go build cache)"
    (cd "$dir" && go build -trimpath -ldflags "$ldflags" -o "out/$c" "k8s.io/kubernetes/cmd/$c")
    mv -f "$dir/out/$c" "$BIN/$c"
    log "kubernetes: $c done ($("$BIN/$c" --version 2>&1 | head -1))"
  done
}

build_etcd() {
  if has_version etcd "etcd Version: ${ETCD_VERSION#v}"; then log "etcd $ETCD_VERSION: cached"; return; fi
  local dir=$SRC/etcd-$ETCD_VERSION
  log "etcd $ETCD_VERSION: building (wrapper module $dir)"
  mkdir -p "$dir/out"
  printf 'module dromos.local/etcdbuild\n\ngo 1.24.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >"$dir/go.mod"
  printf '//go:build tools\n\n// Package tools only records which command this wrapper module builds.\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"$dir/tools.go"
  (cd "$dir" && go mod tidy)
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o out/etcd go.etcd.io/etcd/server/v3)
  mv -f "$dir/out/etcd" "$BIN/etcd"
  log "etcd: done ($("$BIN/etcd" --version 2>&1 | head -1))"
}

build_kwok() {
  local c missing=""
  for c in kwok kwokctl; do has_version "$c" "$KWOK_VERSION" || missing+=" $c"; done
  if [[ -z "$missing" ]]; then log "kwok $KWOK_VERSION: cached (kwok kwokctl)"; return; fi
  log "kwok $KWOK_VERSION: building$missing"
  local ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=$K8S_VERSION"
  for c in $missing; do
    # kwok has no replace lines, so a plain `go install module@version` works.
    GOBIN="$BIN" go install -trimpath -ldflags "$ldflags" "sigs.k8s.io/kwok/cmd/$c@$KWOK_VERSION"
    log "kwok: $c done ($("$BIN/$c" --version 2>&1 | head -1))"
  done
}

log "cache $CACHE, go $(go env GOVERSION), $(nproc) cores"
build_kubernetes
build_etcd
build_kwok
log "all binaries ready in $BIN"
