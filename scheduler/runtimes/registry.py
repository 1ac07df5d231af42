"""The runtimes ``dromos serve --runtime NAME`` can build, by name.

A new runtime is one module (the class implementing :class:`~scheduler.runtimes.base.Runtime`)
plus one :func:`register` call below: the CLI's ``--runtime`` choices, the composition root
and the built-in balancer's "tasks bind ports on this machine" rule all read this registry.

Factories import their runtime module when called, not when registered: the Docker and
Kubernetes clients are heavy, and a local-runtime Dromos should not pay for them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from scheduler.config import ConfigError, ServeConfig
from scheduler.runtimes.base import Runtime

RuntimeFactory = Callable[[ServeConfig], Runtime]
"""Builds a runtime from the server's configuration. Raises :class:`ConfigError` (with a
message for the user) when the configuration cannot work for it."""


@dataclass(frozen=True)
class RuntimeEntry:
    name: str
    factory: RuntimeFactory
    local_ports: bool
    """Tasks bind their host ports on the machine Dromos runs on, so the built-in balancer
    (which listens here too) can reach them and must avoid their port ranges."""


_entries: dict[str, RuntimeEntry] = {}


def register(name: str, factory: RuntimeFactory, *, local_ports: bool = False) -> None:
    """Make ``name`` a runtime choice. Registering a name again replaces its factory."""
    _entries[name] = RuntimeEntry(name, factory, local_ports)


def names() -> list[str]:
    """Registered runtime names, in registration order (the first is the default)."""
    return list(_entries)


def entry(name: str) -> RuntimeEntry:
    """The registration of ``name``. Raises :class:`ConfigError` for an unknown name."""
    found = _entries.get(name)
    if found is None:
        raise ConfigError(f"unknown runtime {name!r}; one of {', '.join(names())}")
    return found


def create(name: str, config: ServeConfig) -> Runtime:
    """Build runtime ``name`` for ``config``. Raises :class:`ConfigError`."""
    try:
        return entry(name).factory(config)
    except ValueError as e:
        # Constructors reject bad settings (an unusable node list, say) with ValueError.
        raise ConfigError(str(e)) from None


def _local(config: ServeConfig) -> Runtime:
    from scheduler.runtimes.local import LocalRuntime
    from scheduler.runtimes.sandbox_gc import SandboxGcPolicy

    gc = SandboxGcPolicy(config.sandbox_gc_delay, config.sandbox_keep)
    return LocalRuntime(config.state_dir, list(config.nodes) if config.nodes else None, gc)


def _docker(config: ServeConfig) -> Runtime:
    from scheduler.runtimes.docker import DockerRuntime

    # Connects lazily: Dromos starts (and serves its API) while the engine is down.
    return DockerRuntime(config.state_dir, list(config.nodes) if config.nodes else None)


def _kubernetes(config: ServeConfig) -> Runtime:
    from scheduler.runtimes.kubernetes import KubernetesRuntime
    from scheduler.runtimes.kubernetes.runtime import NamespaceMissing

    # Connects lazily, like docker. Nodes come from the cluster; a --nodes file only limits
    # placement to the hostnames it lists (capacity and labels are the cluster's).
    hosts = [n.hostname for n in config.nodes] if config.nodes else None
    runtime = KubernetesRuntime(config.state_dir, hosts=hosts)
    try:
        # Like the namespace, read from the environment (set by --create-namespace).
        runtime.check_namespace(create=os.environ.get("DROMOS_KUBE_CREATE_NAMESPACE") == "1")
    except NamespaceMissing as e:
        runtime.close()
        raise ConfigError(str(e)) from None
    return runtime


register("local", _local, local_ports=True)
register("docker", _docker, local_ports=True)
register("kubernetes", _kubernetes)
