"""Node files and port ranges."""

from __future__ import annotations

import pytest

from scheduler.model.node import parse_nodes
from scheduler.model.resources import parse_port_ranges, port_count
from scheduler.model.validation import SpecError


def test_nodes_parse_with_attributes() -> None:
    [n] = parse_nodes([{"hostname": "a", "cpus": 4, "mem": 4096, "disk": 100,
                        "ports": "31000-31099", "attributes": {"rack": "r1"}}])
    assert n.attribute("hostname") == "a"
    assert n.attribute("rack") == "r1"
    assert n.attribute("zone") is None
    assert port_count(n.ports) == 100


def test_bad_nodes_report_each_path() -> None:
    with pytest.raises(SpecError) as exc:
        parse_nodes([{"hostname": "a", "cpus": 0, "mem": 1},
                     {"hostname": "a", "cpus": 1, "mem": 1, "ports": "9-8"}])
    paths = dict(exc.value.details)
    assert "/0/cpus" in paths
    assert "/1/ports" in paths


def test_duplicate_hostnames_are_rejected() -> None:
    with pytest.raises(SpecError) as exc:
        parse_nodes([{"hostname": "a", "cpus": 1, "mem": 1}, {"hostname": "a", "cpus": 1,
                                                              "mem": 1}])
    assert "/1/hostname" in dict(exc.value.details)


@pytest.mark.parametrize("bad", ["31000-", "a-b", "0-10", "100-50", "1-10,5-20"])
def test_bad_port_ranges(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_port_ranges(bad)


def test_port_ranges_are_sorted_and_counted() -> None:
    assert parse_port_ranges("32000,31000-31001") == ((31000, 31001), (32000, 32000))
