#!/usr/bin/env bash
# Make a Docker Engine and Dromos's test images available on this (Debian) machine.
#
#   tests/support/docker-setup.sh        # idempotent; a few seconds when all is in place
#
# 1. No dockerd?                 apt-get install docker.io (Debian's package).
# 2. No engine answering?        start dockerd in the background (log: /var/log/dromos-dockerd.log)
#                                and wait until `docker info` answers.
# 3. No dromos-test/busybox:1?   build it: a root filesystem holding busybox-static, every applet
#                                a relative symlink to it, imported with `docker import`.
#                                Nothing is pulled from any registry: the only download is the
#                                busybox-static .deb, through apt.
#
# Needs root (apt, dockerd). Prints one line per step it had to take; exits non-zero with the
# reason on stderr when Docker cannot be made available. The test fixtures
# (tests/runtimes/docker_support.py) and CI (.ci/run) both call it; running it by hand is fine.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

BUSYBOX_IMAGE=dromos-test/busybox:1
DOCKERD_LOG=/var/log/dromos-dockerd.log
WAIT_SECONDS=60

say() { echo "docker-setup: $*"; }
die() { echo "docker-setup: $*" >&2; exit 1; }

apt_updated=0
apt_update() {
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
}

# --- 1. the engine's binaries -----------------------------------------------------------------
if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "dockerd is not installed and installing it needs root"
  command -v apt-get >/dev/null 2>&1 || die "dockerd is not installed and there is no apt-get"
  say "installing docker.io"
  apt_update
  apt-get install -y -qq docker.io >/dev/null
fi

# --- 2. a running engine ----------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  case "${DOCKER_HOST:-unix:///var/run/docker.sock}" in
    unix:///var/run/docker.sock) ;;
    *) die "the engine at DOCKER_HOST=$DOCKER_HOST does not answer (not starting a local one)" ;;
  esac
  [ "$(id -u)" = 0 ] || die "no Docker Engine answers and starting dockerd needs root"
  if [ -s /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    # One is starting up (or stuck): wait for it rather than start a second one.
    dockerd_pid=$(cat /var/run/docker.pid)
    say "waiting for the dockerd already running (pid $dockerd_pid)"
  else
    say "starting dockerd (log: $DOCKERD_LOG)"
    # setsid: dockerd must outlive this script and the test session that ran it (the images
    # and any adopted containers live in it). A background job of a script is not a process
    # group leader, so setsid execs dockerd itself and $! is dockerd's pid.
    setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
    dockerd_pid=$!
  fi
  for _ in $(seq $((WAIT_SECONDS * 2))); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || break   # it gave up: no point in waiting
    sleep 0.5
  done
  docker info >/dev/null 2>&1 ||
    die "dockerd did not answer; last lines of $DOCKERD_LOG: $(tail -3 "$DOCKERD_LOG" 2>/dev/null)"
fi

# --- 3. the test images -----------------------------------------------------------------------
if ! docker image inspect "$BUSYBOX_IMAGE" >/dev/null 2>&1; then
  say "building $BUSYBOX_IMAGE"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # The static busybox from Debian's busybox-static package, unpacked rather than installed:
  # installing it would replace the host's (dynamically linked) busybox package.
  (cd "$work" && { apt-get download -qq busybox-static 2>/dev/null ||
                   { apt_update && apt-get download -qq busybox-static 2>/dev/null; }; }) ||
    die "cannot download busybox-static with apt-get"
  dpkg-deb -x "$work"/busybox-static_*.deb "$work/pkg"
  bb="$work/pkg/bin/busybox"
  [ -x "$bb" ] || die "busybox-static did not contain bin/busybox"
  root="$work/rootfs"
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,www,proc,sys,dev}
  chmod 1777 "$root/tmp"
  cp "$bb" "$root/bin/busybox"
  # Each applet a RELATIVE symlink to /bin/busybox at its usual place (usr/bin/env ->
  # ../../bin/busybox), so the links stay right whatever directory the rootfs is unpacked in.
  "$bb" --list-full | while read -r applet; do
    [ -e "$root/$applet" ] && continue
    dir=$(dirname "$applet")
    if [ "$dir" = bin ]; then
      target=busybox
    else
      target="$(echo "$dir" | sed -e 's|[^/][^/]*|..|g')/bin/busybox"
    fi
    ln -s "$target" "$root/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
    >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  tar -C "$root" --numeric-owner --owner=0 --group=0 -c . |
    docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["/bin/sh"]' \
      --message "busybox-static rootfs for Dromos's tests" \
      - "$BUSYBOX_IMAGE" >/dev/null
  docker run --rm "$BUSYBOX_IMAGE" /bin/sh -c 'test "$(echo ok)" = ok' ||
    die "$BUSYBOX_IMAGE was built but cannot run a shell"
fi
