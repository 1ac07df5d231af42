"""The composition root: the one place that builds Dromos from its configuration.

:func:`build` turns a :class:`~scheduler.config.ServeConfig` into a :class:`Dromos`: the SQLite
store, the runtime (by name, from :mod:`scheduler.runtimes.registry`), the event bus, the
clock, the health monitor, the orchestrator, the group manager and the built-in balancer.
:func:`serve` adds the HTTP application (``api``) and runs it; the ``dromos`` program
(:mod:`scheduler.cli.program`) calls it for ``dromos serve``.

Everything else receives what it needs from here; nothing below this module builds a store,
a runtime or a balancer of its own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from api.server import create_server_app, hold_state_dir, run_http
from scheduler.clock import Clock, SystemClock
from scheduler.config import ConfigError, ServeConfig
from scheduler.events import DROMOS, EventBus
from scheduler.ha.elector import NotLeader
from scheduler.ha.kube_status import AppFigures, JobFigures, StatusWriter
from scheduler.ha.kubectl_sync import Commands, KubectlSync
from scheduler.ha.lease import LeaseTimings
from scheduler.ha.lease_api import KubeLeaseApi
from scheduler.ha.replica import Replica
from scheduler.model.app import parse_app
from scheduler.model.job import parse_job
from scheduler.model.task import TaskState
from scheduler.model.timefmt import iso
from scheduler.orchestrator import NotFound, Orchestrator
from scheduler.orchestrator.group_commands import GroupManager
from scheduler.placement.results import Strategy
from scheduler.runtimes import registry
from scheduler.runtimes.base import Runtime
from scheduler.services.balancer import Balancer
from scheduler.services.health import HealthMonitor
from scheduler.services.open_files import raise_nofile_limit
from scheduler.store.base import StateStore
from scheduler.store.kubernetes import LEASE_NAME, KubernetesStore
from scheduler.store.sqlite import SqliteStore

log = logging.getLogger("dromos.server")


@dataclass
class Dromos:
    """A built, not yet started, Dromos: what :func:`serve` runs and the API is built on."""

    config: ServeConfig
    orchestrator: Orchestrator
    group_manager: GroupManager
    balancer: Balancer | None
    # With the Kubernetes store: this replica (the loop runs only while it leads).
    replica: Replica | None = None

    def start(self) -> None:
        """Start the balancer (if any), then the control loop, or (a replica) the election
        that starts the loop whenever this replica leads."""
        if self.balancer is not None:
            self.balancer.start()
            self.orchestrator.balancer = self.balancer
        if self.replica is not None:
            self.replica.start()
        else:
            self.orchestrator.start()

    def stop(self) -> None:
        """Stop the control loop, then the balancer. Tasks keep running (the next start
        adopts them). A leading replica hands the Lease over first."""
        if self.replica is not None:
            self.replica.stop()
            self.orchestrator.pause()
            self.orchestrator.runtime.close()
        else:
            self.orchestrator.stop()
        if self.balancer is not None:
            self.balancer.stop()


def build_runtime(config: ServeConfig) -> Runtime:
    """The runtime ``config.runtime`` names. Raises :class:`~scheduler.config.ConfigError`."""
    return registry.create(config.runtime, config)


def build_store(config: ServeConfig, fence: Callable[[], str]) -> StateStore:
    """SQLite in the state dir, or the Kubernetes API (``fence`` gives each write's token)."""
    if config.store == "kubernetes":
        store = KubernetesStore(kube_api_client(), kube_namespace(), fence)
        store.load()  # the copy reads are answered from, until this replica leads
        return store
    if config.store != "sqlite":
        raise ConfigError(f"unknown store {config.store!r} (sqlite or kubernetes)")
    return SqliteStore(config.state_dir / "dromos.db")


def kube_api_client() -> Any:
    """An API client from the usual places (in-cluster, else the kubeconfig)."""
    from kubernetes import client as k8s_client

    from scheduler.runtimes.kubernetes import load_client_configuration

    return k8s_client.ApiClient(load_client_configuration())


def kube_namespace() -> str:
    return os.environ.get("DROMOS_KUBE_NAMESPACE") or "dromos"


def build_orchestrator(config: ServeConfig,
                       fence: Callable[[], str] = lambda: "") -> Orchestrator:
    """Store, runtime, bus, clock and health monitor, assembled into an orchestrator."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    store = build_store(config, fence)
    runtime = build_runtime(config)
    clock = SystemClock()
    orchestrator = Orchestrator(store, runtime, EventBus(), clock,
                                health=build_health(config, runtime, clock),
                                strategy=Strategy(config.placement))
    orchestrator.service_ports.port_range = config.service_ports
    return orchestrator


def build_health(config: ServeConfig, runtime: Runtime, clock: Clock) -> HealthMonitor:
    """Dromos's own probes, or -- kubernetes runtime, ``--kube-health api`` (``auto`` outside
    a cluster, where pod IPs are not reachable in general) -- the pods' readiness read from
    the API (the kubelet runs the checks). Raises :class:`~scheduler.config.ConfigError` for
    an unknown mode."""
    if config.runtime != "kubernetes":
        return HealthMonitor(runtime, clock)
    from scheduler.runtimes.kubernetes import KubernetesRuntime
    from scheduler.services.api_health import ApiHealthMonitor, health_mode

    try:
        mode = health_mode(config.kube_health)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if mode == "api" and isinstance(runtime, KubernetesRuntime):
        return ApiHealthMonitor(runtime, clock)
    return HealthMonitor(runtime, clock)


def build_balancer(config: ServeConfig, orchestrator: Orchestrator) -> Balancer | None:
    """The built-in balancer, for runtimes whose tasks bind ports on this machine (see
    :attr:`~scheduler.runtimes.registry.RuntimeEntry.local_ports`), unless
    ``--service-bind off``. Bind failures go to the ``dromos`` event stream."""
    if not registry.entry(config.runtime).local_ports or config.service_bind == "off":
        return None
    lo, hi = config.service_ports
    for node in orchestrator.nodes():
        # Tasks bind their host ports on this same machine: a shared number is a clash.
        if any(a <= hi and lo <= b for a, b in node.ports):
            log.warning("service ports %d-%d overlap node %s's ports: a task may fail to "
                        "bind a port the balancer holds (or the reverse)", lo, hi,
                        node.hostname)
    bus, clock = orchestrator.bus, orchestrator.clock

    def report(kind: str, payload: dict[str, Any]) -> None:
        bus.publish(kind, clock.now(), stream=DROMOS, **payload)

    return Balancer(config.service_bind, on_event=report)


def build(config: ServeConfig) -> Dromos:
    """Everything ``dromos serve`` runs, built from ``config`` and not yet started."""
    if config.store == "kubernetes":
        return _build_replica(config)
    orchestrator = build_orchestrator(config)
    # Created now, not on the first /v2/groups request: creating it finishes any group change
    # a crash interrupted.
    group_manager = GroupManager(orchestrator)
    return Dromos(config, orchestrator, group_manager, build_balancer(config, orchestrator))


def _build_replica(config: ServeConfig) -> Dromos:
    """One of several replicas sharing the Kubernetes store: every write is fenced by the
    leader Lease; the control loop runs while this replica leads (scheduler/ha/replica.py)."""
    replicas: list[Replica] = []  # the store's fence asks the replica built below

    def fence() -> str:
        if not replicas:
            raise NotLeader("not elected yet")
        return replicas[0].elector.fence()

    orchestrator = build_orchestrator(config, fence)
    from scheduler.runtimes.kubernetes import KubernetesRuntime

    if isinstance(orchestrator.runtime, KubernetesRuntime):
        orchestrator.runtime.fence.token = fence  # pods and Services carry the token too
    try:
        timings = LeaseTimings(config.lease_seconds, config.renew_deadline_seconds,
                               config.retry_seconds)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    store = orchestrator.store
    assert isinstance(store, KubernetesStore)
    lease = KubeLeaseApi(store.api, store.namespace, LEASE_NAME, timeout_s=timings.retry_s)
    group_manager = GroupManager(orchestrator)  # a standby cannot finish a change: see lead()
    # kubectl as a way in: App and Job objects applied by users become commands; the
    # objects' status shows what runs (both only on the leader).
    sync = KubectlSync(store.api, store.namespace, store, kubectl_commands(orchestrator), fence)
    status = StatusWriter(store.api, store.namespace, store, fence,
                          lambda app_id: app_figures(orchestrator, app_id),
                          lambda name: job_figures(orchestrator, name), verdicts=sync.verdicts)

    def lead() -> None:
        orchestrator.reload()
        group_manager.resume()
        orchestrator.start()
        sync.start()
        status.start()

    def follow() -> None:
        sync.stop()
        status.stop()
        orchestrator.pause()

    replica = Replica(lease, config.address, timings, store, lead=lead, follow=follow,
                      refreshed=orchestrator.reload)
    replicas.append(replica)
    return Dromos(config, orchestrator, group_manager, build_balancer(config, orchestrator),
                  replica)


def kubectl_commands(o: Orchestrator) -> Commands:
    """What an applied or deleted App/Job object asks, as the REST API would do it. A kubectl
    delete wins over a running deployment (``force``), as ``kubectl delete`` is meant to."""
    return Commands(create_app=lambda d: o.create_app(parse_app(d)),
                    update_app=lambda d: o.update_app(parse_app(d)),
                    delete_app=lambda app_id: o.delete_app(app_id, force=True),
                    put_job=lambda d: o.put_job(parse_job(d)),
                    delete_job=o.delete_job)


def app_figures(o: Orchestrator, app_id: str) -> AppFigures | None:
    try:
        spec = o.app(app_id)
    except NotFound:
        return None
    tasks = o.tasks(app_id)
    return AppFigures(instances=spec.instances,
                      running=sum(t.state is TaskState.RUNNING for t in tasks),
                      healthy=sum(o.is_healthy(t, spec) is True for t in tasks),
                      version=spec.version or "")


def job_figures(o: Orchestrator, name: str) -> JobFigures | None:
    try:
        job = o.job(name)
    except NotFound:
        return None
    runs = o.job_runs(name, limit=1)
    last = runs[0] if runs else None
    upcoming = o.jobs.next_fire(name)
    return JobFigures(schedule=job.schedule or "",
                      last_run=iso(last.created_at) if last else None,
                      next_run=iso(upcoming) if upcoming else None,
                      last_result=last.status.value if last else None)


def serve(config: ServeConfig) -> int:
    """Build Dromos, serve its HTTP API until interrupted, then stop it. Only one process
    serves a state directory (:mod:`scheduler.store.state_lock`): raises
    :class:`~scheduler.store.state_lock.StateDirHeld` when another holds it, unless
    ``config.standby``, which waits for it."""
    lock = hold_state_dir(config)
    try:
        return _serve_holding(config)
    finally:
        lock.release()


def _serve_holding(config: ServeConfig) -> int:

    soft, _ = raise_nofile_limit()
    log.info("open files limit: %d", soft)
    dromos = build(config)
    app = create_server_app(dromos.orchestrator, dromos.group_manager, config, dromos.replica)
    dromos.start()
    log.info("Dromos on http://%s:%d (runtime %s, state %s)", config.host, config.port,
             config.runtime, config.state_dir)
    try:
        run_http(app, config.host, config.port)
    finally:
        dromos.stop()
    return 0
