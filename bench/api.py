"""The HTTP API at scale: a real ``dromos serve`` (local runtime) holding N apps at 0 instances.

Phases, all against one server process:

1. empty: idle CPU and RSS with no apps (the same-run baseline for the idle figures);
2. create N apps one after another over one keep-alive connection (``/bench/app-NNNNN``,
   one auto-assigned service port each), timing the first and the last 1,000;
3. wait until no deployment is left, then idle CPU (user + system time of the server over
   ``--idle`` seconds, as % of one core) and RSS;
4. load from ``wrk`` (Debian's ``wrk``; ``apt-get install wrk``), ``--clients`` connections
   for ``--duration`` seconds each: ``GET /ping`` (the baseline: the cheapest route through
   the same server, same connections, same run; run before and after the others, the lower
   p99 of the two is the baseline), ``GET /v2/apps/{id}`` cycling over every app (after a
   warm-up that reads each app once), and ``GET /v2/apps``.

With two or more cores the server is pinned to core 0 and wrk (one thread) and this script
to core 1, so the load generator does not take the server's core (``--no-pin`` to disable).
The control loop runs as in production (0.5 s interval); ``--service-bind off``, so the
built-in balancer's listeners are not part of the measure.

    python bench/api.py [--apps 10000] [--clients 50] [--duration 10] [--idle 20] [--json]

With ``--json`` the last line is one object: ``ping_p99_ms``, ``get_app_p99_ms``,
``list_p50_ms``, ``create_s_first_1000``, ``create_s_last_1000``, ``idle_cpu_pct``,
``rss_mib`` (the issue's keys) and the rest of what was measured.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
APP_PATH = "/v2/apps/bench/app-{:05d}"

_DONE_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"socket_errors":%d,"timeouts":%d,"non2xx":%d,"bytes":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect + e.read + e.write, e.timeout, e.status,
    summary.bytes))
end
"""

_GET_APPS_LUA = r"""
local n = 1
local i = 0
init = function(args) n = tonumber(args[1]) end
request = function()
  i = (i + 1) % n
  return wrk.format("GET", string.format("/v2/apps/bench/app-%05d", i))
end
"""

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def idle_cpu_pct(pid: int, seconds: float) -> float:
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def _die_with_parent() -> None:
    """In the server's child: SIGTERM when the bench dies (a killed or timed-out bench must
    not leave a server and its control loop running)."""
    import ctypes
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Server:
    """``dromos serve`` in a child process (its own process group), on a free port."""

    def __init__(self, state_dir: Path, cpu: int | None) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "scheduler.cli", "serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--state-dir", str(state_dir), "--runtime", "local",
               "--service-bind", "off", "--service-ports", "10000-40000"]
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu), *cmd]
        self.log = (state_dir.parent / "serve.log").open("w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.request("GET", "/ping")[0] == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"dromos serve did not start; see {self.log.name}")
            time.sleep(0.2)
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            return self._send(conn, method, path, body)
        finally:
            conn.close()

    def keepalive(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        return self._send(self.conn, method, path, body)

    @staticmethod
    def _send(conn: http.client.HTTPConnection, method: str, path: str,
              body: Any) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.conn.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def wrk(port: int, path: str, clients: int, duration: float, script: str, args: list[str],
        cpu: int | None, tmp: Path) -> dict[str, Any]:
    lua = tmp / "bench.lua"
    lua.write_text(script + _DONE_LUA)
    cmd = ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(duration))}s", "--timeout", "60s",
           "-s", str(lua), f"http://127.0.0.1:{port}{path}", *(["--", *args] if args else [])]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    r: dict[str, Any] = json.loads(line.removeprefix("WRKJSON "))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["p50_ms"], r["p99_ms"] = r["p50_us"] / 1000, r["p99_us"] / 1000
    return r


def app_body(i: int) -> dict[str, Any]:
    return {"id": f"/bench/app-{i:05d}", "cmd": "sleep 3600", "cpus": 0.01, "mem": 8,
            "instances": 0}


def wait_no_deployments(server: Server, timeout: float = 600) -> float:
    t0 = time.monotonic()
    while True:
        status, body = server.request("GET", "/v2/deployments")
        if status == 200 and json.loads(body) == []:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise SystemExit("deployments did not finish")
        time.sleep(0.5)


