"""The marathon 0.13.0 client's ``event_stream()`` against a real ``dromos serve``.

That client turns every ``data:`` line into a typed event object and raises on a type it does
not know, on JSON it cannot parse, and on embedded objects (health checks, deployment plans,
IP addresses) whose keys its models do not take. So: two streams stay attached while apps are
created, health-checked (passing and failing), scaled, upgraded and deleted, and every event
they receive must parse.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import marathon
import pytest
import requests
from marathon.models import MarathonApp, MarathonHealthCheck
from marathon.models.events import (
    MarathonAppTerminatedEvent,
    MarathonDeploymentSuccess,
    MarathonEvent,
)

from tests.support.server import Server, serving, wait_for

pytestmark = pytest.mark.integration

NODES = [{"hostname": f"node-{c}", "cpus": 2, "mem": 1024, "disk": 1000,
          "ports": f"{35000 + 100 * i}-{35000 + 100 * i + 49}"} for i, c in enumerate("ab")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("events-client"), NODES) as srv:
        yield srv


class RecordingSession(requests.Session):
    """The client's SSE session, keeping its responses so the test can hang up."""

    def __init__(self) -> None:
        super().__init__()
        self.responses: list[requests.Response] = []

    def get(self, *args: Any, **kwargs: Any) -> requests.Response:
        r = super().get(*args, **kwargs)
        self.responses.append(r)
        return r


class Consumer(threading.Thread):
    """Iterates ``event_stream()`` until the last app's termination; records what it got."""

    def __init__(self, url: str, last_app: str, event_types: list[Any] | None = None) -> None:
        super().__init__(daemon=True)
        self.session = RecordingSession()
        self.client = marathon.MarathonClient(url, sse_session=self.session)
        self.last_app = last_app
        self.event_types = event_types
        self.events: list[MarathonEvent] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for event in self.client.event_stream(event_types=self.event_types):
                self.events.append(event)
                if isinstance(event, MarathonAppTerminatedEvent) and \
                        event.app_id == self.last_app:
                    return
        except BaseException as e:  # recorded for the test thread to assert on
            self.error = e

    def hang_up(self) -> None:
        for r in self.session.responses:
            r.close()

    def types(self) -> list[str]:
        return [e.event_type for e in self.events]


def streams_attached(server: Server) -> int:
    gauges = server.get("/metrics")["gauges"]
    return int(gauges["dromos.http.event-streams.active.gauge"]["value"])


def test_event_stream_parses_everything_through_an_app_lifecycle(server: Server,
                                                                 tmp_path: Path) -> None:
    c = marathon.MarathonClient(server.url)
    everything = Consumer(server.url, "/ev-web")
    filtered = Consumer(server.url, "/ev-web",
                        [MarathonAppTerminatedEvent, "deployment_success"])
    for consumer in (everything, filtered):
        consumer.start()
    wait_for(lambda: streams_attached(server) == 2, 10, "both event streams attached")

    def no_deployments(app_id: str) -> bool:
        return not any(app_id in d.affected_apps for d in c.list_deployments())

    # A healthy app: status updates, health changes, deployment events.
    c.create_app("ev-web", MarathonApp(
        cmd="sleep 600", cpus=0.1, mem=16, instances=2,
        health_checks=[MarathonHealthCheck(protocol="COMMAND", command="true",
                                           interval_seconds=1, grace_period_seconds=0)]))
    wait_for(lambda: c.get_app("ev-web").tasks_healthy == 2, 30, "two healthy tasks")
    # A check that passes, then fails: failed_health_check_event, unhealthy_task_kill_event.
    flag = tmp_path / "healthy"
    flag.touch()
    c.create_app("ev-sick", MarathonApp(
        cmd="sleep 600", cpus=0.1, mem=16, instances=1,
        health_checks=[MarathonHealthCheck(protocol="COMMAND", command=f"test -e {flag}",
                                           interval_seconds=1, grace_period_seconds=0,
                                           max_consecutive_failures=1)]))
    wait_for(lambda: c.get_app("ev-sick").tasks_healthy == 1, 30, "the sick app healthy first")
    flag.unlink()
    wait_for(lambda: "unhealthy_task_kill_event" in everything.types(), 30,
             "an unhealthy task killed")
    c.delete_app("ev-sick", force=True)
    c.scale_app("ev-web", instances=3)
    wait_for(lambda: no_deployments("/ev-web") and c.get_app("ev-web").tasks_running == 3, 30,
             "scaled to three")
    app = c.get_app("ev-web")
    app.cmd = "sleep 601"  # a configuration change: a rolling restart
    c.update_app("ev-web", app)
    wait_for(lambda: no_deployments("/ev-web"), 30, "the rolling restart to finish")
    c.delete_app("ev-web", force=True)

    for consumer in (everything, filtered):
        consumer.join(30)
        consumer.hang_up()
        assert not consumer.is_alive(), f"stream ended early or stalled: {consumer.types()}"
        assert consumer.error is None, repr(consumer.error)
        assert all(isinstance(e, MarathonEvent) for e in consumer.events)

    seen = set(everything.types())
    assert {"event_stream_attached", "api_post_event", "status_update_event",
            "deployment_info", "deployment_success", "health_status_changed_event",
            "failed_health_check_event", "unhealthy_task_kill_event",
            "app_terminated_event"} <= seen, seen
    assert everything.types()[0] == "event_stream_attached"
    assert everything.events[0].remote_address == "127.0.0.1"
    states = {e.task_status for e in everything.events if e.event_type == "status_update_event"}
    assert {"TASK_STAGING", "TASK_RUNNING", "TASK_KILLED"} <= states, states
    # The filter holds for a client that asked for two types.
    assert set(filtered.types()) == {"deployment_success", "app_terminated_event"}
    assert any(isinstance(e, MarathonDeploymentSuccess) for e in filtered.events)
    # Hanging up unsubscribes on the server.
    wait_for(lambda: streams_attached(server) == 0, 10, "both streams detached")
