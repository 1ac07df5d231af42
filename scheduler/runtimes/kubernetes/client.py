"""Talking to the API server: the client configuration and connection, timeouts, and what
an API error means (unreachable, refused by admission, its message)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from typing import Any

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from scheduler.runtimes.backoff import Backoff
from scheduler.runtimes.base import RuntimeUnavailable

CONNECT_TIMEOUT_SECONDS = 5.0
REQUEST_TIMEOUT_SECONDS = 30.0
TIMEOUT = (CONNECT_TIMEOUT_SECONDS, REQUEST_TIMEOUT_SECONDS)
"""The ``_request_timeout`` of one ordinary API call."""
UNREACHABLE = (urllib3.exceptions.HTTPError, OSError)
"""What the client raises when the API server cannot be reached at all."""


def describe(e: BaseException) -> str:
    """A short account of an error, for messages and logs."""
    if isinstance(e, ApiException):
        return f"{e.status} {status_message(e)}"
    return str(e) or type(e).__name__


def refused_by_admission(e: ApiException) -> bool:
    """A 403 that is about the pod (Pod Security, a quota), not about Dromos's rights."""
    message = status_message(e)
    return e.status == 403 and ("violates PodSecurity" in message or "exceeded quota" in message)


def status_message(e: ApiException) -> str:
    """The ``message`` of the Status an API error carries, else its reason."""
    try:
        body = json.loads(e.body) if e.body else {}
    except (TypeError, ValueError):
        body = {}
    return str(body.get("message") or e.reason or "")


def load_client_configuration(kubeconfig: str | None = None,
                              context: str | None = None) -> Any:
    """A client ``Configuration`` from the usual places: in-cluster (the pod's service
    account) when ``KUBERNETES_SERVICE_HOST`` is set and no kubeconfig is given, else the
    kubeconfig (``kubeconfig``, ``$KUBECONFIG``, ``~/.kube/config``). Raises
    ``ConfigException`` when there is none."""
    configuration = k8s_client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        k8s_config.load_incluster_config(client_configuration=configuration)
    else:
        k8s_config.load_kube_config(config_file=kubeconfig, context=context,
                                    client_configuration=configuration)
    # Fail fast: the runtime has its own retry policy (backoff), urllib3's would hide outages.
    configuration.retries = 0
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, 32)
    return configuration



class ApiConnection:
    """The client of one runtime: built on first use (so a runtime can be made while the API
    server is down), paced by a :class:`~scheduler.runtimes.backoff.Backoff` after failures.
    Thread-safe."""

    def __init__(self, configuration: Any = None, kubeconfig: str | None = None,
                 context: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self._configuration = configuration
        self._lock = threading.Lock()
        self._api_client: Any = None
        self._core: Any = None
        self.backoff = Backoff()

    def core(self) -> Any:
        """The CoreV1 API. Raises :class:`RuntimeUnavailable` without trying while the wait
        after the last failure runs, or when there is no client configuration."""
        with self._lock:
            self.backoff.check()
            if self._core is None:
                try:
                    configuration = self._configuration or load_client_configuration(
                        self.kubeconfig, self.context)
                except (ConfigException, OSError, ValueError) as e:
                    raise self.backoff.failed(f"no Kubernetes client configuration: {e}") from e
                self._configuration = configuration
                self._api_client = k8s_client.ApiClient(configuration)
                self._core = k8s_client.CoreV1Api(self._api_client)
            return self._core

    def unavailable(self, doing: str, e: BaseException) -> RuntimeUnavailable:
        """Note that a call failed while ``doing`` something (backing off); the error to
        raise."""
        return self.backoff.failed(
            f"the Kubernetes API server failed while {doing}: {describe(e)}")

    def succeeded(self) -> None:
        """Note that a call went through."""
        self.backoff.succeeded()

    def close(self) -> None:
        """Drop the connection pool; the next :meth:`core` builds a new client."""
        with self._lock:
            api_client, self._api_client, self._core = self._api_client, None, None
        if api_client is not None:
            with contextlib.suppress(Exception):
                api_client.close()
