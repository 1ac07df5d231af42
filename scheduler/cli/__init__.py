"""The ``dromos`` command line: ``dromos serve`` runs Dromos; ``apps``, ``tasks``,
``deployments``, ``jobs [run|add|delete]``, ``nodes``, ``deploy``, ``scale``, ``logs`` and
``stop-all`` talk to a running one over HTTP (``--url`` or ``$DROMOS_URL``; credentials from
``$DROMOS_AUTH_TOKEN``). Drawing is in :mod:`scheduler.cli_render`, jobs from files in
:mod:`scheduler.cli_jobs`, stopping in :mod:`scheduler.cli_stop`.

This package imports nothing of ``api`` (an import-linter contract holds it to that): ``serve``
runs whatever :func:`main` is given as ``serve``; the ``dromos`` program
(:mod:`scheduler.cli.program`, also ``python -m scheduler.cli``) wires it to the composition
root, which builds Dromos and its HTTP server."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scheduler import cli_jobs, cli_render, cli_stop
from scheduler.cli_client import (
    DEFAULT_URL,
    ApiError,
    Client,
    Progress,
    WaitOutcome,
    resolve_url,
    wait_for_app,
)
from scheduler.config import (
    ConfigError,
    ServeConfig,
    check_exposure,
    credentials_from,
    load_nodes,
    parse_body_limit,
    parse_port_range,
)
from scheduler.runtimes import registry as runtime_registry
from scheduler.stop import shutdown_note
from scheduler.store.state_lock import StateDirHeld

ServeFunction = Callable[[ServeConfig], int]
"""Runs Dromos for a validated configuration until interrupted; returns the exit code."""


def _serve(args: argparse.Namespace) -> int:
    try:
        credentials = credentials_from(args.auth_token, args.basic_auth)
        check_exposure(args.host, credentials)
        nodes = tuple(load_nodes(Path(args.nodes))) if args.nodes else None
        if args.kube_namespace:
            # The runtime reads its namespace from the environment (as in-cluster, where the
            # Deployment sets it from the pod's own namespace); ServeConfig stays generic.
            os.environ["DROMOS_KUBE_NAMESPACE"] = args.kube_namespace
        if args.create_namespace:
            os.environ["DROMOS_KUBE_CREATE_NAMESPACE"] = "1"
        config = ServeConfig(
            host=args.host,
            port=args.port,
            state_dir=Path(args.state_dir),
            runtime=args.runtime,
            nodes=nodes,
            credentials=credentials,
            service_bind=args.service_bind,
            service_ports=parse_port_range(args.service_ports),
            kube_health=args.kube_health,
            max_body_bytes=parse_body_limit(args.max_body_bytes),
            standby=args.standby,
            placement=args.placement,
            sandbox_gc_delay=args.sandbox_gc_delay,
            sandbox_keep=args.sandbox_keep,
            store=args.store or default_store(args.runtime),
            advertise=args.advertise,
            lease_seconds=args.lease_duration,
            renew_deadline_seconds=args.renew_deadline,
            retry_seconds=args.retry_period,
        )
        serve: ServeFunction | None = getattr(args, "serve", None)
        if serve is None:
            raise ConfigError("this entry point cannot serve: run `dromos serve` "
                              "(or python -m scheduler.cli serve)")
        served = False
        try:
            served = True
            return serve(config)
        except KeyboardInterrupt:
            # uvicorn re-raises the Ctrl-C it handled once it has shut down: not an error.
            return EXIT_INTERRUPTED
        except StateDirHeld as e:
            served = False
            print(f"dromos: {e}", file=sys.stderr)
            return EXIT_HELD
        finally:
            # Tasks outlive Dromos by design; say so, and how to stop them.
            note = shutdown_note(config.state_dir, config.runtime) if served else None
            if note:
                logging.getLogger("dromos").info(note)
    except ConfigError as e:
        print(f"dromos: {e}", file=sys.stderr)
        return 2


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number >= 0")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def default_store(runtime: str) -> str:
    """Kubernetes when Dromos runs in a cluster with the Kubernetes runtime, else SQLite."""
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    return "kubernetes" if runtime == "kubernetes" and in_cluster else "sqlite"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dromos", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the scheduler, REST API and status page")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--state-dir", default=".dromos", help="SQLite state, task sandboxes")
    serve.add_argument("--runtime", choices=runtime_registry.names(),
                       default=runtime_registry.names()[0],
                       help="local processes, containers on a Docker Engine, or pods on a "
                            "Kubernetes cluster (kubeconfig from the usual places)")
    serve.add_argument("--kube-namespace",
                       help="kubernetes runtime: the namespace of Dromos's pods (default "
                            "$DROMOS_KUBE_NAMESPACE, else dromos)")
    serve.add_argument("--kube-health", choices=["auto", "api", "probe"],
                       help="kubernetes runtime: task health from the pods' readiness in the "
                            "API ('api') or from Dromos's own probes of pod IPs ('probe'); "
                            "'auto' (default, or $DROMOS_KUBE_HEALTH): probe inside a cluster, "
                            "api outside")
    serve.add_argument("--create-namespace", action="store_true",
                       help="kubernetes runtime: create the namespace when it does not exist "
                            "(default: refuse to start, saying so)")
    serve.add_argument("--sandbox-gc-delay", type=_non_negative_float, default=3600.0,
                       metavar="SECONDS",
                       help="local runtime: remove an ended task's sandbox this long after "
                            "it ended (default 3600)")
    serve.add_argument("--sandbox-keep", type=_non_negative_int, default=5, metavar="N",
                       help="local runtime: keep at most the N most recent ended tasks' "
                            "sandboxes per app (default 5)")
    serve.add_argument("--nodes", help="JSON or YAML list of nodes (default: this machine)")
    serve.add_argument("--auth-token", help="require 'Authorization: token=<t>' (or Bearer)")
    serve.add_argument("--basic-auth", help="require HTTP Basic user:password")
    serve.add_argument("--service-bind", default="127.0.0.1",
                       help="address the built-in load balancer listens on for service "
                            "ports (local and docker runtimes); 'off' disables it")
    serve.add_argument("--service-ports", default="10000-20000",
                       help="range service ports are auto-assigned from")
    serve.add_argument("--max-body-bytes", default="3Mi",
                       help="largest request body accepted (bytes, or with K/M/G, read as "
                            "KiB/MiB/GiB); larger ones get 413 (default 3Mi)")
    serve.add_argument("--placement", choices=["binpack", "balanced", "spread"],
                       default="binpack",
                       help="rank feasible nodes: fullest first (binpack), fullest first "
                            "keeping free mem:cpu level (balanced: fewer nodes on mixed "
                            "demand), or emptiest first (spread)")
    serve.add_argument("--store", choices=["sqlite", "kubernetes"],
                       help="where state lives: SQLite in --state-dir (default), or "
                            "dromos.io objects in the Kubernetes API, shared by replicas that "
                            "elect a leader (default for --runtime kubernetes in a cluster)")
    serve.add_argument("--advertise", metavar="HOST:PORT",
                       help="the address other replicas forward writes to and /v2/leader "
                            "names (default --host:--port)")
    serve.add_argument("--lease-duration", type=float, default=15.0,
                       help="--store kubernetes: seconds a leader's Lease lasts (15)")
    serve.add_argument("--renew-deadline", type=float, default=10.0,
                       help="--store kubernetes: a leader that has not renewed for this long "
                            "stops leading and writing (10)")
    serve.add_argument("--retry-period", type=float, default=2.0,
                       help="--store kubernetes: seconds between election attempts (2)")
    serve.add_argument("--standby", action="store_true",
                       help="if another Dromos holds --state-dir, wait (answering /ping as a "
                            "standby) and take over when it exits, instead of refusing")
    serve.add_argument("--log-level", default="INFO")
    serve.set_defaults(func=_serve)
    add_client_commands(sub, parser)
    return parser


def main(argv: list[str] | None = None, serve: ServeFunction | None = None) -> int:
    """Run one command. ``serve`` is what ``dromos serve`` calls (see the module docstring)."""
    args = build_parser().parse_args(argv)
    args.serve = serve
    logging.basicConfig(
        # Client commands log only warnings (httpx logs every request at INFO).
        level=getattr(args, "log_level", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args))


# ---------------------------------------------------------------------- client commands
#
# Everything below talks to a running Dromos over HTTP (scheduler.cli_client). Results go to
# stdout (a table, or JSON with --json); progress and notes go to stderr, so
# `dromos apps --json | jq` and `dromos deploy -f app.json --wait > result.json` stay clean.

EXIT_OK = 0
EXIT_ERROR = 1
"""The request failed (Dromos unreachable, an error answer, an unreadable file)."""
EXIT_USAGE = 2
"""argparse's code for bad arguments."""
EXIT_NOT_DONE = 3
"""What was waited for did not succeed: ``--wait`` gave up (timeout, unplaceable, failed
deployment) or a followed job run ended other than in success."""
EXIT_INTERRUPTED = 130
EXIT_HELD = 4
"""``dromos serve``: another live Dromos holds the state directory (and no ``--standby``)."""

