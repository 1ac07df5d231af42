"""Failover of replicated Dromos on the offline control plane, and the price of the Kubernetes
store, in one run.

Three `dromos serve --store kubernetes --runtime kubernetes` replicas (as Dromos's service
account, under the shipped RBAC and fence policy) on a KWOK cluster. `--kills` times: kill -9
the leader, start a replacement replica, and time from the kill to the first write (an app
scaled by `PUT /v2/apps`, sent round-robin to the survivors, which forward it) answered 2xx.
Done with client-go's default lease (15 s lease, 10 s renew deadline, 2 s retry) and with a
short one (5 s, 3 s, 1 s). Then sequential REST writes per second on the Kubernetes store's
leader and, as the baseline, on a `dromos serve` with the SQLite store.

    python bench/failover.py [--kills 10] [--writes 200] [--json]

`--json`: the last line is one object with failover_p50_s, failover_max_s, lease_s (default
lease), short.{failover_p50_s, failover_max_s, lease_s}, writes_per_s_kubernetes,
writes_per_s_sqlite. Target: failover_max_s <= lease_s + 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
OFFLINE = REPO / "kind-cluster" / "offline"
MANIFESTS = REPO / "manifests"
CLUSTER = "dromos-bench-failover"
NS = "dromos-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kubectl(config: str, *args: str, input: str | None = None) -> str:
    done = subprocess.run(["kubectl", "--kubeconfig", config, *args], input=input,
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def cluster() -> str:
    done = subprocess.run(["bash", str(OFFLINE / "up.sh"), "--name", CLUSTER, "--nodes", "3"],
                          capture_output=True, text=True, timeout=3600, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not lines[-1].startswith("KUBECONFIG="):
        raise SystemExit(f"up.sh failed: {done.stderr[-2000:]}")
    return lines[-1].split("=", 1)[1]


def prepare(config: str, tmp: Path) -> Path:
    """CRDs, fence policy, a fenced namespace with Dromos's RBAC; a kubeconfig that acts as
    Dromos's service account there."""
    kubectl(config, "apply", "-f", str(MANIFESTS / "05-crds.yaml"))
    kubectl(config, "wait", "--for", "condition=Established", "--timeout", "60s",
            "-f", str(MANIFESTS / "05-crds.yaml"))
    kubectl(config, "apply", "-f", str(MANIFESTS / "15-fence.yaml"))
    subprocess.run(["kubectl", "--kubeconfig", config, "create", "namespace", NS],
                   capture_output=True, check=False)
    kubectl(config, "label", "--overwrite", "namespace", NS, "dromos.io/fenced=true")
    docs = []
    for doc in yaml.safe_load_all((MANIFESTS / "10-rbac.yaml").read_text()):
        if not doc:
            continue
        meta = doc["metadata"]
        if "namespace" in meta:
            meta["namespace"] = NS
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            meta["name"] = f"{meta['name']}-{NS}"
        if doc["kind"] == "ClusterRoleBinding":
            doc["roleRef"]["name"] = f"{doc['roleRef']['name']}-{NS}"
        for subject in doc.get("subjects", []):
            subject["namespace"] = NS
        docs.append(doc)
    kubectl(config, "apply", "-f", "-", input=yaml.safe_dump_all(docs))
    token = kubectl(config, "create", "token", "dromos", "-n", NS, "--duration", "3h").strip()
    kc = yaml.safe_load(Path(config).read_text())
    kc["users"][0]["user"] = {"token": token}
    out = tmp / "dromos.kubeconfig"
    out.write_text(yaml.safe_dump(kc))
    return out


class Replicas:
    """Replicas of one Dromos on the Kubernetes store (started, killed, replaced)."""

    def __init__(self, tmp: Path, kubeconfig: Path, lease: tuple[float, float, float]) -> None:
        self.tmp = tmp
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig),
                    "DROMOS_KUBE_DEFAULT_IMAGE": "dromos-test/busybox:1"}
        self.lease = lease
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.count = 0

    def start(self) -> int:
        port = free_port()
        self.count += 1
        log = open(self.tmp / f"replica-{self.count}.log", "ab")  # noqa: SIM115
        lease, deadline, retry = self.lease
        self.procs[port] = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "serve", "--port", str(port),
             "--state-dir", str(self.tmp / f"state-{self.count}"), "--runtime", "kubernetes",
             "--kube-namespace", NS, "--store", "kubernetes",
             "--advertise", f"127.0.0.1:{port}", "--lease-duration", str(lease),
             "--renew-deadline", str(deadline), "--retry-period", str(retry),
             "--log-level", "INFO"],
            stdout=log, stderr=log, env=self.env, start_new_session=True)
        return port

    def leader(self, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for port in list(self.procs):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/dromos/role",
                                 timeout=2).json()["role"] == "leader":
                        return port
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
            time.sleep(0.1)
        raise SystemExit("no leader elected")

    def kill9(self, port: int) -> None:
        self.procs[port].send_signal(signal.SIGKILL)
        self.procs.pop(port).wait(10)

    def stop(self) -> None:
        for p in self.procs.values():
            p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


