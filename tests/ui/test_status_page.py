"""The status page as a user sees it, in real headless Chromium against a real Dromos."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.server import Server, wait_for
from tests.ui.conftest import DESCRIPTION_HTML, LABEL_HTML, screenshot

pytestmark = pytest.mark.integration


def by_css(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, css))


def one(driver: Any, css: str) -> Any:
    found = by_css(driver, css)
    assert found, f"nothing on the page matches {css!r}"
    return found[0]


def text(el: Any) -> str:
    """What the element holds as text (also when scrolled out of view)."""
    return str(el.get_attribute("textContent"))


def until(driver: Any, check: Callable[[], Any], timeout: float = 20, what: str = "") -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    def probe(_: Any) -> Any:
        try:
            return check()
        except (StaleElementReferenceException, AssertionError):
            return False  # the section was re-rendered under us: look again

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(
        probe, f"timed out waiting for {what}")


def click(driver: Any, el: Any) -> None:
    """Click as a user would: with the element scrolled to the middle of the window (the
    page's header is sticky and would take a click at the very top)."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
    el.click()


def load(driver: Any, srv: Server) -> None:
    driver.get(srv.url + "/")
    # The page renders the snapshot it came with at once; wait for the stream's first one
    # too, so a test's elements are not re-rendered under it right after.
    until(driver, lambda: driver.execute_script("return document.body.dataset.live") == "1",
          what="the first live snapshot")


def app_row(driver: Any, app_id: str) -> Any:
    return one(driver, f'#services tr[data-app="{app_id}"]')


def job_row(driver: Any, name: str) -> Any:
    return one(driver, f'#jobs tr[data-job="{name}"]')


def test_overview_shows_cluster_services_jobs_and_dag(dromos: Server, browser: Any) -> None:
    load(browser, dromos)

    # Cluster: every node, its attributes, usage bars, and the tasks on it.
    cards = by_css(browser, "#cluster .node")
    assert [text(one(c, ".name")) for c in cards] == ["node-a", "node-b", "node-c"]
    assert "rack=r1" in text(cards[0]) and "zone=z1" in text(cards[0])
    assert len(by_css(browser, "#cluster .node .ubar")) == 9  # cpu, mem, disk per node
    running = sum(a["tasksRunning"] for a in dromos.get("/v2/apps")["apps"])
    until(browser, lambda: len(by_css(browser, "#cluster .node-tasks .chip")) >= running,
          what="a chip per running task")

    # Services: counts against what is wanted, and why the rest waits.
    until(browser, lambda: "2 / 2 running" in text(app_row(browser, "/shop/web")),
          what="/shop/web at 2/2")
    unique = app_row(browser, "/shop/unique")
    assert "3 / 4 running" in text(unique)
    assert "1 waiting" in text(one(unique, ".why"))
    assert "3 nodes: UNIQUE hostname" in text(one(unique, ".why"))

    # Jobs: the schedule in words, a next run counting down, runs on a timeline.
    etl = job_row(browser, "etl")
    assert "every day at 02:00 (UTC)" in text(etl)
    assert text(one(etl, ".countdown")).startswith("in ")
    assert "every day at 03:00 (UTC)" in text(job_row(browser, "features"))
    assert "after etl, features" in text(job_row(browser, "train"))
    assert by_css(etl, ".timeline .run.success")
    assert by_css(job_row(browser, "report"), ".timeline .run.failed")
    assert "p50" in text(etl)

    # DAG: an SVG with a box per job, an edge per dependency, coloured by last result.
    nodes = {n.get_attribute("data-job"): n.get_attribute("class")
             for n in by_css(browser, "#dag svg.dag g.node")}
    assert set(nodes) == {"etl", "features", "train", "report"}
    assert "success" in nodes["etl"] and "failure" in nodes["report"]
    assert len(by_css(browser, "#dag svg.dag path.edge")) == 3
    labels = {text(t) for t in by_css(browser, "#dag svg.dag g.node text")}
    assert labels == {"etl", "features", "train", "report"}

    # Header: the runtime's state; summary cards.
    assert text(one(browser, "#runtime")) == "local runtime"
    assert "Nodes" in text(one(browser, "#summary")) and "Waiting" in text(one(browser,
                                                                               "#summary"))
    screenshot(browser, "overview")

    # The page's own script and styles load under its Content-Security-Policy, and nothing
    # on it failed.
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_user_text_with_html_renders_as_text(dromos: Server, browser: Any) -> None:
    load(browser, dromos)
    web = app_row(browser, "/shop/web")
    chips = [text(c) for c in by_css(web, ".chip.label")]
    assert f"team={LABEL_HTML}" in chips
    assert '<b>served</b>' in text(one(web, "code.cmd"))
    etl = job_row(browser, "etl")
    assert text(one(etl, ".desc")) == DESCRIPTION_HTML
    # Nothing the user wrote became an element, and nothing of it ran.
    assert not by_css(browser, "main img, main script, #services .chip *, #services code *, "
                               "#jobs .desc *")
    assert browser.execute_script("return window.__xss") is None


def test_events_and_changes_arrive_live_without_reload(dromos: Server, browser: Any) -> None:
    load(browser, dromos)
    browser.execute_script("window.__sameDocument = 42")
    before = max((int(e.get_attribute("data-seq")) for e in by_css(browser, "#event-list li")),
                 default=0)

    httpx.put(dromos.url + "/scheduler/job/features").raise_for_status()

    def started() -> bool:
        for li in by_css(browser, '#event-list li[data-type="job_run_started"]'):
            if int(li.get_attribute("data-seq")) > before and "features" in text(li):
                return True
        return False

    until(browser, started, what="a live job_run_started event for features")
    httpx.put(dromos.url + "/v2/apps/shop/web", json={"instances": 3},
              params={"force": "true"}).raise_for_status()
    until(browser, lambda: "3 / 3 running" in text(app_row(browser, "/shop/web")),
          what="/shop/web at 3/3 on the page")
    until(browser, lambda: any(
        "/shop/web" in text(li) and "RUNNING" in text(li) and
        int(li.get_attribute("data-seq")) > before
        for li in by_css(browser, '#event-list li[data-type="status_update_event"]')),
        what="a live task status event")
    assert browser.execute_script("return window.__sameDocument") == 42, "the page reloaded"
    screenshot(browser, "events-live")

    httpx.put(dromos.url + "/v2/apps/shop/web", json={"instances": 2},
              params={"force": "true"}).raise_for_status()
    until(browser, lambda: "2 / 2 running" in text(app_row(browser, "/shop/web")),
          what="/shop/web back at 2/2")


def test_logs_of_a_task_tail_and_follow(dromos: Server, browser: Any) -> None:
    load(browser, dromos)
    click(browser, one(app_row(browser, "/shop/web"), "button.toggle"))
    link = until(browser, lambda: by_css(browser, "#services tr.detail button.link"),
                 what="the task list")[0]
    click(browser, link)
    stdout = until(browser, lambda: by_css(browser, '#log-output [data-stream="stdout"] pre'),
                   what="the stdout pane")[0]
    until(browser, lambda: "<b>served</b>" in text(stdout), what="the task's stdout")
    stderr = one(browser, '#log-output [data-stream="stderr"] pre')
    assert "oops" in text(stderr)
    assert not by_css(browser, "#log-output b"), "log output must not become markup"
    assert "following" in text(one(browser, "#log-status"))
    lines = text(stdout).count("served")
    until(browser, lambda: text(stdout).count("served") > lines + 2, 15,
          "followed output to grow")
    screenshot(browser, "logs")

    # A job run's output, from its block on the timeline.
    click(browser, one(job_row(browser, "etl"), ".timeline .run.success"))
    until(browser, lambda: any("etl-output" in text(p) for p in
                               by_css(browser, '#log-output [data-stream="stdout"] pre')),
          what="the job run's output")
    until(browser, lambda: "ended" in text(one(browser, "#log-status")), what="the run's end")


def test_run_now_and_disable_buttons(dromos: Server, browser: Any) -> None:
    load(browser, dromos)
    runs = len(by_css(job_row(browser, "train"), ".timeline .run"))
    buttons = by_css(job_row(browser, "train"), ".actions button")
    assert [b.text for b in buttons[:2]] == ["Run now", "Disable"]
    click(browser, buttons[0])
    until(browser, lambda: len(by_css(job_row(browser, "train"), ".timeline .run")) > runs,
          what="a new run of train on its timeline")
    wait_for(lambda: _manual_runs(dromos, "train"), 20, "a manual run of train via the API")

    click(browser, by_css(job_row(browser, "features"), ".actions button")[1])
    until(browser, lambda: "disabled" in (job_row(browser, "features").get_attribute("class")
                                          or ""), what="features shown disabled")
    assert dromos.get("/scheduler/job/features")["disabled"] is True
    assert "Enable" in text(job_row(browser, "features"))
    assert "disabled" in one(browser, '#dag g.node[data-job="features"]').get_attribute("class")
    click(browser, by_css(job_row(browser, "features"), ".actions button")[1])
    until(browser, lambda: "disabled" not in (job_row(browser, "features").get_attribute(
        "class") or ""), what="features enabled again")
    assert dromos.get("/scheduler/job/features")["disabled"] is False


def _manual_runs(srv: Server, job: str) -> bool:
    state = srv.get("/ui/state")
    return any(r["trigger"] == "manual" for j in state["jobs"] if j["name"] == job
               for r in j["runs"])


def test_a_deployment_that_cannot_place_shows_waiting_with_the_reason(
        dromos: Server, browser: Any) -> None:
    """/shop/unique wants 4 instances, UNIQUE by hostname, on 3 nodes: its deployment cannot
    finish, and the page says so instead of showing a bar about to complete."""
    load(browser, dromos)
    [dep] = [d for d in dromos.get("/v2/deployments") if "/shop/unique" in d["affectedApps"]]
    row = until(browser, lambda: one(browser, f'#deployments tr[data-deployment="{dep["id"]}"]'),
                what="the /shop/unique deployment")
    assert one(browser, "#deployments").is_displayed()
    assert "waiting" in (row.get_attribute("class") or "")
    assert "waiting: 1 instance of /shop/unique" in text(row)
    assert "3 nodes: UNIQUE hostname" in text(one(row, ".why .reason"))
    assert f"step {dep['currentStep']} of {dep['totalSteps']}" in text(row)
    bar = one(row, ".dbar.waiting i")
    width = browser.execute_script(
        "return arguments[0].getBoundingClientRect().width / "
        "arguments[0].parentElement.getBoundingClientRect().width", bar)
    assert width < 1, "the bar of a deployment that cannot finish is not full"


def test_page_has_its_data_at_the_load_event_and_relative_times_tick(
        dromos: Server, browser: Any) -> None:
    """With the live stream blocked, the page still shows everything (from the snapshot it
    carries), as soon as the browser says it has loaded; "… ago" keeps counting."""
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/ui/events*"]})
    try:
        browser.get(dromos.url + "/")  # returns at the load event
        assert browser.execute_script("return document.body.dataset.ready") == "1"
        body = text(one(browser, "body"))
        assert "Loading…" not in body
        assert "3 / 4 running" in text(app_row(browser, "/shop/unique"))
        assert "every day at 03:00 (UTC)" in text(job_row(browser, "features"))
        assert by_css(job_row(browser, "etl"), ".timeline .run.success")
        assert text(one(browser, "#conn")) != "live", "the stream was not blocked"
        version = one(app_row(browser, "/shop/web"), "[data-ago]")
        first = text(version)
        assert first.endswith(" ago") or first == "just now"
        until(browser, lambda: text(version) != first, 10, "the version's age to tick")
    finally:
        browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
        browser.execute_cdp_cmd("Network.disable", {})


def test_next_run_is_shown_in_the_jobs_zone_and_labelled(dromos: Server,
                                                         browser: Any) -> None:
    """A browser in Tokyo sees etl's next run (02:00 UTC) at 02:00 UTC, as its schedule
    reads ("every day at 02:00 (UTC)"), with its own time (11:00) on hover."""
    browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Tokyo"})
    try:
        load(browser, dromos)
        etl = job_row(browser, "etl")
        assert "every day at 02:00 (UTC)" in text(etl)
        nxt = one(etl, ".next-at")
        assert text(nxt) == "Jan 1, 2030 02:00:00 UTC"
        title = nxt.get_attribute("title")
        assert "Jan 1, 2030 11:00:00 GMT+9" in title and "Asia/Tokyo" in title
        assert "times in Asia/Tokyo" in text(one(browser, "#events .panel-head"))
    finally:
        browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": ""})


def test_a_marked_success_shows_as_one(dromos: Server, browser: Any) -> None:
    """PUT /scheduler/job/success: the job's box turns green and its timeline shows a
    success that was marked, not run (a job of its own, deleted afterwards)."""
    job = {"name": "marked-demo", "command": "false", "schedule": "R/2030-01-01T00:00:00Z/P1D",
           "cpus": 0.1, "mem": 16}
    httpx.post(dromos.url + "/scheduler/iso8601", json=job).raise_for_status()
    try:
        load(browser, dromos)
        assert "no runs yet" in text(job_row(browser, "marked-demo"))
        httpx.put(dromos.url + "/scheduler/job/success/marked-demo").raise_for_status()
        block = until(browser, lambda: one(job_row(browser, "marked-demo"),
                                           ".timeline .run.success.marked"),
                      what="a marked success on the timeline")
        assert "marked (not run)" in block.get_attribute("title")
        assert "1 ✓" in text(job_row(browser, "marked-demo"))
        box = one(browser, '#dag g.node[data-job="marked-demo"]')
        assert "success" in (box.get_attribute("class") or "")
        until(browser, lambda: any("marked-demo marked successful (not run)" in text(li)
                                   for li in by_css(browser, "#event-list li")),
              what="the event in the feed")
    finally:
        httpx.delete(dromos.url + "/scheduler/job/marked-demo").raise_for_status()
