"""Open file descriptors: raise the soft limit at start, and survive running out of them.

Dromos holds a descriptor per client connection, per balancer listener and connection, per
SQLite connection and per task pipe. Many distributions start services with a soft
``RLIMIT_NOFILE`` of 1,024 and a far higher hard limit; :func:`raise_nofile_limit` lifts the
soft limit to the hard one (what any process may do for itself), as servers such as nginx
and the JVM do.

When descriptors do run out, ``accept()`` fails with ``EMFILE``. asyncio then pauses that
listener for a second and retries (the backoff), but reports every failure through the
loop's exception handler -- a log line per listener per second. :class:`AcceptErrorLog`
replaces those with one warning when it starts and at most one summary per
:data:`REPORT_EVERY` seconds while it lasts.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("dromos.files")

REPORT_EVERY = 60.0
"""Seconds between two log lines about descriptor exhaustion."""

_EXHAUSTED = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def raise_nofile_limit() -> tuple[int, int]:
    """Set the soft ``RLIMIT_NOFILE`` to the hard limit; returns ``(soft, hard)`` after.

    An unlimited hard limit is capped at the kernel's ``nr_open`` (``setrlimit`` refuses
    more). Never raises: a limit that cannot be raised is logged and left as it was.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        target = _nr_open()
    if target <= soft and soft != resource.RLIM_INFINITY:
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as e:
        log.warning("could not raise the open files limit from %d to %d: %s", soft, target, e)
        return soft, hard
    return target, hard


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1024 * 1024


class AcceptErrorLog:
    """An asyncio exception handler: descriptor exhaustion in ``accept()`` is logged once
    per :data:`REPORT_EVERY` seconds (with how many failures it stands for); anything else
    goes to ``fallback`` (the loop's default handler).

    ``clock`` is a monotonic clock (an argument so that tests can drive it).
    """

    def __init__(self, fallback: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]
                 | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._fallback = fallback
        self._clock = clock
        self._last_report: float | None = None
        self._suppressed = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _EXHAUSTED:
            self._exhausted(exc)
            return
        if self._fallback is not None:
            self._fallback(loop, context)
        else:
            loop.default_exception_handler(context)

    def _exhausted(self, exc: OSError) -> None:
        now = self._clock()
        if self._last_report is not None and now - self._last_report < REPORT_EVERY:
            self._suppressed += 1
            return
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        more = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
        log.warning("cannot accept connections: %s (open files limit %d); new connections "
                    "wait and accept is retried every second%s", exc.strerror or exc, soft,
                    more)
        self._last_report = now
        self._suppressed = 0

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make this the exception handler of ``loop`` (keeping a custom one as fallback)."""
        current = loop.get_exception_handler()
        if current is not None and self._fallback is None:
            self._fallback = current
        loop.set_exception_handler(self)
