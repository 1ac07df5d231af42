"""The endpoints behind the page (api/ui.py) without a browser: the snapshot, the graph's
layout, logs (tail, follow, cursors), the SSE stream, job buttons, and the page's shell."""

from __future__ import annotations

import asyncio
import json
import re
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import snapshot, ui
from api.app import create_app
from api.sse import Connection, hub_of
from scheduler.clock import FakeClock
from scheduler.config import Credentials
from scheduler.events import DROMOS, EventBus
from scheduler.model.job import parse_job
from scheduler.orchestrator import Orchestrator
from scheduler.runtimes.local import LocalRuntime
from scheduler.store.memory import MemoryStore
from tests.factories import make_node
from tests.runtimes.conftest import cleanup_local_state

NODES = [make_node(f"node-{c}", cpus=1, mem=512, ports=f"{37000 + 10 * i}-{37000 + 10 * i + 9}",
                   rack=f"r{i}") for i, c in enumerate("ab")]


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


def put_job(o: Orchestrator, **fields: Any) -> None:
    o.put_job(parse_job({"command": "true", **fields}))


# ------------------------------------------------------------------ the snapshot


def test_state_says_why_instances_wait(client: TestClient, orchestrator: Orchestrator) -> None:
    r = client.post("/v2/apps", json={"id": "/big", "cmd": "sleep 60", "instances": 1,
                                      "cpus": 0.1, "mem": 4096})
    assert r.status_code == 201
    orchestrator.run_once(orchestrator.clock.now())
    state = client.get("/ui/state").json()
    assert state["serverTime"].endswith("Z")
    [app] = state["apps"]
    assert app["instances"] == 1 and app["counts"]["running"] == 0
    assert app["waiting"]["count"] == 1
    assert app["waiting"]["reason"] == "2 nodes: insufficient mem"
    assert [n["hostname"] for n in state["nodes"]] == ["node-a", "node-b"]
    assert state["nodes"][0]["attributes"] == {"rack": "r0"}
    assert state["runtime"] == {"name": "local", "available": True, "error": None,
                                "summary": "local (available)"}


def test_state_jobs_in_words_with_next_run(client: TestClient,
                                           orchestrator: Orchestrator) -> None:
    put_job(orchestrator, name="nightly", schedule="R/2030-01-01T02:00:00Z/P1D",
            description="<b>x</b>")
    put_job(orchestrator, name="after", parents=["nightly"])
    put_job(orchestrator, name="off", schedule="cron: 0 * * * *", disabled=True)
    jobs = {j["name"]: j for j in client.get("/ui/state").json()["jobs"]}
    assert jobs["nightly"]["scheduleText"] == "every day at 02:00 (UTC)"
    assert jobs["nightly"]["next"] == "2030-01-01T02:00:00.000Z"
    assert jobs["nightly"]["description"] == "<b>x</b>"  # raw: the page escapes
    assert jobs["after"]["scheduleText"] == "after nightly" and jobs["after"]["next"] is None
    assert jobs["off"]["next"] is None and jobs["off"]["disabled"] is True
    assert jobs["nightly"]["durations"]["count"] == 0 and jobs["nightly"]["runs"] == []


# ------------------------------------------------------------------ the graph's layout


