"""Browser tests of the status page: a real `dromos serve` with apps, jobs and a job graph,
and Debian's Chromium driven headless through chromedriver (selenium).

Nothing is downloaded: the browser is /usr/bin/chromium (``CHROMIUM`` overrides it) and the
driver /usr/bin/chromedriver (``CHROMEDRIVER``); without them the tests skip, saying what to
install (under CI a skip fails, and .ci/run installs both). Screenshots go to
test-artifacts/ui/ at the repository root.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.runtimes.conftest import cleanup_local_state
from tests.support.server import Server, wait_for

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"

NODES = [
    {"hostname": f"node-{c}", "cpus": 2, "mem": 1024, "disk": 4000,
     "ports": f"{35000 + 100 * i}-{35000 + 100 * i + 29}",
     "attributes": {"rack": f"r{i % 2 + 1}", "zone": f"z{i + 1}"}}
    for i, c in enumerate("abc")
]
LABEL_HTML = "<img src=x onerror=window.__xss=1>"
DESCRIPTION_HTML = "<script>window.__xss=2</script><b>bold</b> nightly load"
WEB = {
    "id": "/shop/web",
    # Prints markup on purpose: the page must show it as text, in the command and the logs.
    "cmd": 'while true; do echo "<b>served</b> $(date +%s%N)"; echo "oops" >&2; sleep 0.3; done',
    "instances": 2, "cpus": 0.1, "mem": 32,
    "labels": {"team": LABEL_HTML},
}
UNIQUE = {
    "id": "/shop/unique", "cmd": "sleep 600", "instances": 4, "cpus": 0.1, "mem": 16,
    "constraints": [["hostname", "UNIQUE"]],
}
JOBS = [
    ("iso8601", {"name": "etl", "command": "echo etl-output; sleep 0.3",
                 "schedule": "R/2030-01-01T02:00:00Z/P1D", "description": DESCRIPTION_HTML,
                 "cpus": 0.1, "mem": 16}),
    ("iso8601", {"name": "features", "command": "echo features", "schedule": "cron: 0 3 * * *",
                 "cpus": 0.1, "mem": 16}),
    ("dependency", {"name": "train", "command": "echo training", "parents": ["etl", "features"],
                    "cpus": 0.1, "mem": 16}),
    ("dependency", {"name": "report", "command": "echo no data >&2; exit 1",
                    "parents": ["train"], "retries": 0, "cpus": 0.1, "mem": 16}),
]
BROWSER_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1440,900",
)


def chromium_or_skip() -> tuple[str, str]:
    """(browser, driver) paths, or skip with what to install."""
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
    browser = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver") or \
        "/usr/bin/chromedriver"
    missing = [p for p in (browser, driver) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(f"Chromium browser tests need {' and '.join(missing)}: "
                    "apt-get install chromium chromium-driver")
    return browser, driver


def _last_run(srv: Server, job: str) -> str | None:
    history = srv.get(f"/scheduler/job/stat/{job}")["taskStatHistory"]
    return history[0]["result"] if history else None


@pytest.fixture(scope="package")
def dromos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A Dromos with two apps (one that cannot place all its instances), four jobs in a
    graph (etl + features -> train -> report), and a finished run of each."""
    chromium_or_skip()
    tmp = tmp_path_factory.mktemp("ui")
    nodes_file = tmp / "nodes.json"
    nodes_file.write_text(json.dumps(NODES))
    srv = Server(tmp / "state", nodes_file)
    srv.start()
    try:
        for app in (WEB, UNIQUE):
            httpx.post(srv.url + "/v2/apps", json=app).raise_for_status()
        for kind, job in JOBS:
            httpx.post(f"{srv.url}/scheduler/{kind}", json=job).raise_for_status()
        for job_name in ("etl", "features"):
            httpx.put(f"{srv.url}/scheduler/job/{job_name}").raise_for_status()
        wait_for(lambda: _last_run(srv, "report") == "failed", 60, "the graph to run through")
        wait_for(lambda: srv.get("/v2/apps/shop/web")["app"]["tasksRunning"] == 2, 30,
                 "/shop/web to run")
        yield srv
    finally:
        srv.stop()
        cleanup_local_state(srv.state)


@pytest.fixture(scope="package")
def browser(dromos: Server) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium_or_skip()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    profile = tempfile.mkdtemp(prefix="dromos-chromium-")
    for flag in (*BROWSER_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: Any, name: str, full_page: bool = True) -> Path:
    """Save a PNG of the page (the whole scrollable page by default) to test-artifacts/ui/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.execute_script("window.scrollTo(0, 0)")  # the sticky header belongs at the top
    if full_page:
        metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                     "scale": 1},
        })
        path.write_bytes(base64.b64decode(shot["data"]))
    else:
        driver.save_screenshot(str(path))
    return path
