"""The connection to the Docker Engine: made on first use, paced by the runtimes' shared
:class:`~scheduler.runtimes.backoff.Backoff` while the engine is away, and what an engine
error means."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import docker
import docker.errors
import requests

from scheduler.runtimes.backoff import Backoff
from scheduler.runtimes.base import RuntimeUnavailable
from scheduler.runtimes.docker.containers import explain

log = logging.getLogger(__name__)

API_TIMEOUT_SECONDS = 60.0
"""How long one Docker API call may take before the engine counts as unavailable."""
UNREACHABLE = (requests.ConnectionError, requests.Timeout)
"""What the SDK raises when the engine does not answer."""

ClientFactory = Callable[[], Any]
"""Returns a ``docker.DockerClient``; may raise when the engine cannot be reached."""


def default_client() -> Any:
    """A client for the engine the environment points at (``DOCKER_HOST``, else the local
    socket), with :data:`API_TIMEOUT_SECONDS` per call."""
    return docker.from_env(timeout=int(API_TIMEOUT_SECONDS))


class EngineConnection:
    """One runtime's client of the engine. Thread-safe."""

    def __init__(self, client_factory: ClientFactory) -> None:
        self._client_factory = client_factory
        self._client_obj: Any = None
        self._lock = threading.RLock()  # api() notes failures while holding it
        self.backoff = Backoff()

    def api(self) -> Any:
        """The low-level API client, connecting on first use.

        Raises :class:`RuntimeUnavailable` when the engine cannot be reached, and without
        trying while the retry delay after the last failure runs, so a dead or hung engine
        costs the control loop nothing between attempts.
        """
        with self._lock:
            self.backoff.check()
            if self._client_obj is None:
                try:
                    self._client_obj = self._client_factory()
                except (docker.errors.DockerException, requests.RequestException, OSError) as e:
                    raise self.failed(f"cannot connect to the Docker Engine: {e}") from e
            return self._client_obj.api

    def failed(self, why: str) -> RuntimeUnavailable:
        """Note that the engine could not be reached: back off, and drop the client so the
        next attempt connects afresh (the engine may come back as another version)."""
        with self._lock:
            self._client_obj = None
            return self.backoff.failed(why)

    @contextmanager
    def calling(self, doing: str) -> Iterator[None]:
        """Turns a failure to reach the engine, and an engine error nobody handled on the way
        out (an inspect or a list that fails), into :class:`RuntimeUnavailable`. The errors
        that say something about the task (a create or start the engine refuses, a failed
        pull) are handled where they happen. A call that went through resets the retry
        delay."""
        try:
            yield
        except docker.errors.APIError as e:
            raise RuntimeUnavailable(
                f"the Docker Engine failed while {doing}: {explain(e)}"
            ) from e
        except UNREACHABLE as e:
            raise self.failed(f"the Docker Engine did not answer while {doing}: {e}") from e
        self.backoff.succeeded()

    def close(self) -> None:
        """Drop the connection; the next :meth:`api` connects again."""
        with self._lock:
            client, self._client_obj = self._client_obj, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a connection pool must not fail a shutdown
                log.debug("closing the docker client failed", exc_info=True)


def inspect(api: Any, name: str) -> dict[str, Any] | None:
    """``docker inspect`` of a container, ``None`` when there is none; its labels are also
    at the top (where the list call has them)."""
    try:
        attrs: dict[str, Any] = api.inspect_container(name)
    except docker.errors.NotFound:
        return None
    attrs.setdefault("Labels", (attrs.get("Config") or {}).get("Labels") or {})
    return attrs
