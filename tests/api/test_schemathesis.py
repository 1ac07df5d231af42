"""Property-based API fuzzing from our own OpenAPI document, with the control loop running:
no input makes Dromos answer 5xx, no input makes a loop pass fail, and -- with non-finite
numbers (``Infinity``, ``NaN``, ``1e400``, ``"inf"``) put into generated bodies -- nothing
non-finite is stored and every response stays strict JSON (issue 11, defects 1 and 2)."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from api.app import create_app
from scheduler.clock import SystemClock
from scheduler.config import Credentials
from scheduler.events import EventBus
from scheduler.orchestrator import Orchestrator
from scheduler.runtimes.local import LocalRuntime
from scheduler.store.memory import MemoryStore
from tests.api.conftest import NODES
from tests.runtimes.conftest import cleanup_local_state

# Module-level app: schemathesis builds its tests from the schema at collection time. The
# control loop runs (module fixture below) on the real clock, over the local runtime: apps
# the fuzzer creates are placed and launched, jobs fire, while requests keep coming.
_state = Path(tempfile.mkdtemp(prefix="dromos-fuzz-"))
_orchestrator = Orchestrator(MemoryStore(), LocalRuntime(_state, NODES), EventBus(),
                             SystemClock(), loop_interval=0.1)
_app = create_app(_orchestrator, Credentials())
schema = schemathesis.openapi.from_asgi("/openapi.json", _app)


class _Errors(logging.Handler):
    """Collects ERROR records of Dromos's loggers (a failed loop pass logs one)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_errors = _Errors()


@pytest.fixture(scope="module", autouse=True)
def control_loop() -> Iterator[None]:
    logging.getLogger("dromos").addHandler(_errors)
    _orchestrator.start()
    yield
    _orchestrator.stop()
    logging.getLogger("dromos").removeHandler(_errors)
    cleanup_local_state(_state)
    failed = [r.getMessage() for r in _errors.records]
    assert not failed, f"the control loop logged errors: {failed[:5]}"


@schema.parametrize()
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_no_input_yields_a_server_error(case: schemathesis.Case) -> None:
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])


# --- non-finite numbers ----------------------------------------------------------------------

_MARK = "__dromos_non_finite__"
_TOKENS = ["Infinity", "-Infinity", "NaN", "1e400", "-1e999", '"inf"', '"Infinity"', '"nan"']
# Keys where a number means something, so the value reaches a float field, not only an
# unknown-field error.
_NUMERIC_KEYS = ["cpus", "mem", "disk", "gpus", "instances", "backoffSeconds",
                 "backoffFactor", "maxLaunchDelaySeconds", "taskKillGracePeriodSeconds",
                 "minimumHealthCapacity", "scaleBy", "retries", "intervalSeconds"]


def _valid_body(method: str, path: str) -> dict[str, Any] | None:
    """A definition the route accepts, so that the non-finite number is the only fault
    (generated bodies are mostly invalid for other reasons already)."""
    app = {"cmd": "sleep 600", "instances": 0, "cpus": 0.01, "mem": 8}
    if path == "/v2/apps" and method == "POST":
        return {"id": "/fuzz/app", **app}
    if path.startswith("/v2/apps/") and not path.endswith("/restart"):
        return dict(app)
    if path.startswith("/v2/groups") and "/versions/" not in path:
        return {"id": "/fuzzg", "apps": [{"id": "a", **app}]}
    if path.endswith("/iso8601"):
        return {"name": "fuzzjob", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/PT1H"}
    if path.endswith("/dependency"):
        return {"name": "fuzzdep", "command": "true", "parents": ["fuzzjob"]}
    return None


def _containers(value: Any, out: list[Any]) -> list[Any]:
    if isinstance(value, dict | list):
        out.append(value)
        for v in value.values() if isinstance(value, dict) else value:
            _containers(v, out)
    return out


def _with_non_finite(body: Any, data: st.DataObject) -> str:
    """``body`` as JSON text with a non-finite token put somewhere."""
    token = data.draw(st.sampled_from(_TOKENS), label="token")
    if not isinstance(body, dict | list):
        body = {}
    containers = _containers(body, [])
    target = data.draw(st.sampled_from(containers), label="container")
    if isinstance(target, dict):
        key = data.draw(st.sampled_from(sorted(set(target) | set(_NUMERIC_KEYS))), label="key")
        target[key] = _MARK
    else:
        target.insert(data.draw(st.integers(0, len(target)), label="index"), _MARK)
    return json.dumps(body).replace(json.dumps(_MARK), token)


def _strict(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise AssertionError(f"response holds the non-JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


_client = TestClient(_app)
_writes = schema.include(method=["POST", "PUT", "PATCH"])


@_writes.parametrize()
@_writes.given(data=st.data())
@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_non_finite_numbers_are_refused_and_never_stored(case: schemathesis.Case,
                                                         data: st.DataObject) -> None:
    path = case.formatted_path
    body = case.body
    valid = _valid_body(case.method.upper(), path)
    if valid is not None and data.draw(st.booleans(), label="start from a valid body"):
        body = valid
    text = _with_non_finite(body if body is not None else {}, data)
    r = _client.request(case.method, path, content=text, params=case.query,
                        headers={"Content-Type": "application/json"})
    assert r.status_code < 500, (case.method, path, text[:300], r.text[:300])
    if r.headers.get("content-type", "").startswith("application/json"):
        _strict(r.text)
    # Whatever was accepted, everything Dromos now shows is strict JSON.
    for listing in ("/v2/apps", "/v2/groups", "/scheduler/jobs", "/ui/state",
                    "/v2/deployments", "/v2/queue"):
        got = _client.get(listing)
        assert got.status_code == 200, listing
        _strict(got.text)
