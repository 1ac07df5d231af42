"""Write a one-layer container image, from a root filesystem directory, as an archive that
``ctr images import`` (and ``docker load``) read: the ``docker save`` layout -- a
``manifest.json`` naming the config and the layer, the image config, and the layer tar.

Nothing is pulled from a registry: this is how the offline real node gets its pause image and
its test image (busybox-static from Debian) into containerd.

Usage::

    python3 image_archive.py ROOTFS REF OUT.tar [--entrypoint JSON] [--cmd JSON] [--env K=V]...

Entries are stored owned by root (uid/gid 0) with their modes, in name order, and with mtime 0,
so the same root filesystem always gives the same image id.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import platform
import tarfile
from pathlib import Path


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    return info


def layer_tar(rootfs: Path) -> bytes:
    """The root filesystem as an uncompressed tar, paths relative to it (``./bin/sh``)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(rootfs.rglob("*")):
            tar.add(path, arcname=path.relative_to(rootfs).as_posix(), recursive=False,
                    filter=_normalise)
    return buf.getvalue()


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def write_archive(rootfs: Path, ref: str, out: Path, *, entrypoint: list[str] | None,
                  cmd: list[str] | None, env: list[str]) -> str:
    """Write the archive; return the image id (the config's sha256)."""
    layer = layer_tar(rootfs)
    diff_id = hashlib.sha256(layer).hexdigest()
    config: dict[str, object] = {"Env": env}
    if entrypoint is not None:
        config["Entrypoint"] = entrypoint
    if cmd is not None:
        config["Cmd"] = cmd
    image = {
        "architecture": _arch(), "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": "1970-01-01T00:00:00Z",
                     "created_by": f"image_archive.py {rootfs.name}"}],
    }
    config_bytes = json.dumps(image, sort_keys=True).encode()
    image_id = hashlib.sha256(config_bytes).hexdigest()
    manifest = [{"Config": f"{image_id}.json", "RepoTags": [ref],
                 "Layers": [f"{diff_id}/layer.tar"]}]
    with tarfile.open(out, mode="w") as tar:
        for name, data in ((f"{image_id}.json", config_bytes),
                           (f"{diff_id}/layer.tar", layer),
                           ("manifest.json", json.dumps(manifest).encode())):
            info = _normalise(tarfile.TarInfo(name))
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return image_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rootfs", type=Path)
    parser.add_argument("ref", help="the image's name, e.g. dromos-test/busybox:1")
    parser.add_argument("out", type=Path)
    parser.add_argument("--entrypoint", type=json.loads, default=None)
    parser.add_argument("--cmd", type=json.loads, default=None)
    parser.add_argument("--env", action="append",
                        default=[])
    args = parser.parse_args()
    env = args.env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    image_id = write_archive(args.rootfs, args.ref, args.out, entrypoint=args.entrypoint,
                             cmd=args.cmd, env=env)
    print(f"sha256:{image_id}")


if __name__ == "__main__":
    main()
