"""What a new user meets in the first hour (issue 16), with the `dromos` CLI against a real
`dromos serve`: a deployment holding an app, missing apps, jobs from files, stopping."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler import stop
from scheduler.cli import EXIT_ERROR, EXIT_OK
from scheduler.runtimes.executor import read_proc_stat
from tests.cli.conftest import start_server
from tests.cli.test_cli import Cli
from tests.runtimes.conftest import cleanup_local_state
from tests.support.server import Server, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def cli(dromos: Server, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(dromos, capsys)


def write(path: Path, value: dict[str, Any]) -> str:
    path.write_text(json.dumps(value))
    return str(path)


def test_a_deployment_holding_the_app_is_named_and_force_overrides_it(
        cli: Cli, tmp_path: Path) -> None:
    # The README's walkthrough: three UNIQUE instances on three nodes, then a fourth that
    # cannot be placed, then the original file deployed again.
    web = write(tmp_path / "web.json", {
        "id": "/first/web", "cmd": "exec sleep 600", "instances": 3, "cpus": 0.1, "mem": 16,
        "constraints": [["hostname", "UNIQUE"]]})
    code, _, err = cli("deploy", "-f", web, "--wait", "--timeout", "60")
    assert code == EXIT_OK, err
    code, _, err = cli("scale", "/first/web", "4")
    assert code == EXIT_OK, err
    held_by = wait_for(lambda: [d["id"] for d in cli.srv.get("/v2/deployments")
                                if "/first/web" in d["affectedApps"]], 30, "the deployment")
    wait_for(lambda: any(a["id"] == "/first/web" and a.get("waiting")
                         for a in cli.srv.get("/ui/state")["apps"]), 30, "placement to fail")

    code, _, err = cli("deploy", "-f", web, "--wait")
    assert code == EXIT_ERROR
    assert f"/first/web is held by deployment {held_by[0]} (step 1 of 1: ScaleApplication" \
        in err
    assert "waiting for /first/web to run 4 instances (3 run now)" in err
    assert "cannot be placed: 3 nodes: UNIQUE hostname" in err
    assert "rerun with --force" in err
    assert cli.srv.get("/v2/apps/first/web")["app"]["instances"] == 4  # nothing changed

    code, out, err = cli("deploy", "-f", web, "--wait", "--force", "--timeout", "60", "--json")
    assert code == EXIT_OK, err
    result = json.loads(out)
    assert result["wait"]["outcome"] == "converged" and result["changed"] is True
    assert result["app"]["instances"] == 3 and result["app"]["tasksRunning"] == 3


def test_deploying_what_the_app_already_is_waits_instead_of_failing(
        cli: Cli, tmp_path: Path) -> None:
    app = {"id": "/first/same", "cmd": "exec sleep 600", "instances": 2, "cpus": 0.1,
           "mem": 16, "labels": {"team": "a"}}
    # Created with curl's request; the CLI follows at once, while its deployment still runs.
    httpx.post(cli.srv.url + "/v2/apps", json=app).raise_for_status()
    code, _, err = cli("deploy", "-f", write(tmp_path / "same.json", app), "--wait",
                       "--timeout", "60")
    assert code == EXIT_OK, err
    assert "unchanged: /first/same" in err and "converged" in err
    assert cli.srv.get("/v2/apps/first/same")["app"]["tasksRunning"] == 2


def test_missing_apps_are_named(cli: Cli) -> None:
    code, _, err = cli("scale", "/nope", "2")
    assert code == EXIT_ERROR
    assert "app /nope does not exist" in err
    assert httpx.get(cli.srv.url + "/v2/apps/nope").status_code == 404  # not created
    code, out, err = cli("tasks", "/nope")
    assert code == EXIT_ERROR and out == ""
    assert "app /nope does not exist" in err


def test_jobs_add_and_delete(cli: Cli, tmp_path: Path) -> None:
    nightly = {"name": "first-nightly", "command": "echo hi", "cpus": 0.1, "mem": 16,
               "schedule": "cron: 30 2 * * *", "scheduleTimeZone": "Europe/Berlin"}
    path = write(tmp_path / "nightly.json", nightly)
    code, out, err = cli("jobs", "add", "-f", path)
    assert code == EXIT_OK, err
    assert "added job first-nightly" in err and out == ""
    assert cli.srv.get("/scheduler/job/first-nightly")["schedule"] == "cron: 30 2 * * *"

    code, out, _ = cli("jobs")
    row = next(line for line in out.splitlines() if line.startswith("first-nightly"))
    assert "every day at 02:30 (Europe/Berlin)" in row

    # A dependent job, from YAML; adding again replaces.
    child = tmp_path / "child.yaml"
    child.write_text("name: first-child\ncommand: echo child\nparents: [first-nightly]\n"
                     "cpus: 0.1\nmem: 16\n")
    code, out, err = cli("jobs", "add", "-f", str(child), "--json")
    assert code == EXIT_OK, err
    result = json.loads(out)
    assert result["created"] is True and result["job"]["parents"] == ["first-nightly"]
    assert json.loads(cli("jobs", "add", "-f", str(child), "--json")[1])["created"] is False

    # deploy -f is for apps: a job file gets told where to go, nothing is created.
    code, _, err = cli("deploy", "-f", path)
    assert code == EXIT_ERROR and f"dromos jobs add -f {path}" in err

    code, out, err = cli("jobs", "delete", "first-child", "--json")
    assert code == EXIT_OK, err
    assert json.loads(out) == {"name": "first-child", "deleted": True}
    assert httpx.get(cli.srv.url + "/scheduler/job/first-child").status_code == 404
    code, _, err = cli("jobs", "delete", "first-child")
    assert code == EXIT_ERROR and "first-child" in err
    assert cli("jobs", "delete", "first-nightly")[0] == EXIT_OK

    bad = write(tmp_path / "bad.json", nightly | {"schedule": "cron: 61 * * * *"})
    code, _, err = cli("jobs", "add", "-f", bad)
    assert code == EXIT_ERROR and "/schedule: cron expression" in err


SLEEPERS = {"id": "/stop/sleeper", "cmd": "exec sleep 600", "instances": 2, "cpus": 0.1,
            "mem": 16}


def _started(tmp: Path) -> Server:
    srv = start_server(tmp)
    httpx.post(srv.url + "/v2/apps", json=SLEEPERS).raise_for_status()
    wait_for(lambda: len(stop.running(srv.state)) == 2, 30, "two tasks")
    return srv


def _dromos(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *argv], capture_output=True,
                          text=True, timeout=120)


def test_ctrl_c_says_what_keeps_running_and_stop_all_stops_it(tmp_path: Path) -> None:
    srv = _started(tmp_path)
    try:
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGINT)  # Ctrl-C
        srv.proc.wait(30)
        log = (tmp_path / "dromos.log").read_text()
        assert f"2 tasks keep running (the next `dromos serve --state-dir {srv.state}` " \
               "adopts them)" in log
        assert f"`dromos stop-all --state-dir {srv.state}`" in log
        check = [sys.executable, "-m", "scheduler.stop", "--check", str(srv.state)]
        r = subprocess.run(check, capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and "2 task(s)" in r.stderr  # what `make clean` runs

        r = _dromos("--url", srv.url, "stop-all", "--state-dir", str(srv.state), "--json")
        assert r.returncode == 0, r.stderr
        result = json.loads(r.stdout)
        assert result["via"] == "state-dir" and len(result["stopped"]) == 2
        assert result["remaining"] == [] and stop.running(srv.state) == []
        assert subprocess.run(check, timeout=30).returncode == 0

        # A Dromos started again reports them killed (not failed) and starts the app anew.
        srv.start()
        wait_for(lambda: srv.get("/v2/apps/stop/sleeper")["app"]["tasksRunning"] == 2, 30,
                 "the app to run again")
        assert "lastTaskFailure" not in srv.get("/v2/apps/stop/sleeper")["app"]
    finally:
        srv.stop()
        cleanup_local_state(srv.state)


def test_stop_all_while_dromos_runs_scales_apps_to_zero(tmp_path: Path) -> None:
    srv = _started(tmp_path)
    try:
        r = _dromos("--url", srv.url, "stop-all", "--state-dir", str(srv.state))
        assert r.returncode == 0, r.stderr
        assert "scaled 1 app(s) to 0" in r.stderr and "stopped 2 task(s)" in r.stderr
        assert srv.get("/v2/tasks")["tasks"] == [] and stop.running(srv.state) == []
        assert srv.get("/v2/apps/stop/sleeper")["app"]["instances"] == 0
    finally:
        srv.stop()
        cleanup_local_state(srv.state)


def test_make_clean_refuses_while_tasks_of_the_state_dir_run(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    repo = Path(__file__).resolve().parents[2]
    shutil.copy(repo / "Makefile", tmp_path / "Makefile")
    (tmp_path / "scheduler").symlink_to(repo / "scheduler")
    sandbox = tmp_path / ".dromos" / "tasks" / "demo_web.1"
    sandbox.mkdir(parents=True)
    task = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        stat = read_proc_stat(task.pid)
        assert stat is not None
        # What an executor records about itself and its task (here one process is both).
        (sandbox / "executor.json").write_text(json.dumps({
            "pid": task.pid, "start_time": stat.start_time, "child_pid": task.pid,
            "child_start_time": stat.start_time, "started_at": 0}))
        make = ["make", "-s", "clean", f"PYTHON={sys.executable}"]
        r = subprocess.run(make, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert r.returncode != 0
        assert "1 task(s) of .dromos are still running (demo_web.1)" in r.stderr
        assert "refusing; run 'make stop' first, or 'make clean FORCE=1'" in r.stderr
        assert sandbox.is_dir()

        r = subprocess.run([*make, "FORCE=1"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert "still running" in r.stderr and not (tmp_path / ".dromos").exists()
    finally:
        task.kill()
        task.wait(10)
