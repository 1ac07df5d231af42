"""`dromos apps|tasks|deployments|jobs|nodes|deploy|scale|logs` against a running Dromos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler.cli import EXIT_ERROR, EXIT_NOT_DONE, EXIT_OK, main
from tests.cli.conftest import start_server
from tests.runtimes.conftest import cleanup_local_state
from tests.support.server import Server, wait_for

pytestmark = pytest.mark.integration


class Cli:
    """Runs `dromos --url <server> ...` in this process, capturing its output."""

    def __init__(self, srv: Server, capsys: pytest.CaptureFixture[str]) -> None:
        self.srv = srv
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(["--url", self.srv.url, *argv])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *argv: str) -> Any:
        code, out, err = self(*argv, "--json")
        assert code == EXIT_OK, err
        return json.loads(out)


@pytest.fixture
def cli(dromos: Server, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(dromos, capsys)


def lines_of(table: str) -> list[list[str]]:
    return [line.split() for line in table.strip().splitlines()]


def test_tables(cli: Cli) -> None:
    code, out, _ = cli("apps")
    assert code == EXIT_OK
    rows = lines_of(out)
    assert rows[0][:4] == ["ID", "RUNNING", "HEALTHY", "STAGED"]
    sleeper = next(r for r in rows if r[0] == "/cli/sleeper")
    assert sleeper[1:4] == ["2/2", "-", "0"]

    code, out, _ = cli("tasks", "/cli/sleeper")
    rows = lines_of(out)
    assert code == EXIT_OK and rows[0][:3] == ["ID", "APP", "HOST"] and len(rows) == 3
    assert all(r[1] == "/cli/sleeper" and r[4] == "RUNNING" for r in rows[1:])

    code, out, _ = cli("nodes")
    rows = lines_of(out)
    assert [r[0] for r in rows] == ["HOSTNAME", "node-a", "node-b", "node-c"]
    assert any(r[1] != "0/2" for r in rows[1:]), "the sleeper's cpus show as used"
    assert "rack=r1" in out

    code, out, _ = cli("jobs")
    assert code == EXIT_OK
    assert "every hour from 2030-01-01 00:00 UTC" in out
    assert "every day at 04:30 (UTC)" in out
    hello = next(line for line in out.splitlines() if line.startswith("hello"))
    assert "in " in hello  # the next run, relative

    # None in progress once the sleeper's deployment has finished: a note, no table.
    wait_for(lambda: cli.srv.get("/v2/deployments") == [], 30, "no deployment in progress")
    code, out, err = cli("deployments")
    assert code == EXIT_OK
    assert out == "" and "No deployments in progress." in err

    # An app that cannot be fully placed (4 instances, UNIQUE hostname, 3 nodes) keeps its
    # deployment open: one row for it.
    stuck = {"id": "/cli/stuck-table", "cmd": "exec sleep 600", "instances": 4, "cpus": 0.1,
             "mem": 16, "constraints": [["hostname", "UNIQUE"]]}
    httpx.post(cli.srv.url + "/v2/apps", json=stuck).raise_for_status()
    try:
        code, out, err = cli("deployments")
        assert code == EXIT_OK, err
        rows = lines_of(out)
        assert rows[0] == ["ID", "APPS", "STEP", "ACTIONS", "STARTED"]
        assert [r[1] for r in rows[1:]] == ["/cli/stuck-table"]
    finally:
        httpx.delete(cli.srv.url + "/v2/apps/cli/stuck-table",
                     params={"force": "true"}).raise_for_status()


def test_json_everywhere(cli: Cli) -> None:
    apps = cli.json("apps")
    assert {a["id"] for a in apps} >= {"/cli/sleeper"}
    assert all("tasksRunning" in a for a in apps)
    assert {t["appId"] for t in cli.json("tasks")} >= {"/cli/sleeper"}
    assert [n["hostname"] for n in cli.json("nodes")] == ["node-a", "node-b", "node-c"]
    jobs = {j["name"]: j for j in cli.json("jobs")}
    assert jobs["hello"]["scheduleText"] == "every hour from 2030-01-01 00:00 UTC"
    assert isinstance(cli.json("deployments"), list)
    # --json also works before the command.
    code, out, _ = cli("--json", "nodes")
    assert code == EXIT_OK and json.loads(out)[0]["hostname"] == "node-a"


def test_url_from_the_environment_and_the_installed_entry_point(dromos: Server) -> None:
    env = {**os.environ, "DROMOS_URL": dromos.url}
    r = subprocess.run([sys.executable, "-m", "scheduler.cli", "apps", "--json"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "/cli/sleeper" in {a["id"] for a in json.loads(r.stdout)}


def test_deploy_and_scale_wait_until_converged(cli: Cli, tmp_path: Path) -> None:
    app = {"id": "/cli/web", "cmd": "exec sleep 600", "instances": 2, "cpus": 0.1, "mem": 16}
    path = tmp_path / "app.json"
    path.write_text(json.dumps(app))

    code, out, err = cli("deploy", "-f", str(path), "--wait", "--timeout", "60")
    assert code == EXIT_OK, err
    assert "created /cli/web" in err
    assert "2/2 running" in err and "converged" in err  # the progress lines, then the result
    assert cli.srv.get("/v2/apps/cli/web")["app"]["tasksRunning"] == 2

    code, out, err = cli("scale", "cli/web", "3", "--wait", "--timeout", "60", "--json")
    assert code == EXIT_OK, err
    result = json.loads(out)
    assert result["wait"]["outcome"] == "converged"
    assert result["app"]["tasksRunning"] == 3 and result["app"]["instances"] == 3

    # Redeploying the same file updates the app (instances back to 2).
    code, _, err = cli("deploy", "-f", str(path), "--wait", "--timeout", "60", "--force")
    assert code == EXIT_OK, err
    assert "updated /cli/web" in err
    assert cli.srv.get("/v2/apps/cli/web")["app"]["tasksRunning"] == 2


@pytest.mark.parametrize(("flags", "expect"), [
    (["--timeout", "3", "--stuck-after", "600"], "timed out after 3s"),
    (["--timeout", "60", "--stuck-after", "2"], "cannot be placed"),
], ids=["timeout", "stuck"])
def test_wait_fails_for_an_app_that_cannot_be_placed(cli: Cli, tmp_path: Path,
                                                     flags: list[str], expect: str) -> None:
    name = f"/cli/unique-{flags[-1]}"
    path = tmp_path / "app.json"
    path.write_text(json.dumps({"id": name, "cmd": "exec sleep 600", "instances": 4,
                                "cpus": 0.1, "mem": 16,
                                "constraints": [["hostname", "UNIQUE"]]}))
    started = time.monotonic()
    code, _, err = cli("deploy", "-f", str(path), "--wait", *flags)
    assert code == EXIT_NOT_DONE, err
    assert expect in err
    assert "3 nodes: UNIQUE hostname" in err  # why, in Dromos's words
    assert time.monotonic() - started < 30


def test_jobs_run_follow(cli: Cli) -> None:
    code, out, err = cli("jobs", "run", "hello", "--follow")
    assert code == EXIT_OK, err
    assert out == "hello-from-job\n"
    assert "to-stderr" in err and "success" in err

    code, out, err = cli("jobs", "run", "broken", "-f")
    assert code == EXIT_NOT_DONE
    assert "failing" in out and "failed" in err and "exit 2" in err

    code, out, _ = cli("jobs", "run", "hello")
    assert code == EXIT_OK and out.startswith("hello:manual-")

    code, _, err = cli("jobs", "run", "nope")
    assert code == EXIT_ERROR and "does not exist" in err


def test_logs_of_tasks_and_runs(cli: Cli) -> None:
    task = next(t["id"] for t in cli.json("tasks", "/cli/sleeper"))
    code, out, _ = cli("logs", task)
    assert code == EXIT_OK and out == "sleeper-started\n"

    run_id = cli.json("jobs", "run", "hello")["id"]
    code, out, err = cli("logs", run_id, "-f")  # follows until the run has ended
    assert code == EXIT_OK
    assert out == "hello-from-job\n" and err == "to-stderr\n"

    code, _, err = cli("logs", "no-such-task")
    assert code == EXIT_ERROR and "no task or job run" in err


def test_table_cells_cannot_drive_the_terminal(cli: Cli) -> None:
    app = {"id": "/cli/ansi", "cmd": "echo \x1b[31mred\x1b[0m; exec sleep 600",
           "instances": 0, "cpus": 0.1, "mem": 16}
    httpx.post(cli.srv.url + "/v2/apps", json=app).raise_for_status()
    code, out, _ = cli("apps")
    assert code == EXIT_OK
    assert "\x1b" not in out and "\\x1b[31mred" in out


def test_errors_are_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", "http://127.0.0.1:9", "apps"]) == EXIT_ERROR
    assert "cannot reach Dromos at http://127.0.0.1:9" in capsys.readouterr().err


def test_credentials_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    srv = start_server(tmp_path, "--auth-token", "s3cret")
    try:
        monkeypatch.delenv("DROMOS_AUTH_TOKEN", raising=False)
        assert main(["--url", srv.url, "nodes"]) == EXIT_ERROR
        assert "DROMOS_AUTH_TOKEN" in capsys.readouterr().err
        monkeypatch.setenv("DROMOS_AUTH_TOKEN", "s3cret")
        assert main(["--url", srv.url, "nodes"]) == EXIT_OK
        assert "node-a" in capsys.readouterr().out
    finally:
        srv.stop()
        cleanup_local_state(srv.state)


def test_logs_json_lines(cli: Cli) -> None:
    run_id = cli.json("jobs", "run", "hello")["id"]
    wait_for(lambda: cli.srv.get(f"/ui/runs/{run_id}")["run"]["status"] == "success", 30,
             "the run to finish")
    code, out, _ = cli("logs", run_id, "--json")
    assert code == EXIT_OK
    chunks = [json.loads(line) for line in out.splitlines()]
    assert {(c["stream"], c["text"]) for c in chunks} == {
        ("stdout", "hello-from-job\n"), ("stderr", "to-stderr\n")}
