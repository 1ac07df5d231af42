"""`dromos serve` flags for limits (issue 11, defects 3 and 7): weak tokens beyond loopback
are refused; the request body limit is configurable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scheduler.cli import build_parser
from scheduler.config import ConfigError, Credentials, check_exposure, parse_body_limit
from tests.cli.conftest import start_server
from tests.runtimes.conftest import cleanup_local_state

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("DROMOS_")}


@pytest.mark.parametrize("token", [" ", "    \t  ", "short", "a" * 15, " " * 20])
def test_a_weak_token_beyond_loopback_is_refused(token: str) -> None:
    with pytest.raises(ConfigError, match="at least 16"):
        check_exposure("0.0.0.0", Credentials(token=token))


def test_a_real_token_beyond_loopback_is_accepted() -> None:
    check_exposure("0.0.0.0", Credentials(token="x7Gq-2mLp-93Vd-aa"))
    check_exposure("127.0.0.1", Credentials(token="short"))  # loopback: the user's call


def test_serve_refuses_a_blank_token_on_a_public_address(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "serve", "--host", "0.0.0.0",
         "--auth-token", " ", "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=30, env=CLEAN_ENV,
    )
    assert r.returncode == 2
    assert "at least 16" in r.stderr


def test_max_body_bytes_flag() -> None:
    args = build_parser().parse_args(["serve"])
    assert parse_body_limit(args.max_body_bytes) == 3 * 1024 * 1024
    args = build_parser().parse_args(["serve", "--max-body-bytes", "10M"])
    assert parse_body_limit(args.max_body_bytes) == 10 * 1024 * 1024
    assert parse_body_limit("65536") == 65536
    for bad in ("0", "-1", "lots", "100"):
        with pytest.raises(ConfigError):
            parse_body_limit(bad)


def test_serve_refuses_bodies_over_the_flag_over_real_http(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--max-body-bytes", "64Ki")
    try:
        pad = "x" * (100 * 1024)
        body = json.dumps({"id": "/big", "cmd": "x", "labels": {"p": pad}}).encode()
        r = httpx.post(srv.url + "/v2/apps", content=body,
                       headers={"Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 413 and "65536" in r.json()["message"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: 10 MiB, chunked
            for _ in range(160):
                yield b" " * 65536

        r = httpx.post(srv.url + "/v2/apps", content=chunks(),
                       headers={"Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 413
        assert httpx.get(srv.url + "/v2/apps", timeout=10).json() == {"apps": []}
        ok = httpx.post(srv.url + "/v2/apps", json={"id": "/small", "cmd": "x",
                                                    "instances": 0}, timeout=30)
        assert ok.status_code == 201
    finally:
        srv.stop()
        cleanup_local_state(srv.state)
