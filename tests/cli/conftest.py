"""The `dromos` CLI against a real `dromos serve` (local runtime, three nodes)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.runtimes.conftest import cleanup_local_state
from tests.support.server import Server, wait_for

NODES = [
    {"hostname": f"node-{c}", "cpus": 2, "mem": 1024, "disk": 4000,
     "ports": f"{36000 + 100 * i}-{36000 + 100 * i + 29}",
     "attributes": {"rack": f"r{i % 2 + 1}"}}
    for i, c in enumerate("abc")
]
SLEEPER = {"id": "/cli/sleeper", "cmd": "echo sleeper-started; exec sleep 600",
           "instances": 2, "cpus": 0.1, "mem": 16}
JOBS = [
    ("iso8601", {"name": "hello", "command": "echo hello-from-job; echo to-stderr >&2",
                 "schedule": "R/2030-01-01T00:00:00Z/PT1H", "cpus": 0.1, "mem": 16}),
    ("iso8601", {"name": "broken", "command": "echo failing; exit 2", "retries": 0,
                 "schedule": "cron: 30 4 * * *", "cpus": 0.1, "mem": 16}),
]


def start_server(tmp: Path, *extra: str) -> Server:
    nodes_file = tmp / "nodes.json"
    nodes_file.write_text(json.dumps(NODES))
    srv = Server(tmp / "state", nodes_file, *extra)
    srv.start()
    return srv


@pytest.fixture(scope="package")
def dromos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("cli"))
    try:
        httpx.post(srv.url + "/v2/apps", json=SLEEPER).raise_for_status()
        for kind, job in JOBS:
            httpx.post(f"{srv.url}/scheduler/{kind}", json=job).raise_for_status()
        wait_for(lambda: srv.get("/v2/apps/cli/sleeper")["app"]["tasksRunning"] == 2, 30,
                 "/cli/sleeper to run")
        yield srv
    finally:
        srv.stop()
        cleanup_local_state(srv.state)
