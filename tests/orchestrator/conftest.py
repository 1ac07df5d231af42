"""An orchestrator over a memory store, the in-memory fake runtime and a frozen clock.

No control-loop thread: tests call ``run_once(clock.now())`` to move the world.
"""

from __future__ import annotations

import pytest

from scheduler.clock import FakeClock
from scheduler.events import EventBus
from scheduler.orchestrator import Orchestrator
from scheduler.store.memory import MemoryStore
from tests.support.fake_runtime import FakeRuntime


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def orch(runtime: FakeRuntime, clock: FakeClock) -> Orchestrator:
    return Orchestrator(MemoryStore(), runtime, EventBus(), clock)