def run(apps: int, clients: int, duration: float, idle: float, pin: bool,
        log: Any) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    cores = len(os.sched_getaffinity(0))
    server_cpu, load_cpu = (0, 1) if pin and cores >= 2 else (None, None)
    if load_cpu is not None:
        os.sched_setaffinity(0, {load_cpu})
    out: dict[str, Any] = {"apps": apps, "clients": clients, "duration_s": duration,
                           "pinned": server_cpu is not None, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="dromos-bench-api-") as tmp_s:
        tmp = Path(tmp_s)
        server = Server(tmp / "state", server_cpu)
        try:
            time.sleep(2)
            out["idle_cpu_pct_empty"] = round(idle_cpu_pct(server.pid, idle), 2)
            out["rss_mib_empty"] = round(rss_mib(server.pid), 1)
            log(f"empty server: idle CPU {out['idle_cpu_pct_empty']}% of a core, "
                f"RSS {out['rss_mib_empty']} MiB")

            per_1000: list[float] = []
            t_block = time.perf_counter()
            for i in range(apps):
                status, body = server.keepalive("POST", "/v2/apps", app_body(i))
                if status != 201:
                    raise SystemExit(f"create {i}: {status} {body[:300]!r}")
                if (i + 1) % 1000 == 0 or i + 1 == apps:
                    now = time.perf_counter()
                    per_1000.append(now - t_block)
                    t_block = now
                    log(f"created {i + 1} apps ({per_1000[-1]:.2f} s for the last block)")
            out["create_s_per_1000"] = [round(x, 2) for x in per_1000]
            out["create_s_first_1000"] = round(per_1000[0], 2)
            out["create_s_last_1000"] = round(per_1000[-1], 2)
            out["deployments_drain_s"] = round(wait_no_deployments(server), 1)
            time.sleep(2)
            out["idle_cpu_pct"] = round(idle_cpu_pct(server.pid, idle), 2)
            out["rss_mib"] = round(rss_mib(server.pid), 1)
            log(f"{apps} apps at 0 instances: idle CPU {out['idle_cpu_pct']}% of a core, "
                f"RSS {out['rss_mib']} MiB")

            ping = wrk(server.port, "/ping", clients, duration, "", [], load_cpu, tmp)
            get_script = _GET_APPS_LUA
            # Warm-up: every app is read once (its fragment built), then the measured run.
            server.conn.close()  # idle past the server's keep-alive timeout: a new one
            t_warm = time.perf_counter()
            for i in range(apps):
                status, _ = server.keepalive("GET", APP_PATH.format(i))
                assert status == 200, (i, status)
            out["get_app_warmup_s"] = round(time.perf_counter() - t_warm, 1)
            get = wrk(server.port, "/", clients, duration, get_script, [str(apps)], load_cpu,
                      tmp)
            status, body = server.request("GET", "/v2/apps")
            out["list_bytes"] = len(body)
            listing = wrk(server.port, "/v2/apps", clients, duration, "", [], load_cpu, tmp)
            ping_after = wrk(server.port, "/ping", clients, duration, "", [], load_cpu, tmp)
            out["ping_p99_ms_runs"] = [round(ping["p99_ms"], 2), round(ping_after["p99_ms"], 2)]
            # The stricter baseline of the two /ping runs (before and after the others).
            ping = min(ping, ping_after, key=lambda r: r["p99_ms"])
            for name, r in (("ping", ping), ("get_app", get), ("list", listing)):
                out[f"{name}_p50_ms"] = round(r["p50_ms"], 2)
                out[f"{name}_p99_ms"] = round(r["p99_ms"], 2)
                out[f"{name}_rps"] = round(r["rps"], 1)
                out[f"{name}_errors"] = r["socket_errors"] + r["timeouts"] + r["non2xx"]
                log(f"{name:8s} p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms  "
                    f"{r['rps']:8.1f} req/s  errors {out[f'{name}_errors']}")
            out["get_app_p99_over_ping_p99"] = round(get["p99_ms"] / ping["p99_ms"], 2)
            out["create_last_over_first"] = round(per_1000[-1] / per_1000[0], 2)
            out["rss_mib_end"] = round(rss_mib(server.pid), 1)
        finally:
            server.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--apps", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    ap.add_argument("--idle", type=float, default=20.0, help="seconds of idle CPU measure")
    ap.add_argument("--no-pin", action="store_true", help="do not pin server and wrk to cores")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if a.json else sys.stdout, flush=True)

    out = run(a.apps, a.clients, a.duration, a.idle, not a.no_pin, log)
    targets = [
        ("get_app_p99_ms <= 1.5 x ping_p99_ms (baseline, same run)",
         out["get_app_p99_ms"] <= 1.5 * out["ping_p99_ms"]),
        ("list_p50_ms <= 300", out["list_p50_ms"] <= 300),
        ("create_s_last_1000 <= 1.2 x create_s_first_1000",
         out["create_s_last_1000"] <= 1.2 * out["create_s_first_1000"]),
        ("idle_cpu_pct <= 2", out["idle_cpu_pct"] <= 2),
    ]
    out["targets_met"] = {name: ok for name, ok in targets}
    log(f"baseline (same run): GET /ping p50 {out['ping_p50_ms']} ms, p99 "
        f"{out['ping_p99_ms']} ms; empty server idle CPU {out['idle_cpu_pct_empty']}%")
    for name, ok in targets:
        log(f"  {'met    ' if ok else 'NOT met'}  {name}")
    if a.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
