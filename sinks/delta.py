"""``DeltaSink``: record batches into embedded Delta Lake tables, committed at barriers.

One writer thread owns every table of a pipeline and takes work from a bounded
queue. Rows are buffered per table and committed when that table's branch
delivers a checkpoint barrier: one Delta commit per table per checkpoint (empty
ones too, so every table records every checkpoint), carrying the checkpoint id
as a Delta application transaction (``app_id`` -> version), and as commit
metadata the source positions and the name of the state file: the snapshots of
the decoder and of every operator of the table's chain, written just before the
commit. The commit is the atomic point: a state file without its commit is an
orphan and is never read. A table that already holds checkpoint k (a restart
replays from the oldest table's checkpoint) discards the rows up to barrier k.
"""

from __future__ import annotations

import json
import os
import pickle
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


STATE_DIR = "_telepipe_state"
KEEP_STATES = 16


@dataclass
class TableState:
    path: Path
    schema: pa.Schema | None = None
    last_checkpoint: int = 0
    skipped_rows: int = 0
    pending: list[pa.RecordBatch] = field(default_factory=list)
    committed_rows: int = 0
    dropped_rows: int = 0
    commits: int = 0
    done: bool = False


class DeltaSink:
    """Writes several Delta tables under ``data_dir`` from one writer thread."""

    def __init__(
        self,
        options: DeltaSinkOptions,
        data_dir: str | Path,
        tables: dict[str, pa.Schema | None],
        metadata: dict[str, str] | None = None,
    ) -> None:
        """``tables`` maps each table to its Arrow schema (None: known from the first batch)."""
        self.options = options
        self.root = Path(data_dir)
        self.metadata = metadata or {}
        self.tables = {
            name: TableState(
                self.root / name, schema, last_checkpoint(self.root / name, options.app_id) or 0
            )
            for name, schema in tables.items()
        }
        self.queue: BoundedQueue[tuple[str, object]] = BoundedQueue(
            options.queue, "sink queue", on_drop=self._dropped, key=lambda entry: entry[0]
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

    def barrier(self, table: str, barrier: CheckpointBarrier) -> None:
        """Enqueue a barrier outside a flow (side-output tables commit at it too)."""
        self._raise_if_failed()
        self.queue.put((table, barrier), None)

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
        batches, state.pending = state.pending, []
        if barrier is None:  # end of stream without a final barrier: keep the rows anyway
            if batches:
                self._write(state, batches, None)
            return
        if barrier.checkpoint_id <= state.last_checkpoint:
            state.skipped_rows += sum(b.num_rows for b in batches)
            return  # this table committed checkpoint k before a restart
        if not batches and state.schema is None:
            return
        state_file = self._save_state(state, barrier)
        properties = CommitProperties(
            app_transactions=[
                Transaction(app_id=self.options.app_id, version=barrier.checkpoint_id)
            ],
            custom_metadata={
                **self.metadata,
                "telepipe.checkpoint_id": str(barrier.checkpoint_id),
                "telepipe.positions": json.dumps(barrier.positions, sort_keys=True),
                "telepipe.state": state_file,
            },
        )
        self._write(state, batches, properties)
        state.last_checkpoint = barrier.checkpoint_id

    def _write(
        self, state: TableState, batches: list[pa.RecordBatch], properties: CommitProperties | None
    ) -> None:
        if batches:
            # One conversion per commit, over the concatenated rows, not one per batch.
            table = to_delta_table(pa.Table.from_batches(batches).combine_chunks())
        else:
            assert state.schema is not None
            table = pa.Table.from_batches([], schema=delta_schema(state.schema))
        write_deltalake(str(state.path), table, mode="append", commit_properties=properties)
        state.committed_rows += table.num_rows
        state.commits += 1

    def _save_state(self, state: TableState, barrier: CheckpointBarrier) -> str:
        directory = self.root / STATE_DIR / state.path.name
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{barrier.checkpoint_id:012d}.pkl"
        tmp = directory / (name + ".tmp")
        with tmp.open("wb") as f:
            pickle.dump(barrier.state, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / name)
        for old in sorted(directory.glob("*.pkl"))[:-KEEP_STATES]:
            old.unlink(missing_ok=True)
        return f"{STATE_DIR}/{state.path.name}/{name}"

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
