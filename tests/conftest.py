"""Suite-wide settings. Under CI (DROMOS_CI=1) a skipped test is a failed test."""

from __future__ import annotations

import collections
import collections.abc
import os
from collections.abc import Generator

import pytest

CI = os.environ.get("DROMOS_CI") == "1"

# The last release of the common Python Marathon client (marathon 0.13.0), which the
# compatibility tests drive unchanged, imports collections.Iterable & co., removed in
# Python 3.10. Alias them once, here, before any test module imports it.
for _name in ("Iterable", "Mapping", "MutableMapping", "Sequence", "Callable"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the offline Kubernetes binaries, if a collected test needs them, before any test
    runs (a first build outlasts a test's timeout)."""
    from tests.runtimes.k8s_support import build_before_tests

    build_before_tests(session.items, session.config)


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
