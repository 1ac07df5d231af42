"""Bounded input at the HTTP edge (issue 11, defects 2, 3 and 7): request body size, non-finite
numbers (nothing stored, strict JSON out), definitions that can never launch."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.limits import DEFAULT_MAX_BODY_BYTES, strict_dumps
from scheduler.config import Credentials
from scheduler.orchestrator import Orchestrator

MiB = 1024 * 1024


def raw_post(client: TestClient, path: str, text: str) -> Any:
    return client.post(path, content=text, headers={"Content-Type": "application/json"})


# --- defect 2: non-finite numbers ----------------------------------------------------------

@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN", "1e400", '"inf"'])
def test_non_finite_app_numbers_are_422_and_nothing_is_stored(
        client: TestClient, orchestrator: Orchestrator, number: str) -> None:
    r = raw_post(client, "/v2/apps", f'{{"id": "/web", "cmd": "sleep 9", "cpus": {number}}}')
    assert r.status_code == 422
    assert "/cpus" in [d["path"] for d in r.json()["details"]]
    assert orchestrator.store.list_apps() == []
    assert client.get("/v2/apps").json() == {"apps": []}


@pytest.mark.parametrize("method", ["put", "patch"])
def test_put_and_patch_refuse_non_finite_numbers(client: TestClient, orchestrator: Orchestrator,
                                                 method: str) -> None:
    assert client.post("/v2/apps", json={"id": "/web", "cmd": "sleep 9", "instances": 0}
                       ).status_code == 201
    r = client.request(method.upper(), "/v2/apps/web", content='{"mem": Infinity}',
                       headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert orchestrator.app("/web").mem == 128
    json.loads(client.get("/v2/apps").text, parse_constant=_refuse)


def test_non_finite_numbers_in_free_form_fields_are_refused(client: TestClient) -> None:
    r = raw_post(client, "/v2/apps", '{"id": "/web", "cmd": "x", '
                                     '"unreachableStrategy": {"inactiveAfterSeconds": NaN}}')
    assert r.status_code == 422
    assert r.json()["details"][0]["path"] == "/unreachableStrategy/inactiveAfterSeconds"


def test_non_finite_numbers_in_groups_and_jobs_are_refused(client: TestClient) -> None:
    r = raw_post(client, "/v2/groups",
                 '{"id": "/g", "apps": [{"id": "a", "cmd": "x", "mem": -Infinity}]}')
    assert r.status_code == 422
    assert "/apps/0/mem" in [d["path"] for d in r.json()["details"]]
    r = raw_post(client, "/v2/groups/g", '{"scaleBy": Infinity}')
    assert r.status_code in (404, 422)
    r = raw_post(client, "/scheduler/iso8601",
                 '{"name": "j", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/PT1H",'
                 ' "disk": 1e999}')
    assert r.status_code == 422
    assert client.get("/scheduler/jobs").json() == []


def _refuse(constant: str) -> Any:
    raise AssertionError(f"response holds the non-JSON constant {constant}")


def test_strict_dumps_never_emits_non_finite_numbers() -> None:
    text = strict_dumps({"a": [1.5, math.inf, {"b": math.nan}], "c": -math.inf})
    assert json.loads(text, parse_constant=_refuse) == {"a": [1.5, None, {"b": None}],
                                                        "c": None}


def test_a_stored_non_finite_number_does_not_break_listing(client: TestClient,
                                                           orchestrator: Orchestrator) -> None:
    # Validation refuses it; an object that bypassed validation (an old store) must still
    # leave GET /v2/apps and the status page's state valid JSON for everyone.
    assert client.post("/v2/apps", json={"id": "/web", "cmd": "sleep 9", "instances": 0}
                       ).status_code == 201
    spec = orchestrator.app("/web")
    # The store re-validates what it reads, so the object is put where the API reads it.
    bad = spec.model_copy(update={"mem": math.inf, "version": "2030-01-01T00:00:00.000Z"})
    orchestrator._apps()["/web"] = bad
    orchestrator.apps_generation += 1
    assert orchestrator.app("/web").mem == math.inf
    for path in ("/v2/apps", "/v2/apps/web", "/ui/state"):
        r = client.get(path)
        assert r.status_code == 200, path
        json.loads(r.text, parse_constant=_refuse)


# --- defect 3: request body size -----------------------------------------------------------

def test_a_body_over_the_limit_is_413_by_content_length(client: TestClient,
                                                        orchestrator: Orchestrator) -> None:
    big = json.dumps({"id": "/big", "cmd": "x", "labels": {"pad": "x" * (4 * MiB)}})
    r = raw_post(client, "/v2/apps", big)
    assert r.status_code == 413
    assert "limit" in r.json()["message"]
    assert orchestrator.store.list_apps() == []


def test_a_body_just_under_the_limit_reaches_validation(client: TestClient) -> None:
    pad = "x" * (DEFAULT_MAX_BODY_BYTES - 200)
    r = raw_post(client, "/v2/apps", json.dumps({"id": "/big", "cmd": "x", "description": pad}))
    assert r.status_code == 422  # read and validated (unknown field), not refused for size


def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(orchestrator: Orchestrator) -> None:
    """Driven at the ASGI level so the test sees how much of the body the server pulled: no
    Content-Length, 1 MiB chunks without end; the app must stop reading after the limit."""
    app = create_app(orchestrator, Credentials(), max_body_bytes=3 * MiB)
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b" " * MiB, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v2/apps", "raw_path": b"/v2/apps",
             "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
             "client": ("127.0.0.1", 1), "server": ("test", 80)}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert pulled == 4  # 3 MiB allowed, the fourth chunk crosses the limit: no more read
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert "limit" in json.loads(body)["message"]


def test_the_limit_is_configurable(orchestrator: Orchestrator) -> None:
    c = TestClient(create_app(orchestrator, Credentials(), max_body_bytes=1000))
    r = c.post("/v2/apps", json={"id": "/web", "cmd": "x", "labels": {"a": "b" * 2000}})
    assert r.status_code == 413
    assert c.post("/v2/apps", json={"id": "/web", "cmd": "x", "instances": 0}
                  ).status_code == 201


# --- defect 7 at the API -------------------------------------------------------------------

@pytest.mark.parametrize(("body", "path"), [
    ({"id": "/web", "cmd": "x", "instances": True}, "/instances"),
    ({"id": "/web", "cmd": "a\u0000b"}, "/cmd"),
    ({"id": "/web", "cmd": "x", "env": {"A=B": "c"}}, "/env/A=B"),
    ({"id": "/" + "a" * 300, "cmd": "x"}, "/id"),
])
def test_definitions_that_can_never_launch_are_422(client: TestClient, body: dict[str, Any],
                                                   path: str) -> None:
    r = client.post("/v2/apps", json=body)
    assert r.status_code == 422
    assert path in [d["path"] for d in r.json()["details"]]


def test_a_very_long_time_zone_is_422_not_500(client: TestClient) -> None:
    r = client.post("/scheduler/iso8601", json={
        "name": "j", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/PT1H",
        "scheduleTimeZone": "A" * 5000})
    assert r.status_code == 422
    assert r.json()["details"][0]["path"] == "/scheduleTimeZone"


@pytest.mark.parametrize("name", [".", "..", "abc\n"])
def test_dot_and_newline_job_names_are_422(client: TestClient, name: str) -> None:
    r = client.post("/scheduler/iso8601", json={
        "name": name, "command": "true", "schedule": "R/2030-01-01T00:00:00Z/PT1H"})
    assert r.status_code == 422


@pytest.mark.parametrize(("first", "second"), [("/g/x", "/g"), ("/g", "/g/x")])
def test_an_app_and_a_group_cannot_share_an_id(client: TestClient, orchestrator: Orchestrator,
                                               first: str, second: str) -> None:
    assert client.post("/v2/apps", json={"id": first, "cmd": "x", "instances": 0}
                       ).status_code == 201
    for r in (client.post("/v2/apps", json={"id": second, "cmd": "x", "instances": 0}),
              client.put(f"/v2/apps{second}", json={"cmd": "x", "instances": 0})):
        assert r.status_code == 422
        assert r.json()["details"][0]["path"] == "/id"
    assert [a.id for a in orchestrator.apps()] == [first]


def test_an_app_cannot_take_the_id_of_an_empty_group(client: TestClient) -> None:
    assert client.post("/v2/groups", json={"id": "/empty"}).status_code == 201
    r = client.post("/v2/apps", json={"id": "/empty", "cmd": "x", "instances": 0})
    assert r.status_code == 422
