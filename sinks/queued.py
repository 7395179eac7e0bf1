"""``QueuedSink``: the writer thread and bounded queue every sink runs behind.

Producers (Rx observers, one per table, and side outputs) put work into one
``BoundedQueue``; one writer thread takes it in order and calls the sink's
hooks. The queue's policy decides what a full queue does: ``block`` stalls the
flow back to the source's poll loop. The rows of ``NEVER_DROPPED`` tables (dead
letters and late readings: what a pipeline could not accept, kept so it can be
replayed) are never dropped: under a dropping policy they wait for room, as under
``block``. An error on the writer thread is raised to the next producer as a
one-line ``SinkError``.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from typing import Self

import pyarrow as pa
from reactivex import Observer

from telepipe.boundary import BoundaryCounters, BoundaryOptions, BoundedQueue, OverflowPolicy
from telepipe.dead_letters import DeadLetter
from telepipe.errors import ConfigError, SinkError
from telepipe.markers import CheckpointBarrier, Item

_END = object()

#: Tables whose rows a queue policy never drops (``telepipe.pipelines.graph.RESERVED_TABLES``
#: and the actors' event store, ``telepipe.operators.actors.journal.STORE_TABLES``;
#: sinks do not import pipelines).
NEVER_DROPPED = frozenset({"late_readings", "dead_letters", "actor_events", "actor_snapshots"})
_DROPPING = (OverflowPolicy.DROP_OLDEST, OverflowPolicy.DROP_NEWEST)


class SinkQueue[T](BoundedQueue[T]):
    """A sink's queue: ``put_kept`` waits for room whatever the policy."""

    def put_kept(self, item: T, rows: int) -> None:
        """Put ``item`` (rows of a ``NEVER_DROPPED`` table), waiting for room under a
        dropping policy. Once in, nothing evicts it: ``drop_oldest`` evicts only from
        the arriving item's table."""
        if self.policy not in _DROPPING:
            self.put(item, rows)
            return
        with self._lock:  # re-entrant: put() takes it again, and finds room
            started = time.perf_counter()
            while self._data >= self.capacity and not self._closed:
                self._lock.wait(0.1)
            self.counters.blocked_s += time.perf_counter() - started
            self.put(item, rows)


class QueuedSink(ABC):
    kind = "sink"

    def __init__(self, tables: list[str], queue: BoundaryOptions, delay_ms: float = 0.0) -> None:
        self.table_names = list(tables)
        self.queue: SinkQueue[tuple[str, object]] = SinkQueue(
            queue, f"{self.kind} queue", on_drop=self._count_drop, key=lambda entry: entry[0]
        )
        self.error: BaseException | None = None
        self.dropped_rows = dict.fromkeys(self.table_names, 0)
        self._delay = delay_ms / 1000
        self._done: set[str] = set()
        self._aborted = False
        self._thread = threading.Thread(target=self._run, name=self.kind, daemon=True)

    # Hooks, all on the writer thread.
    @abstractmethod
    def on_rows(self, table: str, batch: pa.RecordBatch) -> None: ...

    @abstractmethod
    def on_barrier(self, table: str, barrier: CheckpointBarrier) -> None: ...

    @abstractmethod
    def on_end(self, table: str) -> None: ...

    def on_stop(self) -> None:  # noqa: B027 - optional hook
        """After the last table ended (or an abort): release resources."""

    @abstractmethod
    def committed(self) -> dict[str, int]:
        """Rows written so far (committed, or published), by table."""

    def take_dead_letters(self) -> list[DeadLetter]:
        """Rows the store refused since the last call: none unless a sink says so."""
        return []

    @property
    def queue_counters(self) -> BoundaryCounters:
        return self.queue.counters

    def start(self) -> Self:
        self._thread.start()
        return self

    def observer(self, table: str) -> Observer[Item]:
        """An Rx observer that feeds ``table``; ``on_next`` blocks while the queue is full."""
        if table not in self.dropped_rows:
            raise ConfigError(
                f"{self.kind} has no table {table!r}; tables: {sorted(self.dropped_rows)}"
            )

        def on_next(item: Item) -> None:
            if isinstance(item, pa.RecordBatch):
                self.write(table, item)
            elif isinstance(item, CheckpointBarrier):
                self.barrier(table, item)
            # watermarks mean nothing to a sink

        return Observer(on_next, lambda _error: self.close(table), lambda: self.close(table))

    def write(self, table: str, batch: pa.RecordBatch) -> None:
        self._raise_if_failed()
        if table in NEVER_DROPPED:
            self.queue.put_kept((table, batch), batch.num_rows)
        else:
            self.queue.put((table, batch), batch.num_rows)

    def barrier(self, table: str, barrier: CheckpointBarrier) -> None:
        self._raise_if_failed()
        self.queue.put((table, barrier), None)

    def close(self, table: str) -> None:
        self.queue.put((table, _END), None)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
        self._raise_if_failed()

    def abort(self, timeout: float = 30.0) -> None:
        """Stop after the write in progress; what was not committed is discarded."""
        self._aborted = True
        self.queue.close()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def dropped(self) -> dict[str, int]:
        return dict(self.dropped_rows)

    def _count_drop(self, entry: tuple[str, object], rows: int) -> None:
        self.dropped_rows[entry[0]] += rows

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise SinkError(f"{self.kind} failed: {self.error}") from self.error

    def _run(self) -> None:
        try:
            while not self._aborted and len(self._done) < len(self.table_names):
                entry = self.queue.get(timeout=0.5)
                if entry is None or self._aborted:
                    continue
                table, item = entry
                if isinstance(item, pa.RecordBatch):
                    if self._delay:
                        time.sleep(self._delay)
                    self.on_rows(table, item)
                elif isinstance(item, CheckpointBarrier):
                    self.on_barrier(table, item)
                elif item is _END and table not in self._done:
                    self.on_end(table)
                    self._done.add(table)
        except BaseException as error:
            self.error = error
            self.queue.close()
        finally:
            self.on_stop()