LAST_ERROR: list[str] = [""]


def write(port: int, app: str, instances: int, label: str = "") -> bool:
    try:
        r = httpx.put(f"http://127.0.0.1:{port}/v2/apps{app}?force=true",
                      json={"id": app, "cmd": "sleep 1", "instances": instances, "cpus": 0.01,
                            "mem": 8, "labels": {"n": label}}, timeout=30)
        LAST_ERROR[0] = f"{r.status_code} {r.text[:300]}"
        return 200 <= r.status_code < 300
    except httpx.HTTPError as e:
        LAST_ERROR[0] = repr(e)
        return False


def failovers(r: Replicas, kills: int) -> list[float]:
    for _ in range(3):
        r.start()
    leader = r.leader()
    assert write(leader, "/bench/ping", 0)
    times = []
    for k in range(kills):
        leader = r.leader()
        r.kill9(leader)
        t0 = time.monotonic()
        r.start()  # a replacement, as the Deployment's ReplicaSet would start one
        survivors = list(r.procs)
        i = 0
        while not write(survivors[i % len(survivors)], "/bench/ping", k % 2):
            i += 1
            time.sleep(0.05)
        times.append(time.monotonic() - t0)
        print(f"  kill {k + 1}: first write accepted after {times[-1]:.2f} s", flush=True)
    return times


def writes_per_s(port: int, n: int) -> float:
    """Sequential writes that change an app's definition (a label) at 0 instances: the cost of
    the write path and the store, not of starting tasks."""
    t0 = time.monotonic()
    for i in range(n):
        if not write(port, f"/bench/w{i % 50}", 0, str(i)):
            raise SystemExit(f"write {i} failed: {LAST_ERROR[0]}")
    return n / (time.monotonic() - t0)


@contextmanager
def sqlite_server(tmp: Path) -> Iterator[int]:
    port = free_port()
    nodes = tmp / "nodes.json"
    nodes.write_text(json.dumps([{"hostname": "n1", "cpus": 8, "mem": 8192, "disk": 1000,
                                  "ports": "36500-36549"}]))
    log = open(tmp / "sqlite.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "serve", "--port", str(port),
                             "--state-dir", str(tmp / "sqlite-state"), "--nodes", str(nodes),
                             "--log-level", "WARNING"], stdout=log, stderr=log,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).text == "pong":
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("sqlite dromos did not start")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(20)


def summary(times: list[float], lease: float) -> dict[str, Any]:
    return {"failover_p50_s": round(statistics.median(times), 3),
            "failover_max_s": round(max(times), 3), "lease_s": lease, "kills": len(times)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    config = cluster()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dromos-failover-") as tmp_name:
        tmp = Path(os.environ.get("DROMOS_BENCH_DIR") or tmp_name)  # keep logs: set it
        tmp.mkdir(parents=True, exist_ok=True)
        kubeconfig = prepare(config, tmp)
        for name, lease in (("default", (15.0, 10.0, 2.0)), ("short", (5.0, 3.0, 1.0))):
            print(f"{name} lease {lease[0]:.0f} s (renew deadline {lease[1]:.0f} s, retry "
                  f"{lease[2]:.0f} s): {args.kills} kills of the leader", flush=True)
            r = Replicas(tmp / name, kubeconfig, lease)
            (tmp / name).mkdir()
            try:
                times = failovers(r, args.kills)
                if name == "default":
                    out.update(summary(times, lease[0]))
                    out["writes_per_s_kubernetes"] = round(
                        writes_per_s(r.leader(), args.writes), 1)
                else:
                    out["short"] = summary(times, lease[0])
            finally:
                r.stop()
        with sqlite_server(tmp) as port:
            out["writes_per_s_sqlite"] = round(writes_per_s(port, args.writes), 1)
    print(f"failover (default lease {out['lease_s']:.0f} s): p50 {out['failover_p50_s']} s, "
          f"max {out['failover_max_s']} s; short lease {out['short']['lease_s']:.0f} s: p50 "
          f"{out['short']['failover_p50_s']} s, max {out['short']['failover_max_s']} s")
    print(f"writes/s: Kubernetes store {out['writes_per_s_kubernetes']}, "
          f"SQLite (baseline, same run) {out['writes_per_s_sqlite']}")
    subprocess.run(["bash", str(OFFLINE / "down.sh"), "--name", CLUSTER], capture_output=True,
                   check=False)
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
