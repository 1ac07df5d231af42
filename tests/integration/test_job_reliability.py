"""Jepsen-style check of the job engine: random jobs run while Dromos is kill -9'ed and
restarted several times. Every run writes its start and end to a log from inside the task,
so the checker sees what really ran, not what Dromos believes.

Pass: every target time t older than (read time - epsilon - duration) has exactly one
complete run, starting in [t, t + epsilon + 1 s]; no target has two runs.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.support.server import Server, serving

pytestmark = pytest.mark.integration

NODES = [{"hostname": "node-a", "cpus": 4, "mem": 4096, "disk": 1000,
          "ports": "35000-35049"}]


@dataclass(frozen=True)
class JobPlan:
    name: str
    start: datetime
    interval: int
    count: int
    duration: float
    epsilon: int

    def targets(self) -> list[datetime]:
        return [self.start + timedelta(seconds=self.interval * k) for k in range(self.count)]


def make_plans(rng: random.Random, now: datetime, n: int) -> list[JobPlan]:
    plans = []
    for i in range(n):
        plans.append(JobPlan(
            name=f"jepsen-{i}",
            start=now + timedelta(seconds=rng.randint(4, 8)),
            # Longer than a restart (so one outage hides at most one occurrence) and longer
            # than a run (so concurrent:false never has to skip).
            interval=rng.randint(5, 8),
            count=rng.randint(3, 5),
            duration=round(rng.uniform(0.2, 2.0), 2),
            epsilon=rng.randint(4, 6),
        ))
    return plans


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with serving(tmp_path, NODES) as srv:
        yield srv


def test_no_lost_and_no_duplicate_runs_across_kill_9(server: Server, tmp_path: Path) -> None:
    rng = random.Random(20261123)
    log = tmp_path / "runs.log"
    log.touch()
    now = datetime.now(UTC).replace(microsecond=0)
    plans = make_plans(rng, now, 5)
    for p in plans:
        # Each line is one short O_APPEND write, so lines from concurrent runs never mix.
        command = (
            f'echo "start $DROMOS_SCHEDULED_TIME $(date +%s.%N) $DROMOS_RUN_ID" >> {log}; '
            f"sleep {p.duration}; "
            f'echo "end $DROMOS_SCHEDULED_TIME $(date +%s.%N) $DROMOS_RUN_ID" >> {log}'
        )
        body = {"name": p.name, "command": command, "cpus": 0.1, "mem": 16,
                "schedule": f"R{p.count}/{p.start:%Y-%m-%dT%H:%M:%SZ}/PT{p.interval}S",
                "epsilon": f"PT{p.epsilon}S", "retries": 0}
        r = httpx.post(server.url + "/scheduler/iso8601", json=body)
        assert r.status_code == 204, r.text

    last_target = max(t for p in plans for t in p.targets())
    deadline = last_target + timedelta(seconds=max(p.duration for p in plans) + 4)
    crashes = 0
    while datetime.now(UTC) < deadline:
        time.sleep(rng.uniform(3.0, 6.0))
        if datetime.now(UTC) >= deadline - timedelta(seconds=3):
            break
        server.kill9()
        crashes += 1
        time.sleep(rng.uniform(0.0, 0.5))
        server.start()
    time.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()))
    read_time = datetime.now(UTC)
    assert crashes >= 3

    starts: dict[str, list[tuple[float, str]]] = defaultdict(list)
    ends: dict[str, list[str]] = defaultdict(list)
    for line in log.read_text().splitlines():
        kind, scheduled, at, run_id = line.split(" ", 3)
        (starts if kind == "start" else ends)[scheduled].append(
            (float(at), run_id) if kind == "start" else run_id)  # type: ignore[arg-type]

    problems = []
    for p in plans:
        for t in p.targets():
            if t > read_time - timedelta(seconds=p.epsilon + p.duration):
                continue
            key = t.strftime("%Y-%m-%dT%H:%M:%S.000Z")
            mine = [s for s in starts.get(key, []) if s[1].startswith(p.name + ":")]
            if len(mine) != 1:
                problems.append(f"{p.name} @ {key}: {len(mine)} runs started")
                continue
            at, run_id = mine[0]
            lag = at - t.timestamp()
            if not (0 <= lag <= p.epsilon + 1):
                problems.append(f"{p.name} @ {key}: started {lag:.2f}s after its time")
            if run_id not in ends.get(key, []):
                problems.append(f"{p.name} @ {key}: run {run_id} never completed")
    assert not problems, "\n".join(problems)
