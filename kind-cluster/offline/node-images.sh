#!/usr/bin/env bash
# Build the real node's two images locally and write them as archives for `ctr images import`:
#   dromos.local/pause:1     the pod sandbox ("pause") image: busybox sh sleeping until TERM
#   dromos-test/busybox:1    the test image (the Kubernetes tests' default image): busybox-static
#                            with every applet (sh, httpd, nc, wget...) as a relative symlink
# Nothing is pulled from a registry: the only download is Debian's busybox-static .deb (apt).
#
# Usage: kind-cluster/offline/node-images.sh OUTDIR   (writes OUTDIR/pause.tar, OUTDIR/busybox.tar;
#        kept when already there)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:?usage: node-images.sh OUTDIR}
mkdir -p "$OUT"
[[ -s "$OUT/pause.tar" && -s "$OUT/busybox.tar" ]] && exit 0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Unpacked, not installed: installing busybox-static would replace the host's busybox.
(cd "$work" && { apt-get download -qq busybox-static 2>/dev/null ||
                 { apt-get update -qq && apt-get download -qq busybox-static; }; }) ||
  { echo "node-images.sh: cannot download busybox-static with apt-get" >&2; exit 1; }
dpkg-deb -x "$work"/busybox-static_*.deb "$work/pkg"
bb=$work/pkg/bin/busybox
[[ -x "$bb" ]] || { echo "node-images.sh: busybox-static holds no bin/busybox" >&2; exit 1; }

# busybox: the usual directories, each applet a RELATIVE symlink to /bin/busybox.
root=$work/busybox
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,www,proc,sys,dev}
chmod 1777 "$root/tmp"
cp "$bb" "$root/bin/busybox"
"$bb" --list-full | while read -r applet; do
  [[ -e "$root/$applet" ]] && continue
  dir=$(dirname "$applet")
  if [[ "$dir" == bin ]]; then target=busybox
  else target="$(echo "$dir" | sed -e 's|[^/][^/]*|..|g')/bin/busybox"; fi
  ln -s "$target" "$root/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
python3 "$HERE/image_archive.py" "$root" dromos-test/busybox:1 "$OUT/busybox.tar.part" \
  --cmd '["/bin/sh"]' >/dev/null
mv "$OUT/busybox.tar.part" "$OUT/busybox.tar"

# pause: PID 1 of every pod sandbox; holds the pod's namespaces, exits on TERM/INT, and reaps
# whatever is re-parented to it (a wait loop on a background sleep).
pause=$work/pause
mkdir -p "$pause"/{bin,proc,sys,dev,tmp}
cp "$bb" "$pause/bin/busybox"
ln -s busybox "$pause/bin/sh"
ln -s busybox "$pause/bin/sleep"
cat >"$pause/pause" <<'SH'
#!/bin/sh
trap 'exit 0' TERM INT
while :; do sleep 3600 & wait $!; done
SH
chmod 755 "$pause/pause"
python3 "$HERE/image_archive.py" "$pause" dromos.local/pause:1 "$OUT/pause.tar.part" \
  --entrypoint '["/pause"]' >/dev/null
mv "$OUT/pause.tar.part" "$OUT/pause.tar"
