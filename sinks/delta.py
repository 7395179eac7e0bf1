"""``DeltaSink``: record batches into embedded Delta Lake tables, committed at barriers.

One writer thread owns every table of a pipeline and takes work from a bounded
queue. Rows are buffered per table and committed when that table's branch
delivers a checkpoint barrier: one Delta commit per table per checkpoint,
carrying the checkpoint id as a Delta application transaction
(``app_id`` -> version) and the source positions as commit metadata.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from reactivex import Observer

from telepipe.boundary import BoundaryOptions, BoundedQueue
from telepipe.errors import ConfigError, SinkError
from telepipe.markers import CheckpointBarrier, Item
from telepipe.sinks.delta_types import delta_schema, to_delta_table


@dataclass(frozen=True)
class DeltaSinkOptions:
    app_id: str = "telepipe"
    queue: BoundaryOptions = field(default_factory=BoundaryOptions)
    # Sleep this long per batch taken from the queue: a stand-in for a slow store,
    # used to test and measure back-pressure. 0 in production.
    delay_ms: float = 0.0

    def __post_init__(self) -> None:
        if not self.app_id:
            raise ConfigError("sink.app_id must not be empty")
        if self.delay_ms < 0:
            raise ConfigError(f"sink.delay_ms must be >= 0, got {self.delay_ms}")
        if isinstance(self.queue, dict):  # built from YAML without a nested _target_
            object.__setattr__(self, "queue", BoundaryOptions(**self.queue))


_END = object()


@dataclass
class TableState:
    path: Path
    schema: pa.Schema | None = None
    pending: list[pa.RecordBatch] = field(default_factory=list)
    committed_rows: int = 0
    dropped_rows: int = 0
    commits: int = 0
    done: bool = False


class DeltaSink:
    """Writes several Delta tables under ``data_dir`` from one writer thread."""

    def __init__(
        self, options: DeltaSinkOptions, data_dir: str | Path, tables: dict[str, pa.Schema | None]
    ) -> None:
        """``tables`` maps each table to its Arrow schema (None: known from the first batch)."""
        self.options = options
        self.root = Path(data_dir)
        self.tables = {
            name: TableState(self.root / name, schema) for name, schema in tables.items()
        }
        self.queue: BoundedQueue[tuple[str, object]] = BoundedQueue(
            options.queue, "sink queue", on_drop=self._dropped
        )
        self.error: BaseException | None = None
        self._aborted = False
        self._thread = threading.Thread(target=self._run, name="delta-sink", daemon=True)

    def start(self) -> DeltaSink:
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def observer(self, table: str) -> Observer[Item]:
        """An Rx observer that feeds ``table``; ``on_next`` blocks while the queue is full."""
        if table not in self.tables:
            raise ConfigError(f"sink has no table {table!r}; tables: {sorted(self.tables)}")

        def on_next(item: Item) -> None:
            self._raise_if_failed()
            rows = item.num_rows if isinstance(item, pa.RecordBatch) else None
            if rows is None and not isinstance(item, CheckpointBarrier):
                return  # watermarks mean nothing to a table
            self.queue.put((table, item), rows)

        def on_error(error: Exception) -> None:
            self.queue.put((table, _END), None)

        return Observer(on_next, on_error, lambda: self.queue.put((table, _END), None))

    def write(self, table: str, batch: pa.RecordBatch) -> None:
        """Enqueue a batch outside a flow (side outputs: late rows, dead letters)."""
        self._raise_if_failed()
        self.queue.put((table, batch), batch.num_rows)

    def close(self, table: str) -> None:
        self.queue.put((table, _END), None)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
        self._raise_if_failed()

    def abort(self, timeout: float = 30.0) -> None:
        """Stop after the commit in progress; rows not yet committed are discarded."""
        self._aborted = True
        self.queue.close()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _dropped(self, entry: tuple[str, object], rows: int) -> None:
        self.tables[entry[0]].dropped_rows += rows

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise SinkError(f"Delta sink failed: {self.error}") from self.error

    def _run(self) -> None:
        try:
            delay = self.options.delay_ms / 1000
            while not self._aborted and not all(t.done for t in self.tables.values()):
                entry = self.queue.get(timeout=0.5)
                if entry is None or self._aborted:
                    continue
                name, item = entry
                state = self.tables[name]
                if isinstance(item, pa.RecordBatch):
                    if delay:
                        time.sleep(delay)
                    if item.num_rows:
                        state.pending.append(item)
                elif isinstance(item, CheckpointBarrier):
                    self._commit(state, item)
                elif item is _END:
                    self._commit(state, None)
                    self._create_if_missing(state)
                    state.done = True
        except BaseException as error:
            self.error = error
            self.queue.close()

    def _commit(self, state: TableState, barrier: CheckpointBarrier | None) -> None:
        if not state.pending:
            return
        batches, state.pending = state.pending, []
        properties = None
        if barrier is not None:
            properties = CommitProperties(
                app_transactions=[
                    Transaction(app_id=self.options.app_id, version=barrier.checkpoint_id)
                ],
                custom_metadata={
                    "telepipe.checkpoint_id": str(barrier.checkpoint_id),
                    "telepipe.positions": json.dumps(barrier.positions, sort_keys=True),
                },
            )
        # One conversion per commit, over the concatenated rows, not one per batch.
        table = to_delta_table(pa.Table.from_batches(batches).combine_chunks())
        write_deltalake(str(state.path), table, mode="append", commit_properties=properties)
        state.committed_rows += table.num_rows
        state.commits += 1

    def _create_if_missing(self, state: TableState) -> None:
        # Every output exists after a run, even one no row reached, so readers
        # (polars, notebooks) find an empty table rather than a missing path.
        if state.schema is None or DeltaTable.is_deltatable(str(state.path)):
            return
        empty = pa.Table.from_batches([], schema=delta_schema(state.schema))
        write_deltalake(str(state.path), empty, mode="append")

    def committed(self) -> dict[str, int]:
        return {name: state.committed_rows for name, state in self.tables.items()}

    def dropped(self) -> dict[str, int]:
        return {name: state.dropped_rows for name, state in self.tables.items()}


def last_checkpoint(path: str | Path, app_id: str = "telepipe") -> int | None:
    """The checkpoint id of the last commit of a table, or None for a new table."""
    try:
        return DeltaTable(str(path)).transaction_version(app_id)
    except Exception:
        return None
