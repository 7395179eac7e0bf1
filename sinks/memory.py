"""``MemorySink``: every table's committed rows kept in this process, as Arrow.

For notebooks and tests (``telepipe.api``'s ``sink="memory"``): nothing is written to
disk, not even a data dir or its lock (the kind is registered with ``data_dir=False``),
and nothing is recovered, so every run starts from the beginning of its input. Rows
commit as in any sink, at checkpoint barriers, and at a table's end (a drain or a
savepoint closes every table); an abort discards what was not committed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from telepipe.boundary import BoundaryOptions
from telepipe.markers import CheckpointBarrier
from telepipe.sinks.queued import QueuedSink


class MemoryStore:
    """Where a memory sink puts what it commits: batches and checkpoint ids by table."""

    def __init__(self) -> None:
        self.batches: dict[str, list[pa.RecordBatch]] = {}
        self.schemas: dict[str, pa.Schema | None] = {}
        self.checkpoints: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def open(self, tables: dict[str, pa.Schema | None]) -> None:
        with self._lock:
            for table, schema in tables.items():
                self.batches.setdefault(table, [])
                self.schemas.setdefault(table, schema)
                self.checkpoints.setdefault(table, [])

    def commit(self, table: str, batches: list[pa.RecordBatch], checkpoint: int | None) -> None:
        with self._lock:
            self.batches[table].extend(batches)
            if checkpoint is not None:
                self.checkpoints[table].append(checkpoint)

    def rows(self, table: str) -> int:
        with self._lock:
            return sum(b.num_rows for b in self.batches.get(table, []))

    def table(self, name: str) -> pa.Table:
        """The committed rows of ``name`` (an empty table of its schema if none)."""
        with self._lock:
            batches = list(self.batches[name])
            schema = self.schemas.get(name)
        if batches:
            return pa.Table.from_batches(batches)
        return (schema or pa.schema([])).empty_table()

    @property
    def table_names(self) -> list[str]:
        return list(self.batches)


@dataclass(frozen=True, eq=False)
class MemorySinkOptions:
    queue: BoundaryOptions = field(default_factory=BoundaryOptions)
    # Where the rows go; None: a store of the sink's own (``MemorySink.store``).
    store: Any = None


class MemorySink(QueuedSink):
    """Tables kept in a ``MemoryStore``, committed at barriers, behind the usual queue."""

    kind = "memory sink"

    def __init__(self, options: MemorySinkOptions, tables: dict[str, pa.Schema | None]) -> None:
        super().__init__(list(tables), options.queue)
        self.store: MemoryStore = options.store if options.store is not None else MemoryStore()
        self.store.open(tables)
        self._pending: dict[str, list[pa.RecordBatch]] = {t: [] for t in tables}
        self._committed = dict.fromkeys(tables, 0)

    def on_rows(self, table: str, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self._pending[table].append(batch)

    def on_barrier(self, table: str, barrier: CheckpointBarrier) -> None:
        self._commit(table, barrier.checkpoint_id)

    def on_end(self, table: str) -> None:
        self._commit(table, None)

    def _commit(self, table: str, checkpoint: int | None) -> None:
        pending, self._pending[table] = self._pending[table], []
        self.store.commit(table, pending, checkpoint)
        self._committed[table] += sum(b.num_rows for b in pending)

    def committed(self) -> dict[str, int]:
        return dict(self._committed)
