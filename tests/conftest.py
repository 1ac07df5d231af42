"""Suite-wide settings. Under CI (DROMOS_CI=1) a skipped test is a failed test."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

CI = os.environ.get("DROMOS_CI") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = (
            f"skipped under CI (DROMOS_CI=1 requires the real thing): {report.longrepr}"
        )