def test_dag_layout_points_every_edge_right_without_overlaps(
        orchestrator: Orchestrator) -> None:
    put_job(orchestrator, name="a", schedule="cron: 0 * * * *")
    put_job(orchestrator, name="b", schedule="cron: 0 * * * *")
    put_job(orchestrator, name="c", parents=["a", "b"])
    put_job(orchestrator, name="d", parents=["c"])
    put_job(orchestrator, name="e", parents=["a", "d"])  # a long edge, across two layers
    put_job(orchestrator, name="loner-with-a-very-long-name-that-gets-cut-short",
            schedule="cron: 0 * * * *")
    d = snapshot.layout_dag(orchestrator.list_jobs(), {"a": "success", "c": "failure"},
                      {"d": "running"})
    nodes = {n["name"]: n for n in d["nodes"]}
    for e in d["edges"]:
        assert e["x2"] > e["x1"], e
    layers = sorted({n["x"] for n in nodes.values() if not n["isolated"]})
    assert [nodes[n]["x"] for n in "abcde"] == [layers[0], layers[0], layers[1], layers[2],
                                                layers[3]]
    boxes = list(nodes.values())
    for i, p in enumerate(boxes):
        assert p["x"] >= 0 and p["x"] + p["w"] <= d["width"]
        assert p["y"] >= 0 and p["y"] + p["h"] <= d["height"]
        for q in boxes[i + 1:]:
            apart = (p["x"] + p["w"] <= q["x"] or q["x"] + q["w"] <= p["x"] or
                     p["y"] + p["h"] <= q["y"] or q["y"] + q["h"] <= p["y"])
            assert apart, (p["name"], q["name"])
    loner = nodes["loner-with-a-very-long-name-that-gets-cut-short"]
    assert loner["isolated"] and loner["y"] > max(n["y"] for n in boxes if not n["isolated"])
    assert len(loner["label"]) == snapshot.LABEL_MAX and loner["label"].endswith("…")
    assert (nodes["a"]["state"], nodes["c"]["state"], nodes["d"]["status"]) == (
        "success", "failure", "running")


def test_dag_layout_of_nothing() -> None:
    assert snapshot.layout_dag([], {}, {}) == {"width": 0.0, "height": 0.0, "nodes": [],
                                               "edges": []}


# ------------------------------------------------------------------ logs


def write(sandbox: Path, stdout: bytes, stderr: bytes = b"") -> None:
    sandbox.mkdir(parents=True, exist_ok=True)
    (sandbox / "stdout").write_bytes(stdout)
    (sandbox / "stderr").write_bytes(stderr)


def texts(body: dict[str, Any]) -> dict[str, str]:
    return {c["stream"]: c["text"] for c in body["chunks"]}


def test_logs_tail_then_follow_with_a_cursor(client: TestClient,
                                             orchestrator: Orchestrator) -> None:
    runtime = orchestrator.runtime
    assert isinstance(runtime, LocalRuntime)
    sandbox = runtime.sandbox("app.1")
    write(sandbox, b"".join(b"line %d\n" % i for i in range(10)), b"err\n")
    body = client.get("/ui/logs/app.1", params={"tail": 3}).json()
    assert texts(body) == {"stdout": "line 7\nline 8\nline 9\n", "stderr": "err\n"}
    assert body["running"] is False and body["source"] == "sandbox files"
    with open(sandbox / "stdout", "ab") as f:
        f.write("more ü\n".encode())
    body = client.get("/ui/logs/app.1", params={"cursor": body["cursor"]}).json()
    assert texts(body) == {"stdout": "more ü\n", "stderr": ""}
    again = client.get("/ui/logs/app.1", params={"cursor": body["cursor"]}).json()
    assert texts(again) == {"stdout": "", "stderr": ""}
    # A truncated file starts over.
    write(sandbox, b"new\n", b"")
    assert texts(client.get("/ui/logs/app.1", params={"cursor": body["cursor"]}).json())[
        "stdout"] == "new\n"
    assert texts(client.get("/ui/logs/app.1", params={"tail": -1}).json())["stdout"] == "new\n"
    assert texts(client.get("/ui/logs/app.1", params={"tail": 0}).json())["stdout"] == ""


def test_logs_of_a_job_run_and_unknown_ids(client: TestClient,
                                           orchestrator: Orchestrator) -> None:
    put_job(orchestrator, name="j", schedule="cron: 0 * * * *")
    run = client.post("/ui/jobs/j/run", json={}).json()["run"]
    assert run["status"] == "queued" and run["job"] == "j"
    body = client.get(f"/ui/logs/{run['id']}").json()
    assert body["runId"] == run["id"] and body["taskId"] == run["taskId"]
    assert body["running"] is True and texts(body) == {"stdout": "", "stderr": ""}
    assert client.get("/ui/logs/nothing-here").status_code == 404
    assert client.get("/ui/logs/..").status_code == 404
    assert client.get(f"/ui/runs/{run['id']}").json()["run"]["status"] == "queued"
    assert client.get("/ui/runs/nope").status_code == 404


