"""Implementations of :class:`scheduler.ha.elector.LeaseApi`: the API server's Lease, and an
in-memory twin with the same optimistic-concurrency rules for fast tests (one contract suite,
``tests/ha/test_lease_api.py``, runs against both)."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from scheduler.ha.elector import LeaseConflict, LeaseUnavailable
from scheduler.ha.kube_http import KubeConflict, KubeError, KubeNotFound, request
from scheduler.ha.lease import LeaseRecord


class MemoryLeaseApi:
    """One Lease in memory; ``resourceVersion`` is a counter, as opaque to callers as etcd's."""

    def __init__(self) -> None:
        self._record: LeaseRecord | None = None
        self._rv = 0
        self._lock = threading.Lock()
        self.unavailable = False  # tests flip it to simulate an API server outage

    def get(self) -> tuple[LeaseRecord, str] | None:
        with self._lock:
            self._check()
            return None if self._record is None else (self._record, str(self._rv))

    def create(self, record: LeaseRecord) -> str:
        with self._lock:
            self._check()
            if self._record is not None:
                raise LeaseConflict("lease exists")
            self._record, self._rv = record, self._rv + 1
            return str(self._rv)

    def replace(self, record: LeaseRecord, resource_version: str) -> str:
        with self._lock:
            self._check()
            if self._record is None or str(self._rv) != resource_version:
                raise LeaseConflict("lease changed")
            self._record, self._rv = record, self._rv + 1
            return str(self._rv)

    def _check(self) -> None:
        if self.unavailable:
            raise LeaseUnavailable("simulated outage")


def _time(value: datetime | None) -> str | None:
    # MicroTime: RFC 3339 with microseconds, in UTC.
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def record_to_spec(record: LeaseRecord) -> dict[str, Any]:
    return {"holderIdentity": record.holder, "leaseDurationSeconds": record.duration_s,
            "acquireTime": _time(record.acquire_time), "renewTime": _time(record.renew_time),
            "leaseTransitions": record.transitions}


def spec_to_record(spec: dict[str, Any]) -> LeaseRecord:
    return LeaseRecord(holder=spec.get("holderIdentity") or None,
                       duration_s=int(spec.get("leaseDurationSeconds") or 0),
                       acquire_time=_parse(spec.get("acquireTime")),
                       renew_time=_parse(spec.get("renewTime")),
                       transitions=int(spec.get("leaseTransitions") or 0))


class KubeLeaseApi:
    """The Lease ``name`` in ``namespace`` on the API server (plain JSON through
    :mod:`scheduler.ha.kube_http`; every request bounded by ``timeout_s`` so a hung call cannot
    outlive the renew deadline)."""

    def __init__(self, api_client: Any, namespace: str, name: str, timeout_s: float) -> None:
        self._client = api_client
        self.namespace = namespace
        self.name = name
        self.timeout_s = timeout_s

    @property
    def _path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"

    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any] | None:
        try:
            return request(self._client, method, path, body, timeout_s=self.timeout_s)
        except KubeNotFound:
            if method == "GET":
                return None
            raise LeaseUnavailable(f"{method} lease: not found") from None
        except KubeConflict:
            raise LeaseConflict(f"{method} lease: 409") from None
        except KubeError as e:
            raise LeaseUnavailable(str(e)) from None

    def get(self) -> tuple[LeaseRecord, str] | None:
        data = self._call("GET", f"{self._path}/{self.name}")
        if data is None:
            return None
        return spec_to_record(data.get("spec") or {}), str(data["metadata"]["resourceVersion"])

    def _body(self, record: LeaseRecord, rv: str | None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if rv is not None:
            meta["resourceVersion"] = rv
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": record_to_spec(record)}

    def create(self, record: LeaseRecord) -> str:
        data = self._call("POST", self._path, self._body(record, None)) or {}
        return str(data["metadata"]["resourceVersion"])

    def replace(self, record: LeaseRecord, resource_version: str) -> str:
        data = self._call("PUT", f"{self._path}/{self.name}",
                          self._body(record, resource_version)) or {}
        return str(data["metadata"]["resourceVersion"])
