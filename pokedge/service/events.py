"""Fan-out of service events to server-sent-event clients, with a short history for reconnects."""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    event_id: int
    kind: str  # confirmed, unknown_card, low_confidence, left, status
    data: dict[str, Any]
    time: float


class Subscription:
    """One client's queue of events; a slow client loses its oldest events, never blocks the publisher."""

    def __init__(self, bus: "EventBus", size: int):
        self._bus = bus
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self.dropped = 0
        self.closed = False

    def _offer(self, event: Event | None) -> None:
        while True:
            try:
                self._queue.put_nowait(event)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def get(self, timeout: float) -> Event | None:
        """Return the next event, or None after `timeout` seconds or once the bus is closed."""
        if self.closed:
            return None
        try:
            event = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if event is None:
            self.closed = True
        return event

    def close(self) -> None:
        self.closed = True
        self._bus._unsubscribe(self)


class EventBus:
    """Publishes events to every subscriber and keeps the last `history` for clients that reconnect."""

    def __init__(self, history: int = 200, queue_size: int = 256, max_subscribers: int = 32):
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._history: deque[Event] = deque(maxlen=history)
        self._subscribers: list[Subscription] = []
        self._queue_size = queue_size
        self.max_subscribers = max_subscribers
        self.closed = False
        self.published = 0

    def publish(self, kind: str, data: dict[str, Any]) -> Event:
        with self._lock:
            event = Event(next(self._ids), kind, data, time.time())
            self._history.append(event)
            subscribers = list(self._subscribers)
            self.published += 1
        for subscription in subscribers:
            subscription._offer(event)
        return event

    def subscribe(self, last_event_id: int | None = None) -> Subscription | None:
        """Return a subscription, replaying events after `last_event_id`; None when the bus is full or closed."""
        with self._lock:
            if self.closed or len(self._subscribers) >= self.max_subscribers:
                return None
            subscription = Subscription(self, self._queue_size)
            if last_event_id is not None:
                for event in self._history:
                    if event.event_id > last_event_id:
                        subscription._offer(event)
            self._subscribers.append(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def recent(self, limit: int = 20) -> list[Event]:
        with self._lock:
            return list(self._history)[-limit:]

    def close(self) -> None:
        """Wake every subscriber with end-of-stream; later subscribes return None."""
        with self._lock:
            self.closed = True
            subscribers, self._subscribers = self._subscribers, []
        for subscription in subscribers:
            subscription._offer(None)
