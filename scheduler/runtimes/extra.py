"""What container runtimes read from :attr:`LaunchSpec.extra` (Marathon or Chronos JSON):
the one place that knows its shape, so the runtimes do not each parse it again."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler.runtimes.base import LaunchSpec


def container_section(spec: LaunchSpec) -> Mapping[str, Any]:
    """The app's ``container`` object (``{}`` without one)."""
    container = spec.extra.get("container") or {}
    return container if isinstance(container, Mapping) else {}


def docker_section(spec: LaunchSpec) -> Mapping[str, Any]:
    """The image options: Marathon's ``container.docker``, or the container object itself in
    Chronos's shape (``{"type": "DOCKER", "image", "forcePullImage", "network", ...}``);
    ``{}`` when there is neither."""
    container = container_section(spec)
    section = container.get("docker")
    if isinstance(section, Mapping):
        return section
    return container if "image" in container else {}
