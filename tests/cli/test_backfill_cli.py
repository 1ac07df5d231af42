"""`dromos jobs backfill` against a real `dromos serve` (local runtime, real processes)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest

from scheduler.cli import EXIT_OK
from tests.cli.test_cli import Cli
from tests.support.server import Server

pytestmark = pytest.mark.integration


@pytest.fixture
def cli(dromos: Server, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(dromos, capsys)


def test_backfill_runs_each_past_day_once_and_reports_progress(cli: Cli) -> None:
    year = datetime.now(UTC).year - 1  # a whole past year: the scheduler runs none itself
    job = {"name": "bf-daily", "command": "echo day", "cpus": 0.1, "mem": 16,
           "schedule": f"R/{year}-01-01T02:00:00Z/P1D", "epsilon": "PT1H"}
    r = httpx.post(cli.srv.url + "/scheduler/iso8601", json=job, timeout=10)
    assert r.status_code == 204, r.text
    code, out, err = cli("jobs", "backfill", "bf-daily", "--from", f"{year}-03-01T00:00:00Z",
                         "--to", f"{year}-03-03T23:59:59Z", "--concurrency", "2", "--json")
    assert code == EXIT_OK, err
    final = json.loads(out)
    assert (final["total"], final["succeeded"], final["failed"], final["status"]) == (
        3, 3, 0, "finished")
    assert "backfilling bf-daily: 3 occurrence(s)" in err
    assert "3/3 done: 3 succeeded" in err  # the progress line (not a terminal here)
    # Once more over an overlapping range: the days that ran are not run again.
    code, out, err = cli("jobs", "backfill", "bf-daily", "--from", f"{year}-03-03T00:00:00Z",
                         "--to", f"{year}-03-04T23:59:59Z", "--json")
    assert code == EXIT_OK, err
    again = json.loads(out)
    assert (again["total"], again["skipped"], again["succeeded"]) == (2, 1, 1)
