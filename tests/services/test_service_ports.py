"""Service port assignment: auto, fixed, clashes (422 with the field's path), stability
across updates, range exhaustion; and the cached allocator the orchestrator uses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from api.marathon import prefers_text
from scheduler.config import ConfigError, parse_port_range
from scheduler.model.app import AppSpec, parse_app
from scheduler.model.task import Task, TaskState
from scheduler.model.validation import SpecError
from scheduler.services.service_ports import (
    ServicePortAllocator,
    assign,
    endpoints_text,
    held_ports,
    service_ports,
    taken_ports,
)
from scheduler.store.memory import MemoryStore

R = (10000, 10009)
V = "2026-01-01T00:00:00.000Z"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def app(app_id: str = "/web", **fields: Any) -> AppSpec:
    return parse_app({"id": app_id, "cmd": "sleep 1", **fields})


def bridge(app_id: str, *mappings: dict[str, Any]) -> AppSpec:
    return app(app_id, cmd=None, container={
        "type": "DOCKER", "docker": {"image": "nginx"}, "portMappings": list(mappings)})


# ------------------------------------------------------------------ assignment by table

@pytest.mark.parametrize(("fields", "taken", "expected"), [
    # Marathon gives an app without ports one port; it gets the lowest free service port.
    ({}, {}, [10000]),
    ({"portDefinitions": [{"port": 0}, {"port": 0}]}, {10000: "/a", 10002: "/b"},
     [10001, 10003]),
    # Fixed ports are kept, even outside the range; auto ones skip them.
    ({"portDefinitions": [{"port": 10000}, {"port": 0}]}, {}, [10000, 10001]),
    ({"portDefinitions": [{"port": 8080}, {"port": 0}]}, {10000: "/a"}, [8080, 10001]),
    # The legacy ports list means the same thing.
    ({"ports": [0, 0]}, {}, [10000, 10001]),
    # An app with no port gets no service port.
    ({"portDefinitions": []}, {}, []),
    # The app's own entries in `taken` do not block it.
    ({"portDefinitions": [{"port": 10000}]}, {10000: "/web"}, [10000]),
])
def test_assign_table(fields: dict[str, Any], taken: dict[int, str],
                      expected: list[int]) -> None:
    out = assign(app(**fields), taken, None, R)
    assert service_ports(out) == expected
    # Written into the definition, the way GET /v2/apps shows it.
    assert [p["port"] for p in out.to_marathon()["portDefinitions"]] == expected
    assert out.to_marathon()["ports"] == expected


def test_names_protocols_and_labels_survive() -> None:
    spec = app(portDefinitions=[{"port": 0, "name": "http", "protocol": "tcp",
                                 "labels": {"VIP_0": "x"}}, {"port": 0, "protocol": "udp"}])
    out = assign(spec, {}, None, R)
    defs = out.to_marathon()["portDefinitions"]
    assert defs == [{"port": 10000, "name": "http", "protocol": "tcp", "labels": {"VIP_0": "x"}},
                    {"port": 10001, "protocol": "udp", "labels": {}}]


def test_bridge_mappings_get_service_ports_not_host_ports() -> None:
    spec = bridge("/db", {"containerPort": 5432, "hostPort": 0},
                  {"containerPort": 80, "hostPort": 0, "servicePort": 10005})
    out = assign(spec, {10000: "/a"}, None, R)
    assert out.container is not None and out.container.portMappings is not None
    assert [m.servicePort for m in out.container.portMappings] == [10001, 10005]
    assert [m.hostPort for m in out.container.portMappings] == [0, 0]  # still dynamic


def test_require_ports_makes_the_service_port_the_host_port() -> None:
    # Marathon: with requirePorts the (assigned) service port is also the task's host port.
    out = assign(app(requirePorts=True, portDefinitions=[{"port": 0}]), {}, None, R)
    assert service_ports(out) == [10000]
    assert out.fixed_host_ports == (10000,)
    # Without requirePorts the number is only the service port: host ports stay dynamic.
    free = assign(app(portDefinitions=[{"port": 0}]), {}, None, R)
    assert free.fixed_host_ports == () and free.dynamic_port_count == 1


def test_fixed_port_taken_by_another_app_is_422_at_its_path() -> None:
    spec = app(portDefinitions=[{"port": 0}, {"port": 10003}])
    with pytest.raises(SpecError) as e:
        assign(spec, {10003: "/other"}, None, R)
    assert e.value.to_json() == {
        "message": "Object is not valid",
        "details": [{"path": "/portDefinitions/1/port", "errors": [
            "service port 10003 is already used by app /other; choose another port or 0 "
            "to get a free one from 10000-10009"]}],
    }


def test_clashes_in_bridge_mode_name_the_mapping() -> None:
    spec = bridge("/db", {"containerPort": 1, "servicePort": 10001},
                  {"containerPort": 2, "servicePort": 10001},
                  {"containerPort": 3, "hostPort": 10004})
    with pytest.raises(SpecError) as e:
        assign(spec, {10004: "/other"}, None, R)
    paths = [p for p, _ in e.value.details]
    assert paths == ["/container/portMappings/1/servicePort",
                     "/container/portMappings/2/hostPort"]


def test_auto_ports_avoid_other_apps_fixed_host_ports() -> None:
    other = app("/fixed", requirePorts=True, portDefinitions=[{"port": 10000}])
    legacy = bridge("/legacy", {"containerPort": 1, "hostPort": 10001, "servicePort": 9000})
    taken = taken_ports([other, legacy])
    assert taken == {10000: "/fixed", 10001: "/legacy", 9000: "/legacy"}
    assert service_ports(assign(app(), taken, None, R)) == [10002]


def test_exhausted_range_is_422_with_a_way_out() -> None:
    taken = {p: f"/a{p}" for p in range(10000, 10010)}
    with pytest.raises(SpecError) as e:
        assign(app(portDefinitions=[{"port": 8080}, {"port": 0}]), taken, None, R)
    ((path, [msg]),) = e.value.details
    assert path == "/portDefinitions/1/port"
    assert msg.startswith("no free service port left in 10000-10009")
    assert "--service-ports" in msg


# ------------------------------------------------------------------ stability across updates

def test_update_without_ports_keeps_the_assigned_ones() -> None:
    first = assign(app(portDefinitions=[{"port": 0}, {"port": 0}]), {10000: "/a"}, None, R)
    assert service_ports(first) == [10001, 10002]
    # Another app took the lowest free port meanwhile; a replace-PUT without ports
    # (partialUpdate=false) still gets the app's own ports back, in order.
    again = assign(app(portDefinitions=[{"port": 0}, {"port": 0}], cmd="sleep 2"),
                   {10000: "/a", 10003: "/b"}, first, R)
    assert service_ports(again) == [10001, 10002]
    # No ports at all in the PUT: the default single port keeps the first one.
    assert service_ports(assign(app(cmd="sleep 3"), {}, first, R)) == [10001]


def test_update_adding_a_port_keeps_old_and_adds_new() -> None:
    first = assign(app(), {}, None, R)
    grown = assign(app(portDefinitions=[{"port": 0}, {"port": 0}]), {10001: "/b"}, first, R)
    assert service_ports(grown) == [10000, 10002]


def test_update_with_a_fixed_port_frees_the_old_one_for_zeros() -> None:
    first = assign(app(portDefinitions=[{"port": 0}, {"port": 0}]), {}, None, R)  # 10000,1
    # Port 0 now fixed to 10001 (which the app already had): port 1 recycles 10000.
    out = assign(app(portDefinitions=[{"port": 10001}, {"port": 0}]), {}, first, R)
    assert service_ports(out) == [10001, 10000]


def test_recycled_ports_outside_the_range_are_not_reused() -> None:
    first = assign(app(portDefinitions=[{"port": 8080}]), {}, None, R)
    assert service_ports(assign(app(), {}, first, R)) == [10000]


def test_put_back_of_get_output_is_a_no_op() -> None:
    # Clients PUT back what they fetched (ports AND portDefinitions): same definition.
    first = assign(app(portDefinitions=[{"port": 0, "name": "http"}]), {}, None, R)
    body = {k: v for k, v in first.to_marathon().items() if k != "version"}
    again = assign(parse_app(body), {10000: "/web"}, first, R)
    assert again == first


# ------------------------------------------------------------------ the orchestrator's allocator

def stored(spec: AppSpec) -> AppSpec:
    return spec.model_copy(update={"version": V})


def test_allocator_indexes_the_store_and_never_hands_out_a_port_twice() -> None:
    store = MemoryStore()
    alloc = ServicePortAllocator(store.list_apps, R)
    a = alloc.assign(app("/a"), None)
    store.create_app(stored(a))
    b = alloc.assign(app("/b", portDefinitions=[{"port": 0}, {"port": 0}]), None)
    store.create_app(stored(b))
    assert service_ports(a) == [10000] and service_ports(b) == [10001, 10002]
    # An assignment that is never stored (its write failed) only wastes ports.
    alloc.assign(app("/ghost"), None)
    assert service_ports(alloc.assign(app("/c"), None)) == [10004]
    with pytest.raises(SpecError):
        alloc.assign(app("/d", portDefinitions=[{"port": 10001}]), None)


def test_allocator_rebuilds_when_a_stale_entry_blocks() -> None:
    store = MemoryStore()
    alloc = ServicePortAllocator(store.list_apps, R)
    a = alloc.assign(app("/a", portDefinitions=[{"port": 10005}]), None)
    store.create_app(stored(a))
    store.delete_app("/a")  # the index still says 10005 is /a's
    d = alloc.assign(app("/d", portDefinitions=[{"port": 10005}]), None)
    assert service_ports(d) == [10005]
    assert held_ports(d) == {10005}


def test_allocator_range_exhaustion_after_rebuild_is_real() -> None:
    store = MemoryStore()
    alloc = ServicePortAllocator(store.list_apps, (10000, 10001))
    for name in ("/a", "/b"):
        store.create_app(stored(alloc.assign(app(name), None)))
    with pytest.raises(SpecError) as e:
        alloc.assign(app("/c"), None)
    assert "no free service port left in 10000-10001" in e.value.details[0][1][0]
    store.delete_app("/a")
    assert service_ports(alloc.assign(app("/c"), None)) == [10000]


# ------------------------------------------------------------------ GET /v2/tasks as text/plain

def _task(app_id: str, n: int, ports: tuple[int, ...], state: TaskState = TaskState.RUNNING,
          killing: bool = False) -> Task:
    return Task(id=f"{n}", app_id=app_id, host="node-a", version=V, state=state,
                staged_at=T0, ports=ports, kill_requested_at=T0 if killing else None)


def test_endpoints_text_is_marathons_format() -> None:
    web = app("/prod/web", portDefinitions=[{"port": 10000}, {"port": 10001}])
    bare = app("/bare", portDefinitions=[])
    checked = app("/checked", portDefinitions=[{"port": 10002}],
                  healthChecks=[{"protocol": "TCP"}])
    tasks = [
        _task("/prod/web", 1, (31000, 31001)),
        _task("/prod/web", 2, (31002,)),                        # fewer ports: Marathon's 0
        _task("/prod/web", 3, (31004, 31005), TaskState.STARTING),
        _task("/prod/web", 4, (31006, 31007), killing=True),
        _task("/bare", 5, ()),
        _task("/checked", 6, (31010,)),
        _task("/checked", 7, (31011,)),
    ]
    text = endpoints_text([web, bare, checked], tasks,
                          up=lambda t, spec: t.id != "7", host_of=lambda t: "127.0.0.1")
    assert text == (
        "bare\t \t127.0.0.1 \n"
        "checked\t10002\t127.0.0.1:31010\t\n"
        "prod_web\t10000\t127.0.0.1:31000\t127.0.0.1:31002\t\n"
        "prod_web\t10001\t127.0.0.1:31001\t127.0.0.1:0\t\n"
    )


@pytest.mark.parametrize(("accept", "text"), [
    ("text/plain", True),
    ("text/plain;q=0.9, application/json;q=0.5", True),
    ("application/json", False),
    ("*/*", False),
    ("", False),
    ("text/plain, */*", False),       # a tie goes to JSON
    ("application/json;q=0.1, text/plain", True),
])
def test_accept_negotiation(accept: str, text: bool) -> None:
    assert prefers_text(accept) is text


@pytest.mark.parametrize(("raw", "expected"), [
    ("10000-20000", (10000, 20000)), (" 8000 - 8010 ", (8000, 8010)), ("9000", (9000, 9000))])
def test_port_range_flag(raw: str, expected: tuple[int, int]) -> None:
    assert parse_port_range(raw) == expected


@pytest.mark.parametrize("raw", ["20000-10000", "0-10", "a-b", "1-70000", ""])
def test_bad_port_range_flag(raw: str) -> None:
    with pytest.raises(ConfigError):
        parse_port_range(raw)


def test_assign_searches_from_start() -> None:
    # The allocator passes the lowest port that may be free; below it nothing is searched.
    assert service_ports(assign(app("/a"), {}, None, R, start=10005)) == [10005]
    assert service_ports(assign(app("/a"), {10005: "/b"}, None, R, start=10005)) == [10006]
    assert service_ports(assign(app("/a"), {}, None, R, start=9000)) == [10000]


def test_allocator_keeps_handing_out_the_lowest_free_port() -> None:
    store = MemoryStore()
    alloc = ServicePortAllocator(store.list_apps, R)
    store.create_app(stored(alloc.assign(app("/a"), None)))  # 10000
    store.create_app(stored(alloc.assign(app("/f", portDefinitions=[{"port": 10002}]), None)))
    assert service_ports(alloc.assign(app("/b"), None)) == [10001]
    assert service_ports(alloc.assign(app("/c"), None)) == [10003]  # 10002 is /f's
    alloc.port_range = (10005, 10009)  # a new range: the search starts at its low end
    assert service_ports(alloc.assign(app("/d"), None)) == [10005]
    alloc.port_range = R
    store.delete_app("/a")
    alloc.forget()  # rebuilt from the store: /a's port is free again
    assert service_ports(alloc.assign(app("/e"), None)) == [10000]
