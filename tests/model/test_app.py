"""App definitions: Marathon defaults, validation paths, derived views."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.model.app import normalize_app_id, parse_app
from scheduler.model.validation import SpecError


def errors_of(data: Any) -> dict[str, list[str]]:
    with pytest.raises(SpecError) as exc:
        parse_app(data)
    return dict(exc.value.details)


def test_marathon_defaults_are_filled() -> None:
    app = parse_app({"id": "web", "cmd": "sleep 100"})
    assert app.id == "/web"
    assert (app.instances, app.cpus, app.mem, app.disk) == (1, 1.0, 128.0, 0.0)
    assert app.upgradeStrategy.minimumHealthCapacity == 1.0
    assert app.upgradeStrategy.maximumOverCapacity == 1.0
    assert (app.backoffSeconds, app.backoffFactor, app.maxLaunchDelaySeconds) == (1, 1.15, 300)
    assert app.killSelection.value == "YOUNGEST_FIRST"


def test_app_without_ports_gets_one_dynamic_port_like_marathon() -> None:
    app = parse_app({"id": "/web", "cmd": "x"})
    assert [p.port for p in app.port_definitions] == [0]
    assert app.dynamic_port_count == 1
    assert app.to_marathon()["ports"] == [0]


def test_empty_port_definitions_means_no_ports() -> None:
    app = parse_app({"id": "/web", "cmd": "x", "portDefinitions": []})
    assert app.port_definitions == []


def test_require_ports_fixes_host_ports() -> None:
    app = parse_app({"id": "/web", "cmd": "x", "requirePorts": True,
                     "portDefinitions": [{"port": 31005}, {"port": 0}]})
    assert app.fixed_host_ports == (31005,)
    assert app.dynamic_port_count == 1


def test_health_check_defaults() -> None:
    hc = parse_app({"id": "/w", "cmd": "x", "healthChecks": [{}]}).healthChecks[0]
    assert (hc.protocol.value, hc.path, hc.gracePeriodSeconds, hc.intervalSeconds,
            hc.timeoutSeconds, hc.maxConsecutiveFailures) == ("HTTP", "/", 300, 60, 20, 3)
    assert hc.to_json()["portIndex"] == 0


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"id": "/Web", "cmd": "x"}, "/id"),
        ({"id": "/web/tasks", "cmd": "x"}, "/id"),
        ({"id": "\r", "cmd": "x"}, "/id"),
        ({"id": " / ", "cmd": "x"}, "/id"),
        ({"id": "/w", "cmd": "x", "instances": -1}, "/instances"),
        ({"id": "/w", "cmd": "x", "cpus": 0}, "/cpus"),
        ({"id": "/w", "cmd": "x", "upgradeStrategy": {"minimumHealthCapacity": 1.5}},
         "/upgradeStrategy/minimumHealthCapacity"),
        ({"id": "/w", "cmd": "x", "constraints": [["hostname", "NOPE"]]}, "/constraints/0"),
        ({"id": "/w", "cmd": "x", "constraints": [["rack", "MAX_PER", "zero"]]},
         "/constraints/0"),
        ({"id": "/w", "cmd": "x", "healthChecks": [{"protocol": "COMMAND"}]}, "/healthChecks/0"),
        ({"id": "/w", "cmd": "x", "healthChecks": [{"intervalSeconds": 0}]},
         "/healthChecks/0/intervalSeconds"),
        ({"id": "/w", "cmd": "x", "instancse": 3}, "/instancse"),
        ({"id": "/w", "cmd": "x", "env": {"A": 1}}, "/env/A"),
    ],
)
def test_validation_errors_carry_the_json_path(data: dict[str, Any], path: str) -> None:
    assert path in errors_of(data)


def test_cmd_and_args_are_exclusive() -> None:
    errs = errors_of({"id": "/w", "cmd": "x", "args": ["y"]})
    assert any("not both" in m for msgs in errs.values() for m in msgs)


def test_neither_cmd_nor_args_nor_container_is_rejected() -> None:
    errors_of({"id": "/w"})


def test_health_check_port_index_must_exist() -> None:
    errs = errors_of({"id": "/w", "cmd": "x", "portDefinitions": [],
                      "healthChecks": [{"protocol": "HTTP"}]})
    assert any("out of range" in m for msgs in errs.values() for m in msgs)


def test_read_only_fields_clients_put_back_are_ignored() -> None:
    app = parse_app({"id": "/w", "cmd": "x", "tasks": [], "tasksRunning": 3,
                     "deployments": [{"id": "d"}], "version": "2020-01-01T00:00:00.000Z",
                     "versionInfo": {}, "lastTaskFailure": {}})
    assert app.version is None


def test_to_marathon_round_trips() -> None:
    original = parse_app({"id": "/a/b", "cmd": "x", "instances": 2, "labels": {"k": "v"},
                          "constraints": [["rack", "GROUP_BY", "2"]],
                          "healthChecks": [{"protocol": "TCP", "portIndex": 0}]})
    again = parse_app(original.to_marathon())
    assert again.to_marathon() == original.to_marathon()


def test_non_object_body_is_rejected_with_root_path() -> None:
    assert "" in errors_of([1, 2])


@pytest.mark.parametrize(("raw", "norm"), [("web", "/web"), ("/a/b/", "/a/b"),
                                           ("a//b", "/a/b")])
def test_ids_are_normalised(raw: str, norm: str) -> None:
    assert normalize_app_id(raw) == norm