# ------------------------------------------------------------------ job buttons


def test_job_buttons_need_json_and_change_the_job(client: TestClient,
                                                  orchestrator: Orchestrator) -> None:
    put_job(orchestrator, name="j", schedule="cron: 0 * * * *")
    # A form post from another site cannot send JSON without a CORS preflight.
    assert client.post("/ui/jobs/j/run", data={"x": "1"}).status_code == 415
    assert client.post("/ui/jobs/j/disabled", content=b'{"disabled": true}',
                       headers={"Content-Type": "text/plain"}).status_code in (415, 422)
    assert client.post("/ui/jobs/j/disabled", json={"disabled": True}).json() == {
        "name": "j", "disabled": True}
    assert orchestrator.job("j").disabled is True
    assert client.get("/scheduler/job/j").json()["disabled"] is True
    client.post("/ui/jobs/j/disabled", json={"disabled": False})
    assert orchestrator.job("j").disabled is False
    assert client.post("/ui/jobs/nope/run", json={}).status_code == 404


# ------------------------------------------------------------------ the SSE stream


def test_event_stream_replays_then_follows(orchestrator: Orchestrator) -> None:
    bus = orchestrator.bus
    now = orchestrator.clock.now()
    old = bus.publish("job_run_started", now, stream=DROMOS, job="a")
    seen = bus.publish("job_run_finished", now, stream=DROMOS, job="a", status="success")

    async def scenario() -> list[str]:
        hub = hub_of(types.SimpleNamespace(), orchestrator)
        conn = Connection(hub, frozenset({"marathon", DROMOS}), 2000, counted=False)
        frames = ui._stream(orchestrator, conn, bus.recent(10), old.seq, "e1")
        out = [await frames.__anext__() for _ in range(3)]
        bus.publish("api_post_event", now, uri="/v2/apps/x")
        while "api_post_event" not in out[-1]:
            out.append(await asyncio.wait_for(frames.__anext__(), 5))
        await frames.aclose()
        assert conn.sub not in bus._subs  # closed with the response
        return out

    frames = asyncio.run(scenario())
    assert frames[0] == "retry: 1000\n\n"
    # Resumed after Last-Event-ID: only the newer event is replayed, then the snapshot.
    assert frames[1].startswith(f"id: e1-{seen.seq}\nevent: bus\n")
    assert json.loads(frames[1].split("data: ", 1)[1])["status"] == "success"
    assert frames[2].startswith("event: state\n")
    assert "nodes" in json.loads(frames[2].split("data: ", 1)[1])
    assert "event: bus" in frames[-1]


def test_resume_only_within_the_same_bus() -> None:
    assert ui.resume_after("e1-42", "e1") == 42
    assert ui.resume_after("e0-42", "e1") == 0  # another server (restarted): replay
    assert ui.resume_after("", "e1") == 0 and ui.resume_after("e1-x", "e1") == 0


# ------------------------------------------------------------------ the page's shell


def test_page_shell_is_escaped_and_locked_down(client: TestClient,
                                               orchestrator: Orchestrator) -> None:
    client.post("/v2/apps", json={"id": "/x", "cmd": "echo '<script>alert(1)</script>'",
                                  "instances": 0})
    put_job(orchestrator, name="j", schedule="cron: 0 * * * *", description="<i>d</i>")
    r = client.get("/")
    assert r.status_code == 200
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert "<script>alert(1)</script>" not in r.text and "&lt;script&gt;" in r.text
    assert "<i>d</i>" not in r.text and "&lt;i&gt;d&lt;/i&gt;" in r.text
    assert "local runtime" in r.text and "node-a" in r.text
    for name, ctype in ui.STATIC_FILES.items():
        s = client.get(f"/ui/static/{name}")
        assert s.status_code == 200 and s.headers["content-type"].startswith(ctype.split(";")[0])
    assert client.get("/ui/static/index.html").status_code == 404
    assert client.get("/ui/static/..%2Fui.py").status_code == 404
    js = client.get("/ui/static/dromos.js").text
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", js)


