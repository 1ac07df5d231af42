"""Host ports held by a process Dromos does not own (issue 11, defect 8): the local runtime
fails the task without running it and says which port; the orchestrator keeps that port out
of placement on that node for a while, so the replacement goes to another port instead of
failing on the same one again and again. Real processes, real sockets."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from scheduler.clock import FakeClock
from scheduler.events import EventBus
from scheduler.model.task import TaskState
from scheduler.orchestrator import Orchestrator
from scheduler.placement.taken_ports import HOLDER, TakenPorts
from scheduler.runtimes.local import LocalRuntime
from scheduler.runtimes.ports import ports_in_message
from scheduler.store.memory import MemoryStore
from tests.factories import T0, make_app, make_node
from tests.runtimes.conftest import cleanup_local_state, launch, make_task, wait_for_state
from tests.runtimes.conftest import make_app as runtime_app


@pytest.fixture
def squatter() -> Iterator[tuple[socket.socket, int]]:
    """A listener on a port whose next port is free too (a node range of two ports)."""
    for _ in range(50):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port + 1))
            except OSError:
                s.close()
                continue
        s.listen()
        try:
            yield s, port
        finally:
            s.close()
        return
    pytest.fail("no two consecutive free ports")


def test_a_taken_port_fails_the_task_unstarted_and_names_the_port(
        tmp_path: Path, squatter: tuple[socket.socket, int]) -> None:
    _, port = squatter
    rt = LocalRuntime(tmp_path / "state")
    try:
        app = runtime_app(cmd="echo ran", portDefinitions=[{"port": 0}])
        task = launch(rt, app, make_task(app, ports=(port,)))
        obs = wait_for_state(rt, task, TaskState.FAILED, TaskState.FINISHED)
        assert obs.state is TaskState.FAILED
        assert obs.ports_taken == (port,)
        assert f"host port {port} taken by another process" in obs.message
        assert not (rt.sandbox(task.id) / "stdout").exists(), "the task never ran"
    finally:
        rt.close()
        cleanup_local_state(tmp_path / "state")


def test_the_replacement_is_placed_on_another_port_of_the_node(
        tmp_path: Path, squatter: tuple[socket.socket, int]) -> None:
    _, port = squatter
    node = make_node("node-a", cpus=2, mem=1024, ports=f"{port}-{port + 1}")
    rt = LocalRuntime(tmp_path / "state", [node])
    clock = FakeClock(T0)
    o = Orchestrator(MemoryStore(), rt, EventBus(), clock)
    try:
        o.create_app(make_app("/web", cmd="sleep 30", cpus=0.1, mem=16,
                              portDefinitions=[{"port": 0}]))
        running = None
        for _ in range(200):
            o.run_once(clock.now())
            running = next((t for t in o.tasks("/web") if t.state is TaskState.RUNNING), None)
            if running is not None:
                break
            clock.advance(1)
            time.sleep(0.05)  # the task's process starts in real time
        assert running is not None and running.ports == (port + 1,)
        assert o.taken_ports.active(clock.now()) == {"node-a": (port,)}
    finally:
        for t in o.tasks("/web"):
            rt.kill(t, 0)
        rt.close()
        cleanup_local_state(tmp_path / "state")


def test_taken_ports_are_held_for_their_ttl_then_tried_again() -> None:
    taken = TakenPorts(timedelta(minutes=5))
    taken.mark("a", [31000, 31002], T0)
    taken.mark("b", [31000], T0 + timedelta(minutes=1))
    assert taken.active(T0) == {"a": (31000, 31002), "b": (31000,)}
    [held_a, held_b] = taken.placed(T0 + timedelta(minutes=4))
    assert (held_a.app_id, held_a.host, held_a.ports) == (HOLDER, "a", (31000, 31002))
    assert held_a.resources.cpus == 0 and held_b.host == "b"
    assert taken.active(T0 + timedelta(minutes=5)) == {"b": (31000,)}
    assert taken.active(T0 + timedelta(minutes=6)) == {}


def test_the_docker_engines_port_errors_name_the_port() -> None:
    assert ports_in_message(
        "driver failed programming external connectivity on endpoint x: Bind for "
        "127.0.0.1:31005 failed: port is already allocated") == (31005,)
    assert ports_in_message("Error starting userland proxy: listen tcp4 127.0.0.1:31007: "
                            "bind: address already in use") == (31007,)
    assert ports_in_message("no such image") == ()
