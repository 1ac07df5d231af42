"""Plain-JSON requests to the API server through the kubernetes client's ``ApiClient``.

The client's typed methods turn objects into model classes and back; Dromos's own kinds are
custom resources it handles as JSON anyway. This helper keeps the client's configuration,
authentication and connection pool (``param_serialize`` + ``call_api``) and returns decoded
JSON, mapping answers to three exceptions the callers act on.
"""

from __future__ import annotations

import json
from typing import Any


class KubeNotFound(Exception):
    """404."""


class KubeConflict(Exception):
    """409: the object exists (create) or changed since it was read (replace, delete)."""


class KubeError(Exception):
    """Any other refusal (``status`` set: 403 from a policy, 422, 5xx) or no answer (``status``
    ``None``: refused connection, timeout)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def request(api: Any, method: str, path: str, body: Any = None, *,
            timeout_s: float = 10.0) -> dict[str, Any]:
    """``method path`` with a JSON ``body``; the decoded JSON answer (``{}`` when empty)."""
    try:
        m, url, headers, payload, _ = api.param_serialize(
            method=method, resource_path=path, body=body,
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
            auth_settings=["BearerToken"])
        response = api.call_api(m, url, header_params=headers, body=payload,
                                _request_timeout=timeout_s)
        response.read()
        status, raw = int(response.status), response.data
    except Exception as e:  # urllib3: refused, reset, timeout
        raise KubeError(f"{method} {path}: {e}") from None
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        data = {"message": raw.decode(errors="replace")[:200]}
    if 200 <= status < 300:
        return data if isinstance(data, dict) else {}
    why = data.get("message", "") if isinstance(data, dict) else ""
    message = f"{method} {path}: {status} {why}"
    if status == 404:
        raise KubeNotFound(message)
    if status == 409:
        raise KubeConflict(message)
    raise KubeError(message, status)
