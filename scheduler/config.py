"""Server configuration: what ``dromos serve`` was asked for, validated before anything starts."""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scheduler.model.node import Node, parse_nodes
from scheduler.model.validation import SpecError


class ConfigError(Exception):
    """The configuration cannot work; the message tells the user what to change."""


@dataclass(frozen=True)
class Credentials:
    """What clients must present: a token (``Authorization: token=<t>`` or Bearer), and/or
    HTTP Basic ``user:password``."""

    token: str | None = None
    basic: tuple[str, str] | None = None

    @property
    def configured(self) -> bool:
        return bool(self.token or self.basic)


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    state_dir: Path = Path(".dromos")
    runtime: str = "local"
    nodes: tuple[Node, ...] | None = None
    credentials: Credentials = Credentials()
    # Where the built-in balancer listens ("off": not at all), and the range service ports
    # are auto-assigned from (Marathon's local_port_min/max).
    service_bind: str = "127.0.0.1"
    service_ports: tuple[int, int] = (10000, 20000)
    # kubernetes runtime: where task health comes from (services/api_health.py); None: from
    # $DROMOS_KUBE_HEALTH, else auto.
    kube_health: str | None = None
    # Request bodies over this get 413 (the Kubernetes API server's 3 MiB by default).
    max_body_bytes: int = 3 * 1024 * 1024
    # Wait for the state directory's holder to exit instead of refusing to start.
    standby: bool = False
    # How feasible nodes are ranked: "binpack" (default), "balanced" or "spread".
    placement: str = "binpack"
    # Local runtime: ended tasks' sandboxes go this long after the end, and beyond the most
    # recent N per app (scheduler/runtimes/sandbox_gc.py).
    sandbox_gc_delay: float = 3600.0
    sandbox_keep: int = 5
    # Where state lives: "sqlite" (the state dir) or "kubernetes" (dromos.io objects; several
    # replicas elect a leader on a Lease). The address other replicas forward writes to.
    store: str = "sqlite"
    advertise: str | None = None
    lease_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_seconds: float = 2.0

    @property
    def address(self) -> str:
        """``host:port`` this Dromos is reached at (what /v2/leader names)."""
        return self.advertise or f"{self.host}:{self.port}"


MIN_TOKEN_LENGTH = 16
"""A token guarding a non-loopback address must be at least this long (and not blank)."""

MIN_BODY_LIMIT = 1024

_UNITS = {"": 1, "K": 1000, "KI": 1024, "M": 1000**2, "MI": 1024**2, "G": 1000**3,
          "GI": 1024**3}


def parse_body_limit(text: str) -> int:
    """``"3Mi"``/``"3M"``/``"3145728"`` → bytes (``M`` is read as MiB, as most users mean).
    Raises :class:`ConfigError` below :data:`MIN_BODY_LIMIT` or when unreadable."""
    raw = text.strip().upper().removesuffix("B")
    digits = raw.rstrip("KMGI")
    unit = raw[len(digits):]
    if unit in ("K", "M", "G"):
        unit += "I"
    try:
        value = int(digits) * _UNITS[unit]
    except (ValueError, KeyError):
        raise ConfigError(f"--max-body-bytes {text!r} must be a byte count such as 3145728 "
                          "or 3Mi") from None
    if value < MIN_BODY_LIMIT:
        raise ConfigError(f"--max-body-bytes must be at least {MIN_BODY_LIMIT} bytes")
    return value


def parse_port_range(text: str) -> tuple[int, int]:
    """``"10000-20000"`` → ``(10000, 20000)`` (inclusive). Raises :class:`ConfigError`."""
    first, sep, last = text.strip().partition("-")
    try:
        lo, hi = int(first), int(last if sep else first)
    except ValueError:
        raise ConfigError(f"port range {text!r} must look like 10000-20000") from None
    if not 1 <= lo <= hi <= 65535:
        raise ConfigError(f"port range {text!r} must satisfy 1 <= first <= last <= 65535")
    return lo, hi


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses; anything else is reachable by others."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_nodes(path: Path) -> list[Node]:
    """Read a JSON or YAML node list. Raises :class:`ConfigError` naming the bad field."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read nodes file {path}: {e.strerror}") from None
    data: Any
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"nodes file {path} is not valid JSON/YAML: {e}") from None
    try:
        return parse_nodes(data)
    except SpecError as e:
        lines = [f"  {p or '/'}: {'; '.join(errs)}" for p, errs in e.details]
        raise ConfigError(f"nodes file {path} is not valid:\n" + "\n".join(lines)) from None


def credentials_from(token: str | None, basic: str | None) -> Credentials:
    """Credentials from flags, falling back to DROMOS_AUTH_TOKEN / DROMOS_BASIC_AUTH."""
    token = token or os.environ.get("DROMOS_AUTH_TOKEN") or None
    basic = basic or os.environ.get("DROMOS_BASIC_AUTH") or None
    pair: tuple[str, str] | None = None
    if basic:
        user, sep, password = basic.partition(":")
        if not sep or not user or not password:
            raise ConfigError("basic credentials must look like user:password")
        pair = (user, password)
    return Credentials(token=token, basic=pair)


def check_exposure(host: str, credentials: Credentials) -> None:
    """Secure by default: refuse to listen beyond loopback without credentials."""
    if is_loopback(host):
        return
    if not credentials.configured:
        raise ConfigError(
            f"refusing to listen on {host} without credentials: anyone who can reach it "
            "could run commands on this machine. Set --auth-token (or DROMOS_AUTH_TOKEN), "
            "or --basic-auth user:password (or DROMOS_BASIC_AUTH), or listen on 127.0.0.1."
        )
    token = credentials.token
    if token is not None and len(token.strip()) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"refusing to listen on {host} with a token of fewer than {MIN_TOKEN_LENGTH} "
            f"non-blank characters: the token must be at least {MIN_TOKEN_LENGTH} characters "
            "long (for example: python3 -c 'import secrets; print(secrets.token_urlsafe())')"
        )
