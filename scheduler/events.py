"""The event bus: typed, past-tense facts fanned out to subscribers (SSE, status page, metrics).

Marathon's event types travel on the ``marathon`` stream; Dromos-only events (placement,
job runs) on the ``dromos`` stream, so strict Marathon clients never see a type they do not
know.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scheduler.model.timefmt import iso

MARATHON = "marathon"
DROMOS = "dromos"


@dataclass(frozen=True)
class Event:
    """One fact. ``payload`` holds the type-specific fields (Marathon's names on that stream)."""

    event_type: str
    timestamp: datetime
    payload: dict[str, Any] = field(default_factory=dict)
    stream: str = MARATHON
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"eventType": self.event_type, "timestamp": iso(self.timestamp), **self.payload}


class Subscription:
    """A bounded queue of events for one consumer.

    A consumer that falls ``maxsize`` events behind is dropped (``dropped`` becomes True and
    ``get`` returns ``None``): a slow client must never stall the scheduler.

    ``notify``, when given, is called on the publishing thread after each event is queued and
    once when the subscription is dropped. It must not block (it runs inside the control
    loop); an asyncio consumer uses it to schedule a wake-up with ``call_soon_threadsafe``.
    """

    def __init__(self, bus: EventBus, streams: frozenset[str], maxsize: int,
                 notify: Callable[[], None] | None = None) -> None:
        self._bus = bus
        self.streams = streams
        self._q: queue.Queue[Event | None] = queue.Queue(maxsize=maxsize)
        self._notify = notify
        self.dropped = False

    def offer(self, event: Event) -> None:
        if self.dropped or event.stream not in self.streams:
            return
        try:
            self._q.put_nowait(event)
        except queue.Full:
            self.dropped = True
            self._bus._drop(self)
        if self._notify is not None:
            self._notify()

    @property
    def pending(self) -> int:
        """Events queued and not yet read (approximate while publishers run)."""
        return self._q.qsize()

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event; ``None`` on timeout or once dropped and drained."""
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._bus.unsubscribe(self)


@dataclass(frozen=True)
class BusStats:
    """Counters since the bus was created (for /metrics)."""

    published: dict[tuple[str, str], int]  # (stream, event type) -> events published
    dropped_subscribers: int  # subscriptions dropped for falling behind
    subscribers: int  # subscriptions attached now


class EventBus:
    """Thread-safe publish/subscribe with a short history for late readers."""

    def __init__(self, history: int = 500) -> None:
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []
        self._recent: deque[Event] = deque(maxlen=history)
        self._seq = itertools.count(1)
        self._published: Counter[tuple[str, str]] = Counter()
        self._dropped = 0
        self._listeners: list[Callable[[Event], None]] = []

    def publish(self, event_type: str, now: datetime, stream: str = MARATHON,
                **payload: Any) -> Event:
        with self._lock:
            event = Event(event_type, now, payload, stream, next(self._seq))
            self._recent.append(event)
            self._published[(stream, event_type)] += 1
            subs = list(self._subs)
            listeners = list(self._listeners)
        for listen in listeners:
            listen(event)
        for s in subs:
            s.offer(event)
        return event

    def add_listener(self, listen: Callable[[Event], None]) -> None:
        """Call ``listen(event)`` on the publishing thread for every event (all streams),
        before any subscription sees it. For in-process caches that must follow every change
        (the API's fragments): it must be quick and must not block or publish. Not a
        subscription (not counted in :attr:`subscriber_count`), never dropped."""
        with self._lock:
            self._listeners.append(listen)

    def remove_listener(self, listen: Callable[[Event], None]) -> None:
        with self._lock:
            if listen in self._listeners:
                self._listeners.remove(listen)

    def subscribe(self, streams: frozenset[str] = frozenset({MARATHON}),
                  maxsize: int = 1000,
                  notify: Callable[[], None] | None = None) -> Subscription:
        """A new subscription; see :class:`Subscription` for ``maxsize`` and ``notify``."""
        sub = Subscription(self, streams, maxsize, notify)
        with self._lock:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def _drop(self, sub: Subscription) -> None:
        # Counted once even when two publishers overflow the same queue at the same time.
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)
                self._dropped += 1

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subs)

    def stats(self) -> BusStats:
        with self._lock:
            return BusStats(dict(self._published), self._dropped, len(self._subs))

    def recent(self, limit: int = 100, stream: str | None = None) -> list[Event]:
        """The newest events, oldest first."""
        with self._lock:
            items = [e for e in self._recent if stream is None or e.stream == stream]
        return items[-limit:]
