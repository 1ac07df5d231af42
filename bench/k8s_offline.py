"""What the Kubernetes benchmarks share: the offline cluster, a namespace, a real
``dromos serve --runtime kubernetes`` in a subprocess, and a pod watcher that times events.

Not a benchmark itself. ``bench/k8s_bind.py``, ``bench/k8s_cron.py`` and
``bench/k8s_rollout.py`` import it (``bench/`` is put on ``sys.path`` by running a script
from it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

REPO = Path(__file__).resolve().parents[1]
OFFLINE = REPO / "kind-cluster" / "offline"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, for the report."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def up(name: str, nodes: int, *, lift_qps: bool = True) -> str:
    """Start (or reuse) offline cluster ``name`` with ``nodes`` KWOK nodes; its kubeconfig."""
    log(f"starting cluster {name} with {nodes} nodes (kind-cluster/offline/up.sh"
        f"{' --disable-qps-limits' if lift_qps else ''})...")
    argv = ["bash", str(OFFLINE / "up.sh"), "--name", name, "--nodes", str(nodes)]
    if lift_qps:
        argv.append("--disable-qps-limits")
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"up.sh failed:\n{done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1].removeprefix("KUBECONFIG=")


def down(name: str) -> None:
    subprocess.run(["bash", str(OFFLINE / "down.sh"), "--name", name], capture_output=True,
                   check=False)


def make_namespace(core: Any, name: str) -> None:
    """Create namespace ``name`` with Pod Security ``restricted`` enforced (as Dromos's pods
    are built for) and wait for its default service account (pods are admitted then)."""
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted"}}}
    try:
        core.create_namespace(body)
    except ApiException as e:
        if e.status != 409:
            raise
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            return
        except ApiException as e:
            if e.status != 404:
                raise
            time.sleep(0.1)


def delete_namespace(core: Any, name: str) -> None:
    """Delete a namespace without waiting (its pods go with it)."""
    with contextlib.suppress(ApiException):
        core.delete_namespace(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0 < q <= 100) of ``values`` (NaN when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def parse_time(text: str) -> float:
    """An RFC 3339 timestamp as seconds since the epoch."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).timestamp()


# ---------------------------------------------------------------------- dromos serve


