"""One replica of Dromos on the Kubernetes store: what leadership switches on and off.

Contract:
- :meth:`Replica.start` starts the elector's thread and, while this replica is a standby, a
  refresher that re-reads the store every ``refresh_s`` (reads a standby answers are at most
  that old) and then calls ``refreshed()`` so derived caches are dropped.
- On becoming leader: the store is read afresh (``store.load``), journals a crashed leader left
  are replayed (``store.replay_journals``), then ``lead()`` starts the control loop. Only then
  does :meth:`leadership` say ``leading`` (writes are accepted here, not forwarded).
- On losing leadership (lease lost, renew deadline passed, abdication) ``follow()`` stops the
  control loop at once. Whatever it still tries to write is refused by the fence: first by
  ``elector.fence()`` in this process, then by the API server's policy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from scheduler.ha.elector import LeaderElector, LeaderState, LeaseApi
from scheduler.ha.lease import LeaseTimings

log = logging.getLogger("dromos.replica")


class ReplicaStore(Protocol):
    def load(self) -> None: ...

    def replay_journals(self) -> int: ...


class Replica:
    """See the module docstring."""

    def __init__(self, lease: LeaseApi, me: str, timings: LeaseTimings, store: ReplicaStore, *,
                 lead: Callable[[], None], follow: Callable[[], None],
                 refreshed: Callable[[], None], refresh_s: float = 1.0) -> None:
        self.elector = LeaderElector(lease, me, timings, on_started=self._started,
                                     on_stopped=self._stopped)
        self.store = store
        self._lead = lead
        self._follow = follow
        self._refreshed = refreshed
        self.refresh_s = refresh_s
        self._ready = threading.Event()  # set while leading, once the loop is started
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def leadership(self) -> LeaderState:
        state = self.elector.state()
        if state.leading and not self._ready.is_set():
            # Elected, still loading and replaying: not yet taking writes.
            return LeaderState(state.me, False, None, None)
        return state

    def abdicate(self) -> bool:
        """Give up leadership now (``DELETE /v2/leader``); ``False`` when not leading."""
        return self.elector.abdicate()

    def _started(self, epoch: int) -> None:
        log.info("leading (epoch %d): loading state", epoch)
        t0 = time.monotonic()
        self.store.load()
        replayed = self.store.replay_journals()
        if replayed:
            log.info("replayed %d transaction(s) a previous leader left", replayed)
        self._refreshed()
        self._lead()
        self._ready.set()
        log.info("leading (epoch %d): taking writes after %.2f s", epoch,
                    time.monotonic() - t0)

    def _stopped(self) -> None:
        self._ready.clear()
        self._follow()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            if self.elector.state().leading:
                continue
            try:
                self.store.load()
                self._refreshed()
            except Exception as e:  # the API server is away: keep the last copy
                log.debug("standby refresh failed: %s", e)

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self.elector.run, args=(self._stop,), name="dromos-elector",
                             daemon=True),
            threading.Thread(target=self._refresh_loop, name="dromos-refresh", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop competing; a held lease is released (the elector abdicates on its way out)."""
        self._stop.set()
        for t in self._threads:
            t.join(15)