def test_page_carries_the_state_snapshot_inline(client: TestClient,
                                                orchestrator: Orchestrator) -> None:
    """The page's data block is the /ui/state document: the script renders it before the
    load event (what headless captures see), and no user text can end the block early."""
    client.post("/v2/apps", json={"id": "/x", "cmd": "echo '</script><b>&'", "instances": 0})
    put_job(orchestrator, name="j", schedule="cron: 30 2 * * *",
            scheduleTimeZone="Europe/Berlin", description="<!-- </SCRIPT> -->")
    html = client.get("/").text
    [block] = re.findall(r'<script type="application/json" id="dromos-state">(.*?)</script>',
                         html, re.S)
    assert "<" not in block and ">" not in block and "&" not in block
    inline = json.loads(block)
    fresh = client.get("/ui/state").json()
    assert inline.pop("serverTime").endswith("Z")
    fresh.pop("serverTime")
    assert inline == fresh
    assert inline["apps"][0]["cmd"] == "echo '</script><b>&'"
    [job] = inline["jobs"]
    assert job["description"] == "<!-- </SCRIPT> -->"
    assert job["scheduleText"] == "every day at 02:30 (Europe/Berlin)"
    assert job["zone"] == "Europe/Berlin"


def test_state_says_why_a_deployment_waits(client: TestClient,
                                           orchestrator: Orchestrator) -> None:
    r = client.post("/v2/apps", json={"id": "/u", "cmd": "sleep 60", "instances": 3,
                                      "cpus": 0.1, "mem": 8,
                                      "constraints": [["hostname", "UNIQUE"]]})
    assert r.status_code == 201
    orchestrator.run_once(orchestrator.clock.now())
    [d] = client.get("/ui/state").json()["deployments"]
    assert d["id"] == r.json()["deployments"][0]["id"]
    # A new app: start it (step 1 of 2), then scale it to 3 instances (step 2).
    assert (d["currentStep"], d["totalSteps"], d["state"]) == (1, 2, "waiting")
    assert d["waiting"] == [{"app": "/u", "count": 1, "reason": "2 nodes: UNIQUE hostname"}]
    assert d["progress"] < 1


def test_deployment_progress_counts_steps_done_and_instances_running() -> None:
    from datetime import UTC, datetime

    from scheduler.model.deployment import Action, Deployment
    from tests.factories import make_app

    d = Deployment("d1", "v", datetime(2026, 1, 1, tzinfo=UTC),
                   steps=(((Action.START, "/a"),), ((Action.SCALE, "/b"),)), current_step=1)
    specs = {"/a": make_app("/a", instances=1), "/b": make_app("/b", instances=4)}
    [row] = snapshot.deployment_rows([d], specs, {"/a": 1, "/b": 3}, {})
    # Marathon's currentStep is the step in progress; one of two done, 3 of 4 of the second.
    assert (row["currentStep"], row["totalSteps"]) == (2, 2)
    assert row["progress"] == (1 + 3 / 4) / 2
    assert row["state"] == "in progress" and row["waiting"] == []
    assert row["currentActions"] == [{"action": "ScaleApplication", "app": "/b"}]
    # Instances that merely await the next pass are not "waiting": only a rejection or a
    # backoff is.
    pass_wait = {"count": 1, "reason": "waiting for a pass", "rejection": None,
                 "delayedUntil": None, "since": None}
    [row] = snapshot.deployment_rows([d], specs, {"/b": 3}, {"/b": pass_wait})
    assert row["state"] == "in progress"
    rejected = {**pass_wait, "reason": "3 nodes: UNIQUE hostname",
                "rejection": "3 nodes: UNIQUE hostname"}
    [row] = snapshot.deployment_rows([d], specs, {"/b": 3}, {"/b": rejected})
    assert row["state"] == "waiting"
    assert row["waiting"] == [{"app": "/b", "count": 1, "reason": "3 nodes: UNIQUE hostname"}]