class DromosServer:
    """A real ``dromos serve --runtime kubernetes`` on a free loopback port, its pods in
    ``namespace`` of the cluster ``kubeconfig`` points at, its state in a temporary
    directory. ``extra_args`` are added to the command line (e.g. the applier's concurrency
    once it has a flag). Use as a context manager; :attr:`http` is a client for its API."""

    def __init__(self, kubeconfig: str, namespace: str,
                 extra_args: Sequence[str] = ()) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.extra_args = list(extra_args)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._state = tempfile.TemporaryDirectory(prefix="dromos-kbench-")
        self._log = Path(self._state.name) / "serve.log"
        self._process: subprocess.Popen[bytes] | None = None
        # Long: today an answer can wait for a control-loop pass that launches every
        # instance of a large app (the API and the loop share one lock).
        self.http = httpx.Client(base_url=self.base, timeout=900.0)

    def __enter__(self) -> DromosServer:
        env = dict(os.environ, KUBECONFIG=self.kubeconfig,
                   DROMOS_KUBE_NAMESPACE=self.namespace, PYTHONUNBUFFERED="1")
        argv = [sys.executable, "-m", "scheduler.cli", "serve", "--runtime", "kubernetes",
                "--kube-namespace", self.namespace, "--port", str(self.port),
                "--state-dir", str(Path(self._state.name) / "state"),
                "--log-level", "WARNING", *self.extra_args]
        with self._log.open("wb") as out:
            self._process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out,
                                             stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"dromos serve exited: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get("/ping").status_code == 200:
                    # The pid, so a profiler can be attached (py-spy record -p PID).
                    log(f"dromos serve pid {self._process.pid} on {self.base}")
                    return self
            time.sleep(0.2)
        raise RuntimeError(f"dromos serve did not answer /ping: {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self._log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def __exit__(self, *exc: object) -> None:
        self.http.close()
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._state.cleanup()

    def post(self, path: str, body: Any) -> httpx.Response:
        r = self.http.post(path, json=body)
        if r.status_code >= 300:
            raise RuntimeError(f"POST {path}: {r.status_code} {r.text[:500]}")
        return r

    def put(self, path: str, body: Any) -> httpx.Response:
        r = self.http.put(path, json=body)
        if r.status_code >= 300:
            raise RuntimeError(f"PUT {path}: {r.status_code} {r.text[:500]}")
        return r


# ---------------------------------------------------------------------- pod watcher


@dataclass
class PodSeen:
    """What the watcher learnt about one pod; times are this machine's ``time.time()`` when
    the event arrived (sub-second, unlike the API's one-second timestamps)."""

    name: str
    created: float  # metadata.creationTimestamp (the API server's clock, whole seconds)
    first_seen: float
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    ready_at: float | None = None
    terminal_at: float | None = None  # Succeeded/Failed, or a deletion began
    deleted_at: float | None = None


class PodWatcher:
    """Watches the pods of one namespace from a list's resourceVersion on, decoding the raw
    event stream itself (the client's typed models cost far more CPU than the events). Safe
    to read from other threads under :attr:`cond`."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        self.core = k8s_client.CoreV1Api(api_client)
        self.namespace = namespace
        self.pods: dict[str, PodSeen] = {}
        self.cond = threading.Condition()
        self._stop = threading.Event()
        self._rv = ""
        self._thread = threading.Thread(target=self._run, name=f"watch-{namespace}",
                                        daemon=True)

    def __enter__(self) -> PodWatcher:
        page = json.loads(self.core.list_namespaced_pod(
            self.namespace, _preload_content=False).data)
        now = time.time()
        with self.cond:
            for pod in page.get("items") or ():
                self._apply("ADDED", pod, now)
        self._rv = page["metadata"]["resourceVersion"]
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                resp = self.core.list_namespaced_pod(
                    self.namespace, watch=True, resource_version=self._rv,
                    allow_watch_bookmarks=True, timeout_seconds=60,
                    _preload_content=False, _request_timeout=(5, 90))
                for line in resp:
                    self._line(line)
                    if self._stop.is_set():
                        break
                resp.release_conn()
            except Exception as e:  # the watch is restarted from the last version seen
                if not self._stop.is_set():
                    log(f"watch {self.namespace}: {e}; restarting")
                    time.sleep(0.5)

    _buffer = b""

    def _line(self, chunk: bytes) -> None:
        self._buffer += chunk
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            if not line.strip():
                continue
            event = json.loads(line)
            obj = event.get("object") or {}
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if rv:
                self._rv = rv
            if event.get("type") in ("BOOKMARK", "ERROR"):
                continue
            with self.cond:
                self._apply(event["type"], obj, time.time())
                self.cond.notify_all()

    def _apply(self, kind: str, pod: dict[str, Any], now: float) -> None:
        meta = pod.get("metadata") or {}
        name = meta.get("name", "")
        seen = self.pods.get(name)
        if seen is None:
            seen = self.pods[name] = PodSeen(
                name=name, created=parse_time(meta.get("creationTimestamp")
                                              or datetime.now(UTC).isoformat()),
                first_seen=now, labels=dict(meta.get("labels") or {}),
                annotations=dict(meta.get("annotations") or {}))
        status = pod.get("status") or {}
        if seen.ready_at is None and any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or ()):
            seen.ready_at = now
        if seen.terminal_at is None and (
                status.get("phase") in ("Succeeded", "Failed") or meta.get("deletionTimestamp")):
            seen.terminal_at = now
        if kind == "DELETED" and seen.deleted_at is None:
            seen.deleted_at = now
            if seen.terminal_at is None:
                seen.terminal_at = now

    def wait_until(self, done: Callable[[dict[str, PodSeen]], bool], timeout: float,
                   what: str) -> float:
        """Block until ``done(pods)`` holds (checked on every event and every second); the
        ``time.time()`` it first held. Raises TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not done(self.pods):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
                self.cond.wait(min(1.0, left))
            return time.time()


@contextlib.contextmanager
def api_client(configuration: Any) -> Iterator[Any]:
    client = k8s_client.ApiClient(configuration)
    try:
        yield client
    finally:
        client.close()
