"""The leader's fence on the runtime's writes (replicas on the Kubernetes store, scheduler/ha).

The API server refuses a write by Dromos's service account in a fenced namespace unless it
carries the current leader's token (manifests/15-fence.yaml): creates and updates carry it in
the annotation ``dromos.io/fence``; a delete is judged on the object being deleted, so the
object is stamped with the token first. Without a token source (one Dromos on SQLite, or an
unfenced namespace) nothing is added and nothing is stamped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scheduler.ha.lease import FENCE_ANNOTATION
from scheduler.runtimes.kubernetes.client import TIMEOUT


class Fence:
    """``token()`` gives the token for a write now (raising when this process may not write)."""

    def __init__(self, token: Callable[[], str] | None = None) -> None:
        self.token = token

    def annotations(self) -> dict[str, str]:
        """What a created or updated object carries."""
        return {} if self.token is None else {FENCE_ANNOTATION: self.token()}

    def stamp(self, patch: Callable[..., Any], name: str, namespace: str) -> None:
        """Stamp an object before deleting it: ``patch`` is the client's
        ``patch_namespaced_pod`` or ``patch_namespaced_service``."""
        if self.token is None:
            return
        patch(name, namespace, {"metadata": {"annotations": self.annotations()}},
              _preload_content=False, _request_timeout=TIMEOUT)
