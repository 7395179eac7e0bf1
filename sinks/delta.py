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
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Self

import pyarrow as pa
from deltalake import (
    ColumnProperties,
    CommitProperties,
    DeltaTable,
    Transaction,
    WriterProperties,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError

from telepipe.boundary import BoundaryOptions
from telepipe.errors import ConfigError, SinkError
from telepipe.markers import CheckpointBarrier
from telepipe.sinks import data_dir_lock
from telepipe.sinks.delta_types import delta_schema, to_delta_table
from telepipe.sinks.queued import QueuedSink
from telepipe.state import write_checkpoint

# A barrier taken after the end-of-input flush (telepipe.sources.replay.END_OF_INPUT).
END_OF_INPUT = "end_of_input"
# Set in the decoder's state of a barrier taken after a stop's flush (a drain).
DRAINED = "drained"


@dataclass(frozen=True)
class DeltaSinkOptions:
    app_id: str = "telepipe"
    queue: BoundaryOptions = field(default_factory=BoundaryOptions)
    # Sleep this long per batch taken from the queue: a stand-in for a slow store,
    # used to test and measure back-pressure. 0 in production.
    delay_ms: float = 0.0
    # Compact a table's small files every this many of its commits (0: never). Each
    # commit adds a file and the open table keeps every live file's entry (~40 kB of
    # RSS here), so without it an endless run grows by ~10 MB/min (benchmarks/soak.py).
    compact_every_commits: int = 100
    target_file_mb: int = 128
    # After a compaction, delete the files it replaced once they are this old (Delta's
    # default 7 days keeps time travel and slow readers safe); None: never.
    vacuum_retention_hours: int | None = 168
    # Parquet compression of the data files (snappy: what every Delta reader reads).
    compression: str = "snappy"

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise ConfigError(
                f"sink.compression must be one of {', '.join(COMPRESSIONS)}, "
                f"got {self.compression!r}"
            )
        if not self.app_id:
            raise ConfigError("sink.app_id must not be empty")
        if self.delay_ms < 0:
            raise ConfigError(f"sink.delay_ms must be >= 0, got {self.delay_ms}")
        if self.compact_every_commits < 0:
            raise ConfigError(
                f"sink.compact_every_commits must be >= 0, got {self.compact_every_commits}"
            )
        if self.target_file_mb < 1:
            raise ConfigError(f"sink.target_file_mb must be >= 1, got {self.target_file_mb}")
        hours = self.vacuum_retention_hours
        if hours is not None and (
            isinstance(hours, bool) or not isinstance(hours, int) or hours < 0
        ):
            raise ConfigError(
                f"sink.vacuum_retention_hours must be null or an int >= 0, got {hours!r}"
            )
        if isinstance(self.queue, dict):  # built from YAML without a nested _target_
            object.__setattr__(self, "queue", BoundaryOptions(**self.queue))


ParquetCompression = Literal["SNAPPY", "LZ4_RAW", "ZSTD", "GZIP", "UNCOMPRESSED"]
_PARQUET_COMPRESSION: dict[str, ParquetCompression] = {
    "snappy": "SNAPPY",
    "lz4_raw": "LZ4_RAW",
    "zstd": "ZSTD",
    "gzip": "GZIP",
    "uncompressed": "UNCOMPRESSED",
}
COMPRESSIONS = tuple(_PARQUET_COMPRESSION)


def writer_properties(schema: pa.Schema, compression: str) -> WriterProperties:
    """Parquet settings for a table of ``schema``: no dictionary for floating-point and
    64-bit columns (values, timestamps: nearly all distinct, so the writer builds a
    dictionary only to drop it), the default for the rest (sensor ids, quality).
    1.6x the rows/s of the default on the readings table, files within 5% (measured
    in docs/BENCHMARKS.md)."""
    plain = {
        f.name: ColumnProperties(dictionary_enabled=False)
        for f in schema
        if pa.types.is_floating(f.type)
        or pa.types.is_timestamp(f.type)
        or (pa.types.is_integer(f.type) and f.type.bit_width == 64)
    }
    return WriterProperties(
        compression=_PARQUET_COMPRESSION[compression], column_properties=plain or None
    )


@dataclass
class TableState:
    path: Path
    schema: pa.Schema | None = None
    last_checkpoint: int = 0
    skipped_rows: int = 0
    pending: list[pa.RecordBatch] = field(default_factory=list)
    committed_rows: int = 0
    commits: int = 0
    table: DeltaTable | None = None  # kept open once the table exists
    properties: WriterProperties | None = None  # made at the first write
    compactions: int = 0
    files_compacted: int = 0
    files_vacuumed: int = 0


ROOM_MARGIN = 4 << 20  # bytes a commit needs beyond its rows: log entry, state, slack


class DeltaSink(QueuedSink):
    """Writes several Delta tables under ``data_dir`` from one writer thread."""

    kind = "Delta sink"

    def __init__(
        self,
        options: DeltaSinkOptions,
        data_dir: str | Path,
        tables: dict[str, pa.Schema | None],
        metadata: dict[str, str] | None = None,
    ) -> None:
        """``tables`` maps each table to its Arrow schema (None: known from the first batch)."""
        super().__init__(list(tables), options.queue, options.delay_ms)
        self.options = options
        self.root = Path(data_dir)
        self.metadata = metadata or {}
        self._kill = fault_kill()
        # The writer epoch of this run's hold on data_dir (None: not held, no fencing).
        self.holder = data_dir_lock.holder_of(self.root)
        self.epoch = None if self.holder is None else self.holder[0]
        self.tables = {}
        for name, schema in tables.items():
            path = self.root / name
            planned = _seen.get((str(path.resolve()), options.app_id))
            # Every commit goes through this snapshot of the table (updated in place
            # by our own commits): a commit of another writer since, with this app id's
            # transaction, makes delta-rs refuse ours (ConcurrentTransaction), so a
            # writer stalled past its fence check, or one that recovered before the
            # other's last commit, can never commit a checkpoint twice.
            opened, found = _opened(path, options.app_id)
            held = found or 0
            moved = planned is not None and (planned[1] or 0) != held
            if (
                self.epoch is not None
                and planned is not None
                and planned[0] == self.epoch
                and moved
            ):
                raise ConfigError(
                    f"table {name} in {self.root}: another writer committed checkpoint "
                    f"{held} to it while this run (writer epoch {self.epoch}) started from "
                    f"checkpoint {planned[1] or 0 if planned else 0}; run again to resume from it"
                )
            self.tables[name] = TableState(path, schema, held, table=opened)

    def start(self) -> Self:
        self.root.mkdir(parents=True, exist_ok=True)
        for name, state in self.tables.items():
            _check_existing(name, state)
        super().start()
        return self

    def on_rows(self, table: str, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self.tables[table].pending.append(batch)

    def on_barrier(self, table: str, barrier: CheckpointBarrier) -> None:
        self._commit(self.tables[table], barrier)

    def on_end(self, table: str) -> None:
        state = self.tables[table]
        self._commit(state, None)
        self._create_if_missing(state)

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
        self._check_room(state, batches, barrier.checkpoint_id)
        state_file = self._save_state(state, barrier)
        decoder = barrier.state.get("decoder")
        ended = isinstance(decoder, dict) and bool(decoder.get(END_OF_INPUT))
        drained = isinstance(decoder, dict) and bool(decoder.get(DRAINED))
        self._fault("before", state, barrier.checkpoint_id, ended)
        self._fence(state, barrier.checkpoint_id)
        properties = CommitProperties(
            app_transactions=[
                Transaction(app_id=self.options.app_id, version=barrier.checkpoint_id)
            ],
            custom_metadata={
                **self.metadata,
                "telepipe.app_id": self.options.app_id,
                "telepipe.checkpoint_id": str(barrier.checkpoint_id),
                **({"telepipe.epoch": str(self.epoch)} if self.epoch is not None else {}),
                "telepipe.positions": json.dumps(barrier.positions, sort_keys=True),
                "telepipe.state": state_file,
                # The barrier after the end-of-input flush: a restart takes it there again.
                **({"telepipe.end_of_input": "true"} if ended else {}),
                # After a flush of a stop (drain): a replay cannot go on from it.
                **({"telepipe.drained": "true"} if drained and not ended else {}),
            },
        )
        try:
            self._write(state, batches, properties)
        except CommitFailedError as error:  # another writer committed since we read it
            self._fence(state, barrier.checkpoint_id)
            raise SinkError(
                f"table {state.path.name} in {self.root}: another writer committed to it "
                f"while this run wrote it ({str(error).strip().splitlines()[0]}); "
                "one writer per data dir"
            ) from None
        state.last_checkpoint = barrier.checkpoint_id
        _seen[(str(state.path.resolve()), self.options.app_id)] = (
            self.epoch,
            barrier.checkpoint_id,
        )
        self._fault("after", state, barrier.checkpoint_id, ended)
        self._fence(state, barrier.checkpoint_id, committed=True)

    def _check_room(
        self, state: TableState, batches: list[pa.RecordBatch], checkpoint_id: int
    ) -> None:
        """Refuse a commit the disk cannot hold, in one line: delta-rs run out of space
        mid-write printed a Rust panic from its runtime's thread before its error.
        The rows' Arrow size bounds their Parquet; the margin covers log and state."""
        need = sum(b.nbytes for b in batches) + ROOM_MARGIN
        try:
            free = shutil.disk_usage(self.root).free
        except OSError:
            return  # not knowable here: the write says what is wrong
        if free < need:
            raise SinkError(
                f"data_dir={self.root}: no space left for table {state.path.name}'s commit "
                f"of checkpoint {checkpoint_id} ({free:,} bytes free, about {need:,} "
                "needed); what was committed stays: free space, then run again"
            )

    def _fence(self, state: TableState, checkpoint_id: int, committed: bool = False) -> None:
        """Stop in one line once data_dir's epoch file names another writer (its lock
        file was deleted and another run locked a new one) or is gone: checked before
        each commit, and after it (a commit under way when the newer run started is
        its last)."""
        if self.holder is None:
            return
        try:
            current = data_dir_lock.current_holder(self.root)
        except (OSError, ValueError) as error:
            reason = f"cannot be read ({getattr(error, 'strerror', None) or error})"
            current = None
        else:
            if current == self.holder:
                return
            reason = "was removed"
        what = "committed" if committed else "did not commit"
        taken = (
            f"its writer epoch file {data_dir_lock.EPOCH_NAME} {reason}"
            if current is None
            else f"another writer (epoch {current[0]}) took it"
        )
        raise SinkError(
            f"data_dir={self.root}: fenced: {taken} while this run (epoch {self.epoch}) "
            f"held it; this run {what} checkpoint {checkpoint_id} of table "
            f"{state.path.name} and stops"
        )

    def _fault(self, when: str, state: TableState, checkpoint_id: int, ended: bool) -> None:
        """Fault injection for tests (``TELEPIPE_FAULT_KILL``): SIGKILL this process right
        before or after a table's commit of a checkpoint, the state file written."""
        kill = self._kill
        if (
            kill is not None
            and kill[:2] == (when, state.path.name)
            and (kill[2] == str(checkpoint_id) or (kill[2] == "end" and ended))
        ):
            os.kill(os.getpid(), signal.SIGKILL)

    def _write(
        self, state: TableState, batches: list[pa.RecordBatch], properties: CommitProperties | None
    ) -> None:
        if batches:
            # One conversion per commit, over the concatenated rows, not one per batch.
            table = to_delta_table(pa.Table.from_batches(batches).combine_chunks())
        else:
            assert state.schema is not None
            table = pa.Table.from_batches([], schema=delta_schema(state.schema))
        # Writing through an open DeltaTable updates it in place; a path would make
        # delta-rs read the whole log again at every commit (5x slower at 100 commits).
        target = state.table if state.table is not None else str(state.path)
        if state.properties is None:
            state.properties = writer_properties(table.schema, self.options.compression)
        write_deltalake(
            target,
            table,
            mode="append",
            commit_properties=properties,
            writer_properties=state.properties,
        )
        if state.table is None:
            state.table = DeltaTable(str(state.path))
        state.committed_rows += table.num_rows
        state.commits += 1
        every = self.options.compact_every_commits
        if every and batches and state.commits % every == 0:
            self._compact(state)

    def _compact(self, state: TableState) -> None:
        """Rewrite the table's small files into ``target_file_mb`` ones (an OPTIMIZE
        commit: same rows, no application transaction, so recovery and exactly-once
        are unaffected); then a vacuum deletes the files it replaced once they are
        ``vacuum_retention_hours`` old. Below Delta's 168 h that is only safe when
        no other writer (another pipeline, a ``dlq replay``) shares the table."""
        assert state.table is not None
        metrics = state.table.optimize.compact(
            target_size=self.options.target_file_mb * 2**20,
            writer_properties=state.properties,
            commit_properties=CommitProperties(custom_metadata={"telepipe.action": "compact"}),
        )
        state.compactions += 1
        state.files_compacted += int(metrics.get("numFilesRemoved", 0))
        hours = self.options.vacuum_retention_hours
        if hours is not None:
            state.files_vacuumed += len(
                state.table.vacuum(
                    retention_hours=hours, dry_run=False, enforce_retention_duration=False,
                    commit_properties=CommitProperties(custom_metadata={"telepipe.action": "vacuum"}),
                )
            )  # fmt: skip

    def _save_state(self, state: TableState, barrier: CheckpointBarrier) -> str:
        # Arrow files and a JSON manifest (telepipe.state), per app id and table: a DLQ
        # replay (its own app id) into the same data_dir must not overwrite or prune
        # the pipeline's own checkpoint states.
        return write_checkpoint(
            self.root,
            self.options.app_id,
            state.path.name,
            barrier.checkpoint_id,
            barrier.state,
            writer=self.holder[1] if self.holder is not None and self.holder[1] else None,
        )

    def _create_if_missing(self, state: TableState) -> None:
        # Every output exists after a run, even one no row reached, so readers
        # (polars, notebooks) find an empty table rather than a missing path.
        if state.schema is None or DeltaTable.is_deltatable(str(state.path)):
            return
        empty = pa.Table.from_batches([], schema=delta_schema(state.schema))
        write_deltalake(str(state.path), empty, mode="append")

    def committed(self) -> dict[str, int]:
        return {name: state.committed_rows for name, state in self.tables.items()}


def _check_existing(name: str, state: TableState) -> None:
    """A table already in ``data_dir`` must have the columns this pipeline writes to it:
    found now, in one line, rather than at its first commit after the run started."""
    if state.schema is None or not DeltaTable.is_deltatable(str(state.path)):
        return
    try:
        existing = pa.schema(DeltaTable(str(state.path)).schema().to_arrow())
    except Exception as error:  # delta-rs raises several kinds for a damaged log
        raise ConfigError(f"table {name} in {state.path.parent}: cannot read it: {error}") from None
    have, wanted = existing.names, delta_schema(state.schema)
    if sorted(have) != sorted(wanted.names):
        raise ConfigError(
            f"table {name} in {state.path.parent} has columns {have}, but this pipeline "
            f"writes {wanted.names} to it: use another data_dir or output name"
        )
    for column in wanted:
        old = existing.field(column.name).type
        # Nested types are left to the write: Delta casts their items (a list of ns
        # timestamps is stored as one of us, and read back so).
        if (
            old != column.type
            and not pa.types.is_nested(old)
            and not pa.types.is_nested(column.type)
        ):
            raise ConfigError(
                f"table {name} in {state.path.parent}: column {column.name!r} is {old}, but "
                f"this pipeline writes {column.type}: use another data_dir or output name"
            )


FAULT_KILL = "TELEPIPE_FAULT_KILL"


def fault_kill() -> tuple[str, str, str] | None:
    """``TELEPIPE_FAULT_KILL=before|after:TABLE:K`` (K a checkpoint id, or ``end``: the
    checkpoint after the end-of-input flush): where a test has the writer SIGKILLed."""
    spec = os.environ.get(FAULT_KILL)
    if not spec:
        return None
    parts = spec.split(":")
    if len(parts) != 3 or parts[0] not in ("before", "after"):
        raise ConfigError(f"{FAULT_KILL} must be before|after:TABLE:CHECKPOINT, got {spec!r}")
    return parts[0], parts[1], parts[2]


def drained_at(path: str | Path, app_id: str = "telepipe") -> int | None:
    """The checkpoint of the table's newest commit of ``app_id`` if that commit came
    after a drain's flush (a stop with --drain, drain=true, a limit), else None."""
    return _newest_marked(path, app_id, "telepipe.drained")


def _newest_marked(path: str | Path, app_id: str, mark: str) -> int | None:
    """The checkpoint of the table's newest commit of ``app_id`` if it carries ``mark``."""
    try:
        history = DeltaTable(str(path)).history(limit=16)
    except Exception:
        return None
    for entry in history:  # newest first
        if entry.get("telepipe.app_id", "telepipe") == app_id and "telepipe.checkpoint_id" in entry:
            if entry.get(mark) == "true":
                return int(str(entry["telepipe.checkpoint_id"]))
            return None
    return None


# Commit metadata naming what wrote a data dir: the pipeline's name and a hash of its
# composed config (``pipelines.registry.pipeline_identity``), on every checkpoint commit.
PIPELINE = "telepipe.pipeline"
PIPELINE_HASH = "telepipe.pipeline_hash"


def written_by(
    data_dir: str | Path, tables: list[str] | None = None, app_id: str | None = "telepipe"
) -> dict[str, str]:
    """What wrote ``data_dir``'s newest checkpoint: ``telepipe.pipeline``,
    ``telepipe.pipeline_hash``, ``telepipe.input`` and ``telepipe.checkpoint_id`` of the
    newest checkpoint commit of ``app_id`` (None: any app id but a ``dlq replay``'s) in
    ``tables`` (None: every table there); empty if none records a pipeline (a data dir
    written before commits named it)."""
    root = Path(data_dir)
    if tables is None:
        found = root.iterdir() if root.is_dir() else iter(())
        tables = sorted(p.name for p in found if (p / "_delta_log").is_dir())
    best: tuple[int, dict[str, str]] = (-1, {})
    for table in tables:
        try:
            history = DeltaTable(str(root / table)).history(limit=16)
        except Exception:
            continue
        for entry in history:  # newest first
            owner = str(entry.get("telepipe.app_id", "telepipe"))
            mine = owner == app_id if app_id is not None else not owner.startswith("telepipe-dlq-")
            raw = str(entry.get("telepipe.checkpoint_id", ""))
            if not mine or not raw.isdigit():
                continue
            if PIPELINE in entry and int(raw) > best[0]:
                keys = (PIPELINE, PIPELINE_HASH, "telepipe.input", "telepipe.checkpoint_id")
                best = (int(raw), {k: str(entry[k]) for k in keys if k in entry})
            break
    return best[1]


def ended_at(path: str | Path, app_id: str = "telepipe") -> int | None:
    """The checkpoint of the table's newest commit of ``app_id`` if that commit is the
    one after the end of a recorded input (nothing more to read from it), else None."""
    return _newest_marked(path, app_id, "telepipe.end_of_input")


def last_checkpoint(path: str | Path, app_id: str = "telepipe") -> int | None:
    """The checkpoint id of the last commit of a table, or None for a new table."""
    return _opened(path, app_id)[1]


def _opened(path: str | Path, app_id: str) -> tuple[DeltaTable | None, int | None]:
    """The table as it is now (None: no table yet) and its last checkpoint id in it."""
    try:
        table: DeltaTable | None = DeltaTable(str(path))
    except Exception:
        table = None
    found = table.transaction_version(app_id) if table is not None else None
    # What this process saw, under which writer epoch: a sink opened later in the same
    # hold finds out whether a table moved since the run planned its recovery.
    resolved = Path(path).resolve()
    _seen[(str(resolved), app_id)] = (data_dir_lock.epoch_of(resolved.parent), found)
    return table, found


_seen: dict[tuple[str, str], tuple[int | None, int | None]] = {}
