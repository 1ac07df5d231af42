"""End to end with real local processes: a gang of two GPU tasks, placed by the sharing step,
each process sees its rank, the world size, the rendezvous address and its own declared GPU
device (no real GPU: the devices are declared on the nodes)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from scheduler.clock import FakeClock
from scheduler.config import Credentials
from scheduler.events import EventBus
from scheduler.model.node import Node
from scheduler.model.resources import Resources, parse_port_ranges
from scheduler.orchestrator import Orchestrator
from scheduler.runtimes.local import LocalRuntime
from scheduler.store.memory import MemoryStore
from tests.runtimes.conftest import cleanup_local_state

NODES = [Node("gpu-a", Resources(2, 1024, 10_000, 1), parse_port_ranges("33100-33109"),
              {"gpu_model": "a100"}),
         Node("gpu-b", Resources(2, 1024, 10_000, 2), parse_port_ranges("33110-33119"),
              {"gpu_model": "a100"})]


@pytest.fixture
def orchestrator(tmp_path: Path) -> Iterator[Orchestrator]:
    runtime = LocalRuntime(tmp_path / "state", NODES)
    o = Orchestrator(MemoryStore(), runtime, EventBus(), FakeClock())
    yield o
    runtime.close()
    cleanup_local_state(tmp_path / "state")


def test_gang_members_see_rank_world_size_master_and_their_own_gpu(
        orchestrator: Orchestrator, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    client = TestClient(create_app(orchestrator, Credentials()))
    cmd = (f'echo "$RANK $WORLD_SIZE $MASTER_ADDR $MASTER_PORT $CUDA_VISIBLE_DEVICES" '
           f'> {out}/rank$RANK.tmp && mv {out}/rank$RANK.tmp {out}/rank$RANK && sleep 60')
    r = client.post("/v2/apps", json={
        "id": "/ml/train", "cmd": cmd, "cpus": 1.5, "mem": 32, "gpus": 1, "instances": 2,
        "labels": {"dromos.io/gang": "true"},
        "constraints": [["gpu_model", "LIKE", "a100"]]})
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(list(out.glob("rank?"))) < 2:
        orchestrator.run_once(orchestrator.clock.now())
        time.sleep(0.05)
    lines = {p.name: p.read_text().split() for p in sorted(out.glob("rank?"))}
    assert sorted(lines) == ["rank0", "rank1"]
    tasks = {t.host: t for t in orchestrator.tasks("/ml/train")}
    assert sorted(tasks) == ["gpu-a", "gpu-b"]  # 1.5 cpus each: one per node
    ports = {words[3] for words in lines.values()}
    assert len(ports) == 1  # every member names the same rendezvous port
    # ... which is the first host port of exactly one member's task (rank 0's)
    assert sum(str(t.ports[0]) in ports for t in tasks.values()) == 1
    for name, (rank, world, master, _port, *devices) in lines.items():
        assert rank == name[-1] and world == "2"
        assert master == "127.0.0.1"
        assert devices == ["0"]  # one device each, the node's first
