"""What `chromium --headless --dump-dom` and `--screenshot` (the tools people use to check a
page from a terminal) capture of the status page of a real `dromos serve` with data: the data,
not "Loading…", and without waiting on the live stream."""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.server import Server
from tests.ui.conftest import ARTIFACTS, chromium_or_skip

pytestmark = pytest.mark.integration

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    binary, _ = chromium_or_skip()
    profile = tempfile.mkdtemp(prefix="dromos-chromium-")
    try:
        # The timeout only stops a hang from stalling the suite; the test asserts the output.
        return subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120, check=True)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_dump_dom_captures_the_data(dromos: Server) -> None:
    dom = chromium("--dump-dom", dromos.url + "/").stdout
    assert 'data-ready="1"' in dom
    assert "Loading…" not in dom
    assert "3 / 4 running" in dom  # /shop/unique, in the Services table
    assert "every day at 03:00 (UTC)" in dom  # features: cron, in words
    assert "waiting: 1 instance of /shop/unique" in dom  # its deployment, and why
    assert "3 nodes: UNIQUE hostname" in dom


def test_screenshot_captures_the_page(dromos: Server) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "headless-screenshot.png"
    path.unlink(missing_ok=True)
    chromium("--window-size=1440,1500", f"--screenshot={path}", dromos.url + "/")
    png = Path(path).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (1440, 1500)
