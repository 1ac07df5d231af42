"""Open files (issue 11, defect 4): the soft limit is raised at start, and running out of
descriptors in accept() costs one log line, not one per listener per second."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import socketserver
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

from scheduler.services.open_files import AcceptErrorLog
from tests.support.server import free_port

CHILD = textwrap.dedent("""
    import logging, os, resource, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="LOG %(message)s")
    from scheduler.services.balancer import Balancer
    port, backend = int(sys.argv[1]), int(sys.argv[2])
    lb = Balancer()
    lb.start()
    lb.sync({port: [("127.0.0.1", backend, "t1")]}).result(10)
    print("READY", flush=True)
    held = []
    try:
        while True:
            held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    print("FULL", flush=True)
    sys.stdin.readline()
    for fd in held:
        os.close(fd)
    print("FREED", flush=True)
    sys.stdin.readline()
    lb.stop()
""")


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = self.request.recv(100)
        self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_exhausted_descriptors_in_accept_log_one_line_and_recover(echo: int) -> None:
    port = free_port()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(port), str(echo)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    clients: list[socket.socket] = []
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "READY"
        assert child.stdout.readline().strip() == "FULL"
        # Connections queue in the kernel's backlog; the balancer's accept() fails, and is
        # retried (every second) for as long as the test keeps it waiting.
        for _ in range(5):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        time.sleep(3.5)
        child.stdin.write("free\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "FREED"
        # Every queued client is served once descriptors are back.
        for c in clients:
            c.sendall(b"ping")
            assert c.recv(10) == b"ping"
        child.stdin.write("stop\n")
        child.stdin.flush()
        _, err = child.communicate(timeout=30)
    finally:
        for c in clients:
            c.close()
        if child.poll() is None:
            child.kill()
            child.wait()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "cannot accept connections" in lines[0] and "open files limit 64" in lines[0]


def test_raise_nofile_limit_lifts_the_soft_limit_to_the_hard_one() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.fail(f"the hard open files limit ({hard}) leaves no room for this test")
    script = textwrap.dedent("""
        import resource
        from scheduler.services.open_files import raise_nofile_limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(
            resource.RLIMIT_NOFILE)[1]))
        print(raise_nofile_limit()[0], resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=30, check=True).stdout.split()
    assert int(out[0]) == int(out[1]) > 256
    if hard != resource.RLIM_INFINITY:
        assert int(out[1]) == hard


def test_accept_errors_are_reported_once_a_minute_with_a_count(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    handler = AcceptErrorLog(clock=lambda: now[0])
    loop = asyncio.new_event_loop()
    try:
        emfile = OSError(errno.EMFILE, "Too many open files")
        with caplog.at_level(logging.WARNING, logger="dromos.files"):
            for second in range(150):  # 150 failures, one a second
                now[0] = float(second)
                handler(loop, {"message": "socket.accept() out of system resource",
                               "exception": emfile})
        lines = [r.getMessage() for r in caplog.records if r.name == "dromos.files"]
        assert len(lines) == 3  # at 0 s, 60 s and 120 s
        assert "59 more since the last report" in lines[1]
        # Anything else still reaches the loop's default handler.
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            handler(loop, {"message": "boom", "exception": ValueError("x")})
        assert any("boom" in r.getMessage() for r in caplog.records)
    finally:
        loop.close()
