"""``KuduSink``: record batches upserted into Apache Kudu tables, flushed at barriers.

A ``QueuedSink``, like ``DeltaSink``: one writer thread behind a bounded queue
owns every table. Rows are upserted (last write wins per key: a replay from the last
checkpoint rewrites the same rows) through one background-flush session. A
checkpoint counts as done only when the flush returned and its per-row errors
were collected: effectively-once.

- Per-row errors become ``DeadLetter`` s (reason ``kudu_row_error``), taken by
  the runner with ``take_dead_letters()``; the other rows land.
- Transient statuses ("Service unavailable", "Timed out", "Network error") are
  retried with exponential backoff and jitter (the failed rows are re-applied:
  upserts, so a write that possibly succeeded is harmless to repeat); when
  retries run out the sink fails with a one-line ``SinkError``.
- At most ``max_pending_rows`` rows are applied and unconfirmed: past that the
  writer flushes and waits, its queue fills, and the producer's ``on_next``
  blocks. A slow cluster becomes back-pressure, never memory growth.

All kudu-python calls live in ``_kudu_client``; tests inject a fake client.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import pyarrow as pa
import pyarrow.compute as pc

from telepipe.boundary import BoundaryOptions
from telepipe.dead_letters import DeadLetter
from telepipe.errors import ConfigError, SchemaError, SinkError
from telepipe.markers import CheckpointBarrier
from telepipe.sinks.kudu_types import (
    KuduColumn,
    KuduStatusError,
    describe_arrow_row,
    is_transient,
    key_of,
    kudu_columns,
    one_line,
    parse_interval_us,
    parse_operation,
    render_row,
    render_value,
    table_spec,
    to_kudu_rows,
)
from telepipe.sinks.queued import QueuedSink

ROW_ERROR = "kudu_row_error"
Row = tuple[object, ...]
_NO_BUFFER = "not enough mutation buffer space"


@dataclass(frozen=True)
class RetryOptions:
    max_attempts: int = 5  # calls of one operation, the first included
    initial_backoff_ms: float = 100.0
    max_backoff_ms: float = 5000.0
    jitter: float = 0.2  # each wait is scaled by a random factor in [1 - jitter, 1]

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"sink.retries.max_attempts must be >= 1, got {self.max_attempts}")
        if not 0 <= self.initial_backoff_ms <= self.max_backoff_ms:
            raise ConfigError("sink.retries: need 0 <= initial_backoff_ms <= max_backoff_ms")
        if not 0 <= self.jitter <= 1:
            raise ConfigError(f"sink.retries.jitter must be in [0, 1], got {self.jitter}")

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """The wait after failed attempt ``attempt`` (1-based), in seconds."""
        base = min(self.max_backoff_ms, self.initial_backoff_ms * 2 ** (attempt - 1))
        return base * (1 - self.jitter * rng.random()) / 1000


def _default_keys() -> dict[str, list[str]]:
    return {
        "readings": ["sensor_id", "ts"],
        "windows": ["sensor_id", "window_start"],
        "alarms": ["sensor_id", "ts"],
        "late_readings": ["sensor_id", "ts"],
        "dead_letters": ["id"],
    }


@dataclass(frozen=True)
class KuduSinkOptions:
    masters: list[str] = field(default_factory=lambda: ["127.0.0.1:7051"])
    table_prefix: str = "telepipe_"
    primary_key: dict[str, list[str]] = field(default_factory=_default_keys)
    hash_buckets: int = 4
    # Range partitions on a timestamp key column, for the tables whose key has it.
    range_partition_column: str | None = None
    range_partition_interval: str = "1d"
    range_partitions: int = 7  # ranges created with the table
    range_partition_start: str | None = None  # ISO date/time, UTC; None: the first row's
    n_replicas: int = 0  # 0: the server's default (3)
    operation_timeout_ms: int = 10_000
    flush_interval_ms: int = 1000
    mutation_buffer_bytes: int = 7 * 1024 * 1024
    max_pending_rows: int = 100_000
    retries: RetryOptions = field(default_factory=RetryOptions)
    queue: BoundaryOptions = field(default_factory=BoundaryOptions)

    def __post_init__(self) -> None:
        if isinstance(self.retries, dict):  # built from YAML without a nested _target_
            object.__setattr__(self, "retries", RetryOptions(**self.retries))
        if isinstance(self.queue, dict):
            object.__setattr__(self, "queue", BoundaryOptions(**self.queue))
        if not self.masters:
            raise ConfigError("sink.masters must list at least one Kudu master host:port")
        positive: tuple[str, ...] = ("hash_buckets", "range_partitions", "operation_timeout_ms")
        positive += ("flush_interval_ms", "mutation_buffer_bytes", "max_pending_rows")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"sink.{name} must be >= 1, got {getattr(self, name)}")
        if self.hash_buckets < 2:
            raise ConfigError(f"sink.hash_buckets must be >= 2, got {self.hash_buckets}")
        if self.n_replicas < 0:
            raise ConfigError(f"sink.n_replicas must be >= 0, got {self.n_replicas}")
        try:
            parse_interval_us(self.range_partition_interval)
        except SchemaError as error:
            raise ConfigError(f"sink.range_partition_interval: {error}") from None
        if self.range_partition_start is not None:
            try:
                self.start_us()
            except ValueError:
                raise ConfigError(
                    f"sink.range_partition_start: not an ISO date/time: "
                    f"{self.range_partition_start!r}"
                ) from None

    def start_us(self) -> int | None:
        if self.range_partition_start is None:
            return None
        moment = dt.datetime.fromisoformat(self.range_partition_start)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def check_tables(options: KuduSinkOptions, tables: dict[str, pa.Schema | None]) -> None:
    """Every table has a primary key, and the columns of those whose schema is known
    now take it: the sink's start-up checks (``telepipe validate`` runs them too)."""
    for name, schema in tables.items():
        if name not in options.primary_key:
            raise ConfigError(f"sink.primary_key has no entry for table {name!r}")
        if schema is not None:
            try:
                kudu_columns(schema, list(options.primary_key[name]))
            except SchemaError as error:
                raise ConfigError(f"sink.primary_key.{name}: {error}") from None


