"""How a runtime paces its calls to a backend that stopped answering (Docker Engine, API
server): one policy, used by every runtime with a remote backend.

After a failure the backend is tried again after :data:`RETRY_MIN_SECONDS`, then twice as
long after each further failure, up to :data:`RETRY_MAX_SECONDS`; calls in between raise
:class:`~scheduler.runtimes.base.RuntimeUnavailable` at once, so a dead or hung backend does
not slow the control loop down. The first call that goes through resets the delay.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from scheduler.runtimes.base import RuntimeUnavailable

RETRY_MIN_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0


def next_delay(previous: float, minimum: float = RETRY_MIN_SECONDS,
               maximum: float = RETRY_MAX_SECONDS) -> float:
    """The wait after one more failure, given the wait after the previous one (0 for none):
    ``minimum``, then doubling, never above ``maximum``."""
    return min(max(previous * 2, minimum), maximum)


class Backoff:
    """The retry state of one backend. Thread-safe.

    ``clock`` is monotonic seconds (an argument so tests can step it).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 minimum: float = RETRY_MIN_SECONDS, maximum: float = RETRY_MAX_SECONDS) -> None:
        self._clock = clock
        self._minimum = minimum
        self._maximum = maximum
        self._lock = threading.Lock()
        self.delay = 0.0
        """The wait after the last failure; 0 once a call went through."""
        self._retry_at = 0.0
        self._last_failure = ""

    def check(self) -> None:
        """Raise :class:`RuntimeUnavailable` (the last failure, and when the next attempt is
        due) while the wait after the last failure runs; return otherwise."""
        with self._lock:
            wait = self._retry_at - self._clock()
            if wait > 0:
                raise RuntimeUnavailable(f"{self._last_failure} (next attempt in {wait:.1f}s)")

    def failed(self, why: str) -> RuntimeUnavailable:
        """Note a failure (``why`` says what failed): the next wait is longer. Returns the
        exception to raise."""
        with self._lock:
            self.delay = next_delay(self.delay, self._minimum, self._maximum)
            self._retry_at = self._clock() + self.delay
            self._last_failure = why
        return RuntimeUnavailable(why)

    def succeeded(self) -> None:
        """Note that a call went through: the next failure waits the minimum again."""
        with self._lock:
            self.delay = 0.0
