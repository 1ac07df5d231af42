"""kubectl as a way in, on the offline cluster: objects applied, changed, refused and deleted
with kubectl reach the orchestrator's commands; Dromos's writes and status reach kubectl.

The commands stand in for the orchestrator: each records its call and makes the store write
the orchestrator would (so the store's objects, adoption and echoes are the real ones).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from scheduler.ha.kube_status import AppFigures, JobFigures, StatusWriter
from scheduler.ha.kubectl_sync import Commands, KubectlSync
from scheduler.model.app import AppSpec, parse_app
from scheduler.model.job import parse_job
from scheduler.model.timefmt import iso
from scheduler.orchestrator.core import Conflict
from scheduler.store.kubernetes import KEY_ANNOTATION, KubernetesStore, object_name
from tests.runtimes.k8s_support import (
    ensure_namespace,
    kubeconfig,
    kubectl,
    namespace_for,
)
from tests.store.kube_store import api_client

FENCE = "test/0"
EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"


@dataclass
class Orchestrator:
    """The commands, each making the store write the orchestrator would make, recorded once
    that write is done."""

    store: KubernetesStore
    calls: list[tuple[str, Any]] = field(default_factory=list)
    locked: set[str] = field(default_factory=set)  # app ids whose updates are refused

    def commands(self) -> Commands:
        def versioned(d: dict[str, Any]) -> AppSpec:
            # As the orchestrator does: a stored app has a version (its time of change).
            return parse_app(d).model_copy(update={"version": iso(datetime.now(UTC))})

        def create_app(d: dict[str, Any]) -> None:
            self.store.create_app(versioned(d))
            self.calls.append(("create_app", d))

        def update_app(d: dict[str, Any]) -> None:
            if d["id"] in self.locked:  # as an app locked by a running deployment is
                raise Conflict(f"App is locked by one or more deployments: {d['id']}")
            self.store.put_app(versioned(d))
            self.calls.append(("update_app", d))

        def delete_app(app_id: str) -> None:
            self.store.delete_app(app_id)
            self.calls.append(("delete_app", app_id))

        def put_job(d: dict[str, Any]) -> None:
            self.store.put_job(parse_job(d))
            self.calls.append(("put_job", d))

        def delete_job(name: str) -> None:
            self.store.delete_job(name)
            self.calls.append(("delete_job", name))

        return Commands(create_app, update_app, delete_app, put_job, delete_job)


@dataclass
class Env:
    config: str
    namespace: str
    store: KubernetesStore
    orchestrator: Orchestrator
    sync: KubectlSync
    api: Any

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return kubectl(self.config, "-n", self.namespace, *args, input=input).stdout

    def get(self, resource: str, name: str | None = None) -> Any:
        return json.loads(self.kubectl("get", resource, *([name] if name else []), "-o", "json"))

    def apply(self, manifest: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def printed(table: str) -> dict[str, str]:
    """The first row of a ``kubectl get`` table by column title (empty cells included)."""
    header, row = table.splitlines()[:2]
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]
    titles = [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    cells = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return dict(zip(titles, cells, strict=True))


def wait_until(check: Callable[[], Any], what: str, seconds: float = 30.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    api = api_client()
    config = kubeconfig()
    namespace = namespace_for(tmp_path)
    ensure_namespace(namespace)
    store = KubernetesStore(api, namespace, lambda: FENCE)
    store.load()
    orchestrator = Orchestrator(store)
    sync = KubectlSync(api, namespace, store, orchestrator.commands(), lambda: FENCE,
                       resync_s=1.0)
    sync.start()
    try:
        yield Env(config, namespace, store, orchestrator, sync, api)
    finally:
        sync.stop()
        kubectl(config, "delete", "namespace", namespace, "--wait=false", check=False)


def app_object(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "dromos.io/v1alpha1", "kind": "App", "metadata": {"name": name},
            "spec": spec}


def job_object(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "dromos.io/v1alpha1", "kind": "Job", "metadata": {"name": name},
            "spec": spec}


def calls_named(env: Env, name: str) -> list[Any]:
    return [arg for what, arg in list(env.orchestrator.calls) if what == name]


def test_applied_objects_are_created_then_updated_on_the_users_object(env: Env) -> None:
    env.apply(app_object("hello", cmd="sleep 60", instances=2, mem=32))
    env.apply(job_object("report", command="echo hi", schedule="R/2026-01-01T02:00:00Z/P1D"))
    wait_until(lambda: calls_named(env, "create_app") and calls_named(env, "put_job"),
               "the app and the job to be applied")
    assert calls_named(env, "create_app") == [
        {"cmd": "sleep 60", "instances": 2, "mem": 32, "id": "/hello"}]
    assert calls_named(env, "put_job") == [
        {"command": "echo hi", "schedule": "R/2026-01-01T02:00:00Z/P1D", "name": "report"}]

    # The store wrote the apps' records into the user's objects, not into second ones.
    apps = env.get("apps.dromos.io")["items"]
    assert [a["metadata"]["name"] for a in apps] == ["hello"]
    assert apps[0]["metadata"]["annotations"][KEY_ANNOTATION] == "/hello"
    # kubectl apply's own record of the object survives Dromos's write (its next apply merges).
    assert "kubectl.kubernetes.io/last-applied-configuration" in apps[0]["metadata"]["annotations"]
    assert [j["metadata"]["name"] for j in env.get("jobs.dromos.io")["items"]] == ["report"]

    # A change with kubectl is an update; Dromos's own write coming back is not applied again.
    env.apply(app_object("hello", cmd="sleep 60", instances=3, mem=32))
    updates = wait_until(lambda: calls_named(env, "update_app"), "the update")
    assert updates[0]["instances"] == 3 and updates[0]["id"] == "/hello"
    app = env.store.get_app("/hello")
    assert app is not None and app.instances == 3
    passes = env.sync.passes
    wait_until(lambda: env.sync.passes >= passes + 2, "two more passes")
    assert [what for what, _ in env.orchestrator.calls] == ["create_app", "put_job",
                                                             "update_app"]


def test_a_bad_object_gets_a_condition_and_an_event_and_runs_nothing(env: Env) -> None:
    env.kubectl("apply", "-f", str(EXAMPLES / "bad-app.yaml"))

    def condition() -> Any:
        status = env.get("apps.dromos.io", "broken").get("status") or {}
        return next((c for c in status.get("conditions") or [] if c["type"] == "Valid"), None)

    valid = wait_until(condition, "the Valid condition")
    assert valid["status"] == "False" and valid["reason"] == "Invalid"
    assert "/instances" in valid["message"]
    assert "/upgradeStrategy/minimumHealthCapacity" in valid["message"]
    events = wait_until(lambda: [e for e in env.get("events")["items"]
                                 if e["involvedObject"]["name"] == "broken"], "the event")
    assert [(e["type"], e["reason"]) for e in events] == [("Warning", "Invalid")]
    assert "/instances" in events[0]["message"]
    described = env.kubectl("describe", "apps.dromos.io", "broken")
    assert "Invalid" in described and "/instances" in described
    assert printed(env.kubectl("get", "apps.dromos.io", "broken"))["VALID"] == "False"
    assert env.orchestrator.calls == [] and env.store.get_app("/broken") is None

    # Fixed with kubectl, it is applied.
    env.apply(app_object("broken", cmd="sleep 60", instances=1, mem=32))
    created = wait_until(lambda: calls_named(env, "create_app"), "the fixed app")
    assert created == [{"cmd": "sleep 60", "instances": 1, "mem": 32, "id": "/broken"}]


def test_kubectl_delete_deletes_the_app_or_job(env: Env) -> None:
    env.apply(app_object("hello", cmd="sleep 60", instances=1, mem=32))
    wait_until(lambda: calls_named(env, "create_app"), "the app")
    # One made through the REST API (the store names its object).
    env.store.put_job(parse_job({"name": "etl", "command": "true",
                                 "schedule": "R/2026-01-01T00:00:00Z/PT1H"}))
    wait_until(lambda: env.sync.passes > 0 and not calls_named(env, "delete_job"), "a pass")

    env.kubectl("delete", "apps.dromos.io", "hello")
    env.kubectl("delete", "jobs.dromos.io", object_name("etl"))
    wait_until(lambda: calls_named(env, "delete_app") and calls_named(env, "delete_job"),
               "the deletions")
    assert calls_named(env, "delete_app") == ["/hello"]
    assert calls_named(env, "delete_job") == ["etl"]
    assert env.store.get_app("/hello") is None and env.store.get_job("etl") is None


def test_rest_writes_and_status_show_in_kubectl(env: Env) -> None:
    env.apply(app_object("hello", cmd="sleep 60", instances=2, mem=32))
    env.apply(job_object("report", command="echo hi", schedule="R/2026-01-01T02:00:00Z/P1D"))
    wait_until(lambda: calls_named(env, "create_app") and calls_named(env, "put_job"),
               "the app and the job")
    stored = env.store.get_app("/hello")
    assert stored is not None
    writer = StatusWriter(
        env.api, env.namespace, env.store, lambda: FENCE,
        lambda app_id: AppFigures(2, 2, 1, "2026-01-01T00:00:00.000Z"),
        lambda name: JobFigures("R/2026-01-01T02:00:00Z/P1D", "2026-01-01T02:00:00.000Z",
                                "2026-01-02T02:00:00.000Z", "success"),
        env.sync.verdicts)
    assert writer.write_once() == 2
    assert writer.write_once() == 0  # nothing changed: nothing written

    row = printed(env.kubectl("get", "apps.dromos.io", "hello"))
    assert (row["NAME"], row["INSTANCES"], row["RUNNING"], row["HEALTHY"], row["VALID"]) == (
        "hello", "2", "2", "1", "True")
    job_row = printed(env.kubectl("get", "djob", "report"))
    assert (job_row["LAST RUN"], job_row["NEXT RUN"], job_row["LAST RESULT"]) == (
        "2026-01-01T02:00:00.000Z", "2026-01-02T02:00:00.000Z", "success")

    # A REST-side write after the status write (which changed the object's resourceVersion)
    # lands in the user's object.
    env.store.put_app(stored.model_copy(update={"instances": 5,
                                                "version": iso(datetime.now(UTC))}))
    apps = env.get("apps.dromos.io")["items"]
    assert [(a["metadata"]["name"], a["spec"]["instances"]) for a in apps] == [("hello", 5)]
    assert apps[0]["status"]["running"] == 2  # the status stays
    passes = env.sync.passes
    wait_until(lambda: env.sync.passes >= passes + 2, "two more passes")
    assert [what for what, _ in env.orchestrator.calls] == ["create_app", "put_job"]


def valid_condition(env: Env, resource: str, name: str) -> Any:
    status = env.get(resource, name).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == "Valid"), None)


def events_of(env: Env, name: str) -> list[tuple[str, str]]:
    return [(e["type"], e["reason"]) for e in env.get("events")["items"]
            if e["involvedObject"]["name"] == name]


def test_a_refused_change_is_reported_and_tried_again(env: Env) -> None:
    env.apply(app_object("hello", cmd="sleep 60", instances=1, mem=32))
    wait_until(lambda: calls_named(env, "create_app"), "the app")
    env.orchestrator.locked.add("/hello")
    env.apply(app_object("hello", cmd="sleep 60", instances=4, mem=32))
    refused = wait_until(lambda: (c := valid_condition(env, "apps.dromos.io", "hello"))
                         and c["status"] == "False" and c, "the refusal")
    assert refused["reason"] == "Rejected" and "locked" in refused["message"]
    assert wait_until(lambda: events_of(env, "hello"), "the event") == [("Warning", "Rejected")]
    app = env.store.get_app("/hello")
    assert app is not None and app.instances == 1

    # The deployment ends; the same object (not applied again by anyone) is taken.
    env.orchestrator.locked.clear()
    updated = wait_until(lambda: calls_named(env, "update_app"), "the retry")
    assert updated[0]["instances"] == 4
    wait_until(lambda: (valid_condition(env, "apps.dromos.io", "hello") or {}).get("status")
               == "True", "Valid=True")
    assert events_of(env, "hello") == [("Warning", "Rejected")]  # said once


def test_a_second_object_for_one_app_is_a_duplicate(env: Env) -> None:
    env.apply(app_object("web", cmd="sleep 60", instances=1, mem=32))
    wait_until(lambda: calls_named(env, "create_app"), "the app")
    env.apply(app_object("web-copy", id="/web", cmd="sleep 1", instances=9, mem=32))
    duplicate = wait_until(lambda: valid_condition(env, "apps.dromos.io", "web-copy"),
                           "the condition")
    assert (duplicate["status"], duplicate["reason"]) == ("False", "Duplicate")
    assert "App web" in duplicate["message"]
    app = env.store.get_app("/web")
    assert app is not None and app.instances == 1
    assert [what for what, _ in env.orchestrator.calls] == ["create_app"]


def test_an_object_deleted_while_no_leader_watched_is_deleted_at_start(env: Env) -> None:
    env.sync.stop()
    env.store.put_job(parse_job({"name": "etl", "command": "true",
                                 "schedule": "R/2026-01-01T00:00:00Z/PT1H"}))
    env.kubectl("delete", "jobs.dromos.io", object_name("etl"))
    successor = KubectlSync(env.api, env.namespace, env.store,
                            env.orchestrator.commands(), lambda: FENCE, resync_s=1.0)
    successor.start()
    try:
        wait_until(lambda: calls_named(env, "delete_job"), "the deletion")
    finally:
        successor.stop()
    assert calls_named(env, "delete_job") == ["etl"] and env.store.get_job("etl") is None