@dataclass
class TableState:
    name: str
    kudu_name: str
    key: list[str]
    schema: pa.Schema | None = None
    columns: list[KuduColumn] | None = None
    handle: Any = None
    rows_seen: int = 0  # row ordinal: a dead letter's position
    applied: int = 0  # applied since the last confirmed flush
    failed: int = 0  # of those, dead-lettered at the flush
    committed_rows: int = 0
    dead_rows: int = 0
    checkpoint: int | None = None


class KuduSink(QueuedSink):
    """Writes several Kudu tables from one writer thread; see the module docstring."""

    kind = "Kudu sink"

    def __init__(
        self,
        options: KuduSinkOptions,
        tables: dict[str, pa.Schema | None],
        client_factory: Callable[[list[str]], Any] | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        """``tables`` maps each table to its Arrow schema (None: known from the first batch)."""
        if client_factory is None:
            from telepipe.sinks._kudu_client import connect

            client_factory = connect
        self.options = options
        self._factory = client_factory
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.tables: dict[str, TableState] = {}
        check_tables(options, {name: None for name in tables})
        for name, schema in tables.items():
            state = TableState(name, options.table_prefix + name, list(options.primary_key[name]))
            if schema is not None:
                self._set_schema(state, schema)
            self.tables[name] = state
        super().__init__(list(tables), options.queue)
        self.client: Any = None
        self.session: Any = None
        self.peak_pending = 0
        self._pending = 0
        self._in_flight: dict[tuple[str, tuple[object, ...]], tuple[int, tuple[object, ...]]] = {}
        self._dead: list[DeadLetter] = []
        self._dead_lock = threading.Lock()
        self._in_cycle = False

    def start(self) -> Self:
        """Connect (retrying transient errors) and start the writer thread."""
        o = self.options
        self.client = self._retry("connect", lambda: self._factory(list(o.masters)))
        self.session = self._retry(
            "new_session",
            lambda: self.client.new_session(
                timeout_ms=o.operation_timeout_ms,
                mutation_buffer_bytes=o.mutation_buffer_bytes,
                flush_interval_ms=o.flush_interval_ms,
            ),
        )
        super().start()
        return self

    def committed(self) -> dict[str, int]:
        """Rows per table confirmed by a flush with no error for them."""
        return {name: state.committed_rows for name, state in self.tables.items()}

    def dead_lettered(self) -> dict[str, int]:
        return {name: state.dead_rows for name, state in self.tables.items()}

    def checkpoints(self) -> dict[str, int | None]:
        """The last checkpoint id each table completed (flushed, errors collected)."""
        return {name: state.checkpoint for name, state in self.tables.items()}

    def take_dead_letters(self) -> list[DeadLetter]:
        """The per-row errors collected since the last call, for the dead-letter store."""
        with self._dead_lock:
            letters, self._dead = self._dead, []
        return letters

    # -- writer thread ----------------------------------------------------------------------

    def on_rows(self, table: str, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self._write_batch(self.tables[table], batch)

    def on_barrier(self, table: str, barrier: CheckpointBarrier) -> None:
        self._flush_cycle()
        self.tables[table].checkpoint = barrier.checkpoint_id

    def on_end(self, table: str) -> None:
        self._flush_cycle()
        self._ensure_table(self.tables[table], None)

    def on_stop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()

    def _set_schema(self, state: TableState, schema: pa.Schema) -> None:
        try:
            state.columns = kudu_columns(schema, state.key)
        except SchemaError as error:
            raise SchemaError(f"table {state.name!r}: {error}") from None
        state.schema = schema

    def _retry[R](self, what: str, call: Callable[[], R]) -> R:
        attempts = self.options.retries.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                return call()
            except KuduStatusError as error:
                if not is_transient(error.status):
                    raise SinkError(f"Kudu {what} failed: {one_line(error.status)}") from None
                if attempt == attempts:
                    raise SinkError(
                        f"Kudu {what} failed after {attempts} attempts: {one_line(error.status)}"
                    ) from None
                self._sleep(self.options.retries.backoff_s(attempt, self._rng))
        raise AssertionError("unreachable")

    def _ensure_table(self, state: TableState, batch: pa.RecordBatch | None) -> None:
        if state.handle is not None:
            return
        if state.schema is None:
            if batch is None:
                return  # no schema and no rows: nothing to create
            self._set_schema(state, batch.schema)
        assert state.columns is not None
        if not self._retry("table_exists", lambda: self.client.table_exists(state.kudu_name)):
            self._create(state, batch)
        state.handle = self._retry("open_table", lambda: self.client.open_table(state.kudu_name))

    def _create(self, state: TableState, batch: pa.RecordBatch | None) -> None:
        o = self.options
        assert state.columns is not None
        column = o.range_partition_column
        start = o.start_us()
        if column is not None and column in state.key and start is None:
            start = time.time_ns() // 1000  # an empty table: ranges from today
            if batch is not None and batch.num_rows:
                values = batch.column(column)
                t = values.type
                first = pc.min(values.cast(pa.timestamp("us", t.tz), safe=False)).value
                start = first if first is not None else start
        spec = table_spec(
            state.kudu_name,
            state.columns,
            hash_buckets=o.hash_buckets,
            n_replicas=o.n_replicas,
            range_column=column,
            range_start_us=start,
            range_interval_us=parse_interval_us(o.range_partition_interval),
            range_count=o.range_partitions,
        )

        def create() -> None:
            try:
                self.client.create_table(spec)
            except KuduStatusError as error:
                # A retried create whose first attempt got through finds it there.
                if not error.status.startswith("Already present"):
                    raise

        self._retry("create_table", create)

    def _write_batch(self, state: TableState, batch: pa.RecordBatch) -> None:
        self._ensure_table(state, batch)
        assert state.schema is not None and state.columns is not None
        if batch.schema.names != state.schema.names or batch.schema.types != state.schema.types:
            raise SchemaError(f"table {state.name!r}: batch schema differs from the table's")
        rows, refused = to_kudu_rows(batch, state.columns)
        base = state.rows_seen
        state.rows_seen += batch.num_rows
        for index, row in enumerate(rows):
            if row is None:
                self._dead_letter(
                    state, base + index, refused[index], describe_arrow_row(batch, index)
                )
            else:
                self._apply(state, base + index, row)

    def _apply(self, state: TableState, ordinal: int, row: tuple[object, ...]) -> None:
        if self._pending >= self.options.max_pending_rows:
            self._flush_cycle()  # the bound: wait for the cluster before taking more
        if self._upsert(state, ordinal, row):
            self._in_flight[(state.name, key_of(state.columns or [], row))] = (ordinal, row)
            self._pending += 1
            self.peak_pending = max(self.peak_pending, self._pending)
            state.applied += 1

    def _upsert(self, state: TableState, ordinal: int, row: tuple[object, ...]) -> bool:
        """Apply one upsert; False if the row was refused (dead-lettered)."""
        retries = self.options.retries
        for attempt in range(1, retries.max_attempts + 1):
            try:
                self.client.upsert(self.session, state.handle, row)
                return True
            except KuduStatusError as error:
                status = error.status
                if status.startswith("Invalid argument"):
                    payload = f"UPSERT {render_row(state.columns or [], row)}"
                    self._dead_letter(state, ordinal, status, payload)
                    return False
                if attempt == retries.max_attempts:
                    raise SinkError(
                        f"Kudu upsert failed after {attempt} attempts: {one_line(status)}"
                    ) from None
                if _NO_BUFFER in status and self._in_cycle:
                    # Re-applying inside a flush cycle: send the buffer, leave its
                    # errors for the cycle to collect.
                    with contextlib.suppress(KuduStatusError):
                        self.client.flush(self.session)
                elif _NO_BUFFER in status:
                    self._flush_cycle()
                elif is_transient(status):
                    self._sleep(retries.backoff_s(attempt, self._rng))
                else:
                    raise SinkError(f"Kudu upsert failed: {one_line(status)}") from None
        raise AssertionError("unreachable")

    def _flush_cycle(self) -> None:
        """Flush, collect per-row errors, re-apply transient failures until none are left."""
        if not self._pending:
            return
        self._in_cycle = True
        try:
            self._flush_rounds()
        finally:
            self._in_cycle = False
        for state in self.tables.values():
            state.committed_rows += state.applied - state.failed
            state.applied = state.failed = 0
        self._in_flight.clear()
        self._pending = 0

    def _flush_rounds(self) -> None:
        retries = self.options.retries
        attempt = 0
        while True:
            attempt += 1
            flush_status = None
            try:
                self.client.flush(self.session)
            except KuduStatusError as error:
                flush_status = error.status
            errors, overflowed = self.client.pending_errors(self.session)
            if overflowed:
                raise SinkError(
                    "Kudu dropped per-row errors (session error buffer overflowed): "
                    "cannot tell which rows failed"
                )
            again: list[tuple[TableState, int, Row]] = []
            status = flush_status or ""
            index = self._index() if errors else {}
            for row_error in errors:
                matches = self._match(row_error.operation, index)
                if is_transient(row_error.status):
                    status = row_error.status
                    if not matches:  # cannot tell which: resend all (upserts are idempotent)
                        again = self._all_in_flight()
                        break
                    again.extend(matches)
                    continue
                if not matches:  # still a dead letter, its payload Kudu's description
                    self._dead_letter(None, -1, row_error.status, row_error.operation)
                for state, ordinal, row in matches[:1]:
                    self._dead_letter(state, ordinal, row_error.status, row_error.operation)
                    state.failed += 1
                    self._in_flight.pop((state.name, key_of(state.columns or [], row)), None)
            if flush_status is not None and not errors:
                if not is_transient(flush_status):
                    raise SinkError(f"Kudu flush failed: {one_line(flush_status)}")
                again = self._all_in_flight()
            if not again:
                break
            if attempt >= retries.max_attempts:
                raise SinkError(f"Kudu flush failed after {attempt} attempts: {one_line(status)}")
            self._sleep(retries.backoff_s(attempt, self._rng))
            for state, ordinal, row in again:
                self._upsert(state, ordinal, row)

    def _all_in_flight(self) -> list[tuple[TableState, int, Row]]:
        return [(self.tables[t], o, row) for (t, _), (o, row) in self._in_flight.items()]

    def _index(self) -> dict[tuple[str, tuple[str, ...]], list[tuple[TableState, int, Row]]]:
        """In-flight rows by table and key as Kudu's debug string renders it."""
        index: dict[tuple[str, tuple[str, ...]], list[tuple[TableState, int, Row]]] = {}
        for (table, key), (ordinal, row) in self._in_flight.items():
            state = self.tables[table]
            keys = [c for c in state.columns or [] if c.key]
            rendered = tuple(render_value(c, v) for c, v in zip(keys, key, strict=True))
            index.setdefault((table, rendered), []).append((state, ordinal, row))
        return index

    def _match(self, operation: str, index: dict) -> list[tuple[TableState, int, Row]]:
        """The in-flight rows a failed operation names: same columns and key, any table."""
        cells = parse_operation(operation)
        found = []
        for state in self.tables.values():
            names = [c.name for c in state.columns or []]
            if state.handle is None or set(cells) != set(names):
                continue  # the debug string names no table: match on columns and key
            key = tuple(cells[c.name] for c in state.columns or [] if c.key)
            found.extend(index.get((state.name, key), []))
        return found

    def _dead_letter(
        self, state: TableState | None, position: int, status: str, payload: str
    ) -> None:
        letter = DeadLetter(
            reason=ROW_ERROR,
            detail=one_line(status),
            stream_id=0,
            session_id=0,
            position=position,
            # A row Kudu refused was never received: no receive time, rather than this
            # process's clock, so every replay of one input gives the same letters.
            received_ns=0,
            payload=f"{state.kudu_name if state else '?'}: {payload}".encode(),
        )
        if state is not None:
            state.dead_rows += 1
        with self._dead_lock:
            self._dead.append(letter)