def _clean(value: Any) -> str:
    """A table cell or message part: user data's control characters shown as ``\\xNN``."""
    return cli_render.clean(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
           widths: Mapping[int, int] | None = None) -> None:
    """Print a table on stdout (rich; see :mod:`scheduler.cli_render`). The columns in
    ``widths`` hold free text and give way first on a narrow terminal."""
    cli_render.table(headers, rows, flexible=tuple(widths or ()))


def _parse_time(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _span(seconds: float) -> str:
    s = int(abs(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 48 * 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def _ago(value: Any) -> str:
    t = _parse_time(value)
    return f"{_span((datetime.now(UTC) - t).total_seconds())} ago" if t else "-"


def _until(value: Any) -> str:
    t = _parse_time(value)
    if t is None:
        return "-"
    left = (t - datetime.now(UTC)).total_seconds()
    return "due now" if left <= 0 else f"in {_span(left)}"


def _seconds(value: Any) -> str:
    if value is None:
        return "-"
    v = float(value)
    return f"{v * 1000:.0f}ms" if v < 1 else f"{v:.1f}s" if v < 60 else _span(v)


def _amount(used: float, total: float) -> str:
    return f"{used:g}/{total:g}"


def _client(args: argparse.Namespace) -> Client:
    return Client(resolve_url(args.url))


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


def _client_command(func: Callable[[argparse.Namespace], int]) -> Callable[
        [argparse.Namespace], int]:
    """Turn API errors into one line on stderr and exit 1, Ctrl-C into exit 130."""
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ApiError as e:
            print(f"dromos: {e}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            # `dromos apps --json | head`: the reader left; stop quietly, as `cat` does.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK
    run.__doc__ = func.__doc__
    return run


def _waiting_words(c: Client) -> dict[str, str]:
    """App id -> Dromos's sentence for why instances wait (empty if /ui is unavailable)."""
    try:
        state = c.state()
    except ApiError:
        return {}
    return {a["id"]: f"{a['waiting']['count']} waiting: {a['waiting']['reason']}"
            for a in state.get("apps", []) if a.get("waiting")}


@_client_command
def _apps(args: argparse.Namespace) -> int:
    """`dromos apps`: one line per app."""
    with _client(args) as c:
        apps = c.apps()
        if args.json:
            _print_json(apps)
            return EXIT_OK
        waiting = _waiting_words(c)
    if not apps:
        print("No apps.", file=sys.stderr)
        return EXIT_OK
    rows = []
    for a in apps:
        image = ((a.get("container") or {}).get("docker") or {}).get("image")
        what = a.get("cmd") or " ".join(a.get("args") or []) or (f"image {image}" if image else "")
        rows.append([
            a["id"], f"{a.get('tasksRunning', 0)}/{a['instances']}",
            a.get("tasksHealthy", 0) if a.get("healthChecks") else "-",
            a.get("tasksStaged", 0), _ago(a.get("version")), what, waiting.get(a["id"], ""),
        ])
    _table(["ID", "RUNNING", "HEALTHY", "STAGED", "VERSION", "COMMAND", "WAITING"], rows,
                 {5: 40, 6: 70})
    return EXIT_OK


@_client_command
def _tasks(args: argparse.Namespace) -> int:
    """`dromos tasks [APP]`."""
    with _client(args) as c:
        wanted = c.require_app(args.app) if args.app else None
        tasks = c.tasks()
    if wanted is not None:
        tasks = [t for t in tasks if t.get("appId") == wanted]
    if args.json:
        _print_json(tasks)
        return EXIT_OK
    if not tasks:
        print("No tasks.", file=sys.stderr)
        return EXIT_OK
    rows = []
    for t in tasks:
        results = t.get("healthCheckResults") or []
        health = "-" if not results else "healthy" if all(r.get("alive") for r in results) \
            else "unhealthy"
        rows.append([t["id"], t["appId"], t["host"], ",".join(map(str, t.get("ports", []))),
                     t["state"].removeprefix("TASK_"), health,
                     _ago(t.get("startedAt")) if t.get("startedAt") else "-"])
    _table(["ID", "APP", "HOST", "PORTS", "STATE", "HEALTH", "STARTED"], rows)
    return EXIT_OK


@_client_command
def _deployments(args: argparse.Namespace) -> int:
    """`dromos deployments`: Marathon's deployments, when this Dromos has that API."""
    with _client(args) as c:
        deps = c.deployments()
    if deps is None:
        if args.json:
            _print_json([])
        print("dromos: this Dromos has no deployments API (/v2/deployments); apps converge "
              "without deployment objects", file=sys.stderr)
        return EXIT_OK
    if args.json:
        _print_json(deps)
        return EXIT_OK
    if not deps:
        print("No deployments in progress.", file=sys.stderr)
        return EXIT_OK
    rows = []
    for d in deps:
        actions = ", ".join(f"{a.get('action')} {a.get('app', '')}".strip()
                            for a in d.get("currentActions") or [])
        rows.append([d.get("id"), ",".join(d.get("affectedApps") or []),
                     f"{d.get('currentStep', 0)}/{d.get('totalSteps', 0)}", actions,
                     _ago(d.get("version"))])
    _table(["ID", "APPS", "STEP", "ACTIONS", "STARTED"], rows, {3: 60})
    return EXIT_OK


@_client_command
def _jobs(args: argparse.Namespace) -> int:
    """`dromos jobs`: one line per job, with its schedule in words and next run."""
    command = getattr(args, "jobs_command", None)
    if command == "run":
        return _jobs_run(args)
    if command in ("add", "delete", "backfill"):
        with _client(args) as c:
            return int(getattr(cli_jobs, command)(c, args))
    with _client(args) as c:
        jobs = c.state()["jobs"]
    if args.json:
        _print_json(jobs)
        return EXIT_OK
    if not jobs:
        print("No jobs.", file=sys.stderr)
        return EXIT_OK
    rows = []
    for j in jobs:
        last = j["runs"][-1] if j["runs"] else None
        status = "disabled" if j["disabled"] else j["status"]
        d = j["durations"]
        rows.append([
            j["name"], j["scheduleText"], _until(j["next"]) if j["next"] else "-",
            f"{last['status']}{' (marked)' if last.get('trigger') == 'marked' else ''} "
            f"{_ago(last.get('finishedAt') or last.get('createdAt'))}" if last else "-",
            status, j["successCount"], j["errorCount"],
            _seconds(d["median"]) if d["count"] else "-",
            _seconds(d["p95"]) if d["count"] else "-",
        ])
    _table(["NAME", "SCHEDULE", "NEXT", "LAST", "STATUS", "OK", "FAIL", "P50", "P95"],
                 rows, {1: 50})
    return EXIT_OK


@_client_command
def _nodes(args: argparse.Namespace) -> int:
    """`dromos nodes`: capacity, what is reserved, tasks per node."""
    with _client(args) as c:
        nodes = c.state()["nodes"]
    if args.json:
        _print_json(nodes)
        return EXIT_OK
    rows = []
    for n in nodes:
        u, cap = n["used"], n["capacity"]
        rows.append([n["hostname"], _amount(u["cpus"], cap["cpus"]),
                     _amount(u["mem"], cap["mem"]), _amount(u["disk"], cap["disk"]),
                     len(n["tasks"]),
                     ",".join(f"{k}={v}" for k, v in n["attributes"].items())])
    _table(["HOSTNAME", "CPUS", "MEM (MiB)", "DISK (MiB)", "TASKS", "ATTRIBUTES"], rows,
                 {5: 60})
    return EXIT_OK


def _after_change(c: Client, args: argparse.Namespace, app_id: str, deployment: str | None,
                  created: bool, changed: bool = True) -> int:
    """Report a deploy/scale, and with ``--wait`` wait for convergence."""
    verb = "created" if created else "updated" if changed else "unchanged:"
    print(f"dromos: {verb} {app_id}" + (f" (deployment {deployment})" if deployment else ""),
          file=sys.stderr)
    outcome: WaitOutcome | None = None
    if args.wait:
        with cli_render.progress(app_id) as bar:
            def show(p: Progress, elapsed: float) -> None:
                done = p.healthy if p.healthy is not None else p.running
                bar.update(min(done, p.instances), p.instances or None, p.describe(), elapsed)

            outcome = wait_for_app(c, app_id, deployment, timeout=args.timeout,
                                   stuck_after=args.stuck_after, on_progress=show)
        print(f"dromos: {app_id}: {outcome.message}", file=sys.stderr)
    if args.json:
        _print_json({
            "app": c.app(app_id), "deploymentId": deployment, "created": created,
            "changed": changed,
            "wait": None if outcome is None else {
                "outcome": outcome.outcome, "message": outcome.message,
                "seconds": round(outcome.seconds, 3)},
        })
    return EXIT_OK if outcome is None or outcome.ok else EXIT_NOT_DONE


@_client_command
def _deploy(args: argparse.Namespace) -> int:
    """`dromos deploy -f app.json [--wait]`: create the app, or update it if it exists."""
    definition = cli_jobs.read_definition(args.file, "app definition")
    if cli_jobs.is_job(definition):
        raise cli_jobs.not_an_app(args.file)
    with _client(args) as c:
        # Deploying what the app already is changes nothing: wait for it as it is, instead
        # of a PUT that its own deployment (e.g. the one creating it) would refuse.
        same = None if args.force else c.already_defined(definition)
        if same is not None:
            app_id, deployment = same
            return _after_change(c, args, app_id, deployment, False, changed=False)
        app_id, deployment, created = c.deploy(definition, force=args.force)
        return _after_change(c, args, app_id, deployment, created)


@_client_command
def _scale(args: argparse.Namespace) -> int:
    """`dromos scale APP N [--wait]`."""
    with _client(args) as c:
        app_id, deployment, _ = c.scale(args.app, args.instances, force=args.force)
        return _after_change(c, args, "/" + app_id.strip("/"), deployment, False)


def _emit_chunks(body: Mapping[str, Any], as_json: bool) -> bool:
    """Print a /ui/logs answer's text (stdout's to stdout, stderr's to stderr, combined
    output to stdout); with ``as_json`` one JSON line per non-empty chunk. Returns whether
    there was any text. Output is the task's own and printed as is, as ``kubectl logs``
    does."""
    got = False
    for chunk in body.get("chunks", []):
        text = chunk.get("text") or ""
        if not text:
            continue
        got = True
        if as_json:
            print(json.dumps({"taskId": body.get("taskId"), "stream": chunk.get("stream"),
                              "text": text}), flush=True)
        else:
            out = sys.stderr if chunk.get("stream") == "stderr" else sys.stdout
            out.write(text)
            out.flush()
    return got


def _follow(c: Client, ident: str, tail: int | None, as_json: bool, *,
            follow: bool, until_done: Callable[[], bool] | None = None,
            interval: float = 1.0) -> None:
    """Print output, then (``follow``) what follows, until the task or run is no longer
    running and nothing new came (or ``until_done()`` says so). When a job run moves on to
    its next attempt, that attempt's output is printed from its start."""
    cursor: str | None = None
    task_id: str | None = None
    while True:
        body = c.logs(ident, tail=tail, cursor=cursor)
        if task_id is not None and body.get("taskId") != task_id:
            print(f"dromos: next attempt {body.get('taskId')}", file=sys.stderr)
            task_id, cursor, tail = body.get("taskId"), None, None
            continue
        task_id = body.get("taskId")
        got = _emit_chunks(body, as_json)
        cursor = body.get("cursor")
        if not follow:
            return
        done = until_done() if until_done is not None else not body.get("running")
        if done and not got:
            return
        time.sleep(interval)


@_client_command
def _logs(args: argparse.Namespace) -> int:
    """`dromos logs ID [-f] [--tail N]`: a task's or job run's stdout/stderr."""
    with _client(args) as c:
        _follow(c, args.id, None if args.tail < 0 else args.tail, args.json,
                follow=args.follow)
    return EXIT_OK


_FINAL_RUN = frozenset({"success", "failed", "skipped", "killed"})


def _jobs_run(args: argparse.Namespace) -> int:
    """`dromos jobs run NAME [--follow]`: start a manual run; with --follow print its output
    and status until it ends (exit 0 on success, 3 otherwise)."""
    with _client(args) as c:
        run = c.run_job(args.name)
        run_id = run["id"]
        if not args.follow:
            if args.json:
                _print_json(run)
            else:
                print(run_id)
            return EXIT_OK
        print(f"dromos: started run {run_id}", file=sys.stderr)
        started = time.monotonic()
        deadline = None if args.timeout is None else started + args.timeout
        seen = {"status": "", "final": False}

        def done() -> bool:
            nonlocal run
            run = c.run(run_id)
            line = run["status"] + (f" on {run['host']}" if run.get("host") else "") + (
                f" (attempt {run['attempt'] + 1})" if run.get("attempt") else "") + (
                f": {run['message']}" if run.get("message") and run["status"] == "queued"
                else "")
            final = run["status"] in _FINAL_RUN
            if bar.live:
                bar.update(0, None, line, time.monotonic() - started)
            elif line != seen["status"] and not args.json and not final:
                print(f"dromos: run {_clean(run_id)} {_clean(line)}", file=sys.stderr)
                seen["status"] = line
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError
            return final

        try:
            with cli_render.progress(f"run {run_id}", live=not args.json) as bar:
                _follow(c, run_id, None, args.json, follow=True, until_done=done,
                        interval=0.5)
        except TimeoutError:
            print(f"dromos: run {run_id} still {run['status']} after {args.timeout:g}s",
                  file=sys.stderr)
            return EXIT_NOT_DONE
        took = f" in {_seconds(run['duration'])}" if run.get("duration") is not None else ""
        code = f", exit {run['exitCode']}" if run.get("exitCode") is not None else ""
        if args.json:
            print(json.dumps({"run": run}), flush=True)
        else:
            print(f"dromos: run {_clean(run_id)} {run['status']}{took}{code}"
                  + (f": {_clean(run['message'])}" if run.get("message") and
                     run["status"] != "success" else ""), file=sys.stderr)
        return EXIT_OK if run["status"] == "success" else EXIT_NOT_DONE


def add_client_commands(sub: Any, parser: argparse.ArgumentParser) -> None:
    """The commands that talk to a running Dromos: ``apps``, ``tasks``, ``deployments``,
    ``jobs [run]``, ``nodes``, ``deploy``, ``scale``, ``logs``. ``--url`` and ``--json`` work
    before or after the command name."""
    parser.add_argument("--url", default=None,
                        help=f"Dromos's address (default: $DROMOS_URL, else {DEFAULT_URL})")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: given after the command they win; not given, the top-level value stays.
    common.add_argument("--url", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON for scripts")

    def waiting(p: argparse.ArgumentParser) -> None:
        p.add_argument("--wait", action="store_true",
                       help="wait until the app runs as defined, with a progress bar; exit 3 "
                            "if it does not (timeout, cannot be placed, deployment failed)")
        p.add_argument("--timeout", type=float, default=300.0,
                       help="seconds --wait waits at most (default 300)")
        p.add_argument("--stuck-after", type=float, default=30.0,
                       help="--wait gives up once placement has been rejected this many "
                            "seconds in a row (default 30)")
        p.add_argument("--force", action="store_true",
                       help="change the app even while a deployment holds it (Marathon's "
                            "?force=true)")

    p = sub.add_parser("apps", parents=[common], help="list apps (services)")
    p.set_defaults(func=_apps)
    p = sub.add_parser("tasks", parents=[common], help="list running tasks")
    p.add_argument("app", nargs="?", help="only this app's tasks")
    p.set_defaults(func=_tasks)
    p = sub.add_parser("deployments", parents=[common], help="list deployments in progress")
    p.set_defaults(func=_deployments)
    p = sub.add_parser("jobs", parents=[common],
                       help="list jobs; `jobs run NAME`, `jobs add -f FILE`, `jobs delete NAME`")
    jobs_sub = p.add_subparsers(dest="jobs_command")
    run = jobs_sub.add_parser("run", parents=[common], help="start a manual run of a job")
    run.add_argument("name")
    run.add_argument("--follow", "-f", action="store_true",
                     help="print its output and status until it ends; exit 3 unless success")
    run.add_argument("--timeout", type=float, default=None,
                     help="with --follow: give up (exit 3) after this many seconds")
    cli_jobs.add_parsers(jobs_sub, common)
    p.set_defaults(func=_jobs)
    p = sub.add_parser("nodes", parents=[common], help="list nodes with usage")
    p.set_defaults(func=_nodes)
    p = sub.add_parser("deploy", parents=[common], help="create or update an app from a file")
    p.add_argument("-f", "--file", required=True, help="app definition (JSON or YAML; - = stdin)")
    waiting(p)
    p.set_defaults(func=_deploy)
    p = sub.add_parser("scale", parents=[common], help="change an app's instances")
    p.add_argument("app")
    p.add_argument("instances", type=_non_negative)
    waiting(p)
    p.set_defaults(func=_scale)
    cli_stop.add_parser(sub, common).set_defaults(func=_client_command(cli_stop.stop_all))
    p = sub.add_parser("logs", parents=[common], help="a task's or job run's stdout/stderr")
    p.add_argument("id", help="a task id or a job run id")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    p.add_argument("--tail", type=int, default=-1, help="only the last N lines (default all)")
    p.set_defaults(func=_logs)


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value
