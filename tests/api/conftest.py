"""An API over a real orchestrator: memory store, real local runtime, a fake clock.

The control loop is not started; tests call ``orchestrator.run_once`` to move the world.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from scheduler.clock import FakeClock
from scheduler.config import Credentials
from scheduler.events import EventBus
from scheduler.orchestrator import Orchestrator
from scheduler.runtimes.local import LocalRuntime
from scheduler.store.memory import MemoryStore
from tests.factories import make_node
from tests.runtimes.conftest import cleanup_local_state

NODES = [
    make_node("node-a", cpus=2, mem=1024, ports="32000-32009", rack="r1", zone="z1"),
    make_node("node-b", cpus=2, mem=1024, ports="32010-32019", rack="r1", zone="z2"),
    make_node("node-c", cpus=2, mem=1024, ports="32020-32029", rack="r2", zone="z2"),
]


@pytest.fixture
def orchestrator(tmp_path: Path) -> Iterator[Orchestrator]:
    runtime = LocalRuntime(tmp_path, NODES)
    o = Orchestrator(MemoryStore(), runtime, EventBus(), FakeClock())
    yield o
    runtime.close()
    cleanup_local_state(tmp_path)


@pytest.fixture
def client(orchestrator: Orchestrator) -> TestClient:
    return TestClient(create_app(orchestrator, Credentials()))
