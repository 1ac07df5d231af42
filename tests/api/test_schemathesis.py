"""Property-based API fuzzing from our own OpenAPI document: no input makes Dromos answer 5xx."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from api.app import create_app
from scheduler.clock import FakeClock
from scheduler.config import Credentials
from scheduler.events import EventBus
from scheduler.orchestrator import Orchestrator
from scheduler.runtimes.local import LocalRuntime
from scheduler.store.memory import MemoryStore
from tests.api.conftest import NODES

# Module-level app: schemathesis builds its tests from the schema at collection time. The
# control loop never runs here, so no process is ever launched.
_orchestrator = Orchestrator(MemoryStore(), LocalRuntime(Path(tempfile.mkdtemp()), NODES),
                             EventBus(), FakeClock())
_app = create_app(_orchestrator, Credentials())
schema = schemathesis.openapi.from_asgi("/openapi.json", _app)


@schema.parametrize()
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_no_input_yields_a_server_error(case: schemathesis.Case) -> None:
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])
