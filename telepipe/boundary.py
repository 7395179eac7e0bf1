"""Bounded queues at asynchronous boundaries, with an explicit overflow policy.

RxPY has no backpressure: a producer that outruns ``observe_on`` grows memory
without bound. Every thread or process boundary in telepipe is instead one of
these queues. With ``block`` a full queue stalls the producer's ``on_next``,
which stalls the synchronous chain back to the source's poll loop, which stops
polling Aeron, whose flow control then back-pressures the publisher.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from telepipe.errors import BackpressureError, ConfigError

T = TypeVar("T")


class OverflowPolicy(StrEnum):
    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"
    FAIL = "fail"


@dataclass(frozen=True)
class BoundaryOptions:
    capacity: int = 16
    policy: str = "block"

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ConfigError(f"boundary capacity must be >= 1, got {self.capacity}")
        allowed = [p.value for p in OverflowPolicy]
        if self.policy not in allowed:
            raise ConfigError(f"boundary policy must be one of {allowed}, got {self.policy!r}")


@dataclass
class BoundaryCounters:
    depth: int = 0
    peak_depth: int = 0
    blocked_s: float = 0.0
    dropped_items: int = 0
    dropped_rows: int = 0


class BoundedQueue[T]:
    """A FIFO of at most ``capacity`` droppable items; control items are never dropped.

    ``put(item, rows)`` with ``rows=None`` marks a control item (marker, end of
    stream): it always enters, so a drain or checkpoint cannot be lost.
    """

    def __init__(
        self,
        options: BoundaryOptions,
        name: str = "queue",
        on_drop: Callable[[T, int], None] | None = None,
        key: Callable[[T], object] | None = None,
    ) -> None:
        """``key`` groups items (a sink's tables): ``drop_oldest`` evicts the oldest
        item of the arriving item's group, so one table's burst cannot evict another's rows
        (a group with nothing queued may exceed ``capacity`` by its one item)."""
        self.on_drop = on_drop
        self.key = key
        self.capacity = options.capacity
        self.policy = OverflowPolicy(options.policy)
        self.name = name
        self.counters = BoundaryCounters()
        self._items: deque[tuple[T, int | None]] = deque()
        self._data = 0
        self._lock = threading.Condition()
        self._closed = False

    def put(self, item: T, rows: int | None) -> None:
        with self._lock:
            if rows is not None and self._data >= self.capacity:
                if self.policy is OverflowPolicy.BLOCK:
                    started = time.perf_counter()
                    while self._data >= self.capacity and not self._closed:
                        self._lock.wait(0.1)
                    self.counters.blocked_s += time.perf_counter() - started
                elif self.policy is OverflowPolicy.DROP_NEWEST:
                    self._count_drop(item, rows)
                    return
                elif self.policy is OverflowPolicy.DROP_OLDEST:
                    self._drop_oldest(item)
                else:
                    raise BackpressureError(
                        f"{self.name} is full ({self.capacity} batches) and its policy is 'fail'"
                    )
            if self._closed:
                return
            self._items.append((item, rows))
            if rows is not None:
                self._data += 1
            c = self.counters
            c.depth = len(self._items)
            c.peak_depth = max(c.peak_depth, self._data)
            self._lock.notify_all()

    def get(self, timeout: float | None = None) -> T | None:
        """The next item, or None after ``timeout`` seconds with nothing to take."""
        with self._lock:
            if not self._items and not self._lock.wait_for(lambda: bool(self._items), timeout):
                return None
            item, rows = self._items.popleft()
            if rows is not None:
                self._data -= 1
            self.counters.depth = len(self._items)
            self._lock.notify_all()
            return item

    def close(self) -> None:
        """Release any blocked producer; later puts are discarded."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    def _drop_oldest(self, arriving: T) -> None:
        # With groups, only the arriving item's group is evicted from; a group with
        # nothing queued gets its item in over capacity (at most one per group), so
        # one table's burst never evicts another table's rows.
        group = self.key(arriving) if self.key is not None else None
        for index, (item, rows) in enumerate(self._items):
            if rows is not None and (group is None or self.key(item) == group):  # type: ignore[misc]
                del self._items[index]
                self._data -= 1
                self._count_drop(item, rows)
                return

    def _count_drop(self, item: T, rows: int) -> None:
        self.counters.dropped_items += 1
        self.counters.dropped_rows += rows
        if self.on_drop is not None:
            self.on_drop(item, rows)
