"""kubectl objects → what Dromos does with them (the pure half of the kubectl bridge)."""

from __future__ import annotations

import json
from typing import Any

from scheduler.ha.bridge import Apply, Echo, Invalid, classify, key_of


def obj(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": spec}


def test_an_applied_app_without_id_takes_its_name() -> None:
    got = classify("App", obj("web", {"cmd": "sleep 60", "instances": 2}), None)
    assert got == Apply("/web", {"cmd": "sleep 60", "instances": 2, "id": "/web"})


def test_an_applied_app_keeps_its_own_id() -> None:
    assert key_of("App", obj("web", {"id": "/team/web"})) == "/team/web"


def test_dromos_own_write_coming_back_is_an_echo() -> None:
    spec = {"id": "/web", "cmd": "sleep 60", "instances": 2}
    assert classify("App", obj("web-1", spec), json.dumps(spec)) == Echo("/web")


def test_a_bad_app_is_invalid_with_the_rest_apis_paths() -> None:
    got = classify("App", obj("bad", {"cmd": "sleep 1", "instances": -1,
                                      "upgradeStrategy": {"minimumHealthCapacity": 2}}), None)
    assert isinstance(got, Invalid) and got.key == "/bad"
    paths = dict(got.details)
    assert "/instances" in paths and "/upgradeStrategy/minimumHealthCapacity" in paths
    assert "/instances" in got.condition_message()


def test_jobs_take_their_name_and_are_validated() -> None:
    hourly = {"command": "echo hi", "schedule": "R/2026-01-01T00:00:00Z/PT1H"}
    good = classify("Job", obj("etl", hourly), None)
    assert isinstance(good, Apply) and good.key == "etl" and good.definition["name"] == "etl"
    bad = classify("Job", obj("etl", {"command": "echo hi", "schedule": "whenever"}), None)
    assert isinstance(bad, Invalid) and bad.details
