"""An in-memory Kudu behind the ``telepipe.sinks._kudu_client`` interface.

It keeps the Kudu semantics the sink relies on: primary-key upsert (last write
wins), table rules (key columns first, NOT NULL, not float/double/bool),
per-row errors (a null in a NOT NULL column or an out-of-range integer is
refused at apply, as kudu-python's ``PartialRow.set_loc`` does; a row outside
every range partition fails at flush with "No tablet covering the requested
range partition"), a mutation buffer that refuses an op it has no room for
("Incomplete: not enough mutation buffer space ..."), and injectable faults:
transient flush failures (every buffered op fails with a "Timed out ...
Service unavailable: Soft memory limit exceeded" per-row error), failing
applies, and a delay per flush (a slow cluster).
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from telepipe.sinks.kudu_types import KuduStatusError, RowError, TableSpec

_INT_BITS = {"int8": 8, "int16": 16, "int32": 32, "int64": 64}
_TYPES = set(_INT_BITS) | {"float", "double", "bool", "string", "binary"}
_TYPES |= {"unixtime_micros", "date", "decimal"}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
SOFT_MEMORY = "Service unavailable: Soft memory limit exceeded (at 96.1% of capacity)"


@dataclass
class FakeTable:
    spec: TableSpec
    rows: dict[tuple[object, ...], dict[str, object]] = field(default_factory=dict)


@dataclass
class FakeSession:
    buffer_bytes: int
    timeout_ms: int
    flush_interval_ms: int
    buffer: list[tuple[FakeTable, dict[str, object], str]] = field(default_factory=list)
    used: int = 0
    errors: list[RowError] = field(default_factory=list)


class FakeKudu:
    """The cluster: tables and faults; ``connect`` is the sink's ``client_factory``."""

    def __init__(self) -> None:
        self.tables: dict[str, FakeTable] = {}
        self.lock = threading.Lock()
        self.fail_connects = 0
        self.fail_flushes = 0  # the next N flushes fail transiently, per row
        self.fail_applies = 0  # the next N applies raise "Network error"
        self.flush_delay_s = 0.0
        self.flushes: list[int] = []  # ops sent per flush
        self.max_buffered = 0
        self.applies = 0
        self.closed = 0

    def connect(self, masters: list[str]) -> FakeClient:
        if self.fail_connects:
            self.fail_connects -= 1
            raise KuduStatusError("Network error: Client connection negotiation failed")
        return FakeClient(self, masters)

    def content(self, name: str) -> list[dict[str, object]]:
        table = self.tables[name]
        return [table.rows[k] for k in sorted(table.rows, key=repr)]


def _check_spec(spec: TableSpec) -> None:
    names = [c.name for c in spec.columns]
    key = list(spec.primary_key)
    if names[: len(key)] != key:
        raise KuduStatusError("Invalid argument: primary key columns must be listed first")
    for c in spec.columns:
        if c.type not in _TYPES:
            raise KuduStatusError(f"Invalid argument: unknown type {c.type}")
        if c.name in key and (c.nullable or c.type in ("float", "double", "bool")):
            raise KuduStatusError(f"Invalid argument: key column {c.name} not allowed")
    if not set(spec.hash_columns) <= set(key) or spec.hash_buckets < 2:
        raise KuduStatusError("Invalid argument: bad hash partitioning")
    if spec.range is not None:
        if spec.range.column not in key:
            raise KuduStatusError("Invalid argument: range column must be a key column")
        bounds = sorted(spec.range.bounds)
        if any(hi > lo2 for (_, hi), (lo2, _) in itertools.pairwise(bounds)):
            raise KuduStatusError("Invalid argument: overlapping range partitions")


def _store(c: Any, value: object) -> object:
    """As set_loc would take it: Cython coercion, then the C++ Set* checks."""
    if value is None:
        if not c.nullable:
            raise KuduStatusError(
                f"Invalid argument: column not nullable: {c.name} {c.type.upper()} NOT NULL"
            )
        return None
    if c.type in _INT_BITS:
        if not isinstance(value, int) or isinstance(value, bool):
            raise KuduStatusError(f"Invalid argument: an integer is required for {c.name}")
        bits = _INT_BITS[c.type]
        if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
            raise KuduStatusError(f"Invalid argument: value too large to convert to {c.type}")
        return value
    if c.type == "unixtime_micros":
        if not isinstance(value, dt.datetime):  # util.to_unixtime_micros
            raise KuduStatusError("Invalid argument: Invalid timestamp type.")
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return (moment - _EPOCH) // dt.timedelta(microseconds=1)
    if c.type == "date":
        return (value - _EPOCH.date()).days  # type: ignore[operator]
    if c.type == "binary" and isinstance(value, str):
        raise KuduStatusError("Invalid argument: Unicode objects must be explicitly encoded")
    return value


def _render(c: Any, stored: object) -> str:
    """C++ ColumnSchema::DebugCellAppend: "<type> <name>=<value>"."""
    if stored is None:
        text = "NULL"
    elif c.type == "string":
        text = '"' + str(stored).replace("\\", "\\\\").replace('"', '\\"') + '"'
    elif c.type == "unixtime_micros":
        moment = _EPOCH + dt.timedelta(microseconds=int(stored))  # type: ignore[call-overload]
        text = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    else:
        text = str(stored)
    return f"{c.type} {c.name}={text}"


class FakeClient:
    def __init__(self, cluster: FakeKudu, masters: list[str]) -> None:
        self.cluster = cluster
        self.masters = masters

    def table_exists(self, name: str) -> bool:
        return name in self.cluster.tables

    def create_table(self, spec: TableSpec) -> None:
        _check_spec(spec)
        with self.cluster.lock:
            if spec.name in self.cluster.tables:
                raise KuduStatusError(f"Already present: table {spec.name} already exists")
            self.cluster.tables[spec.name] = FakeTable(spec)

    def open_table(self, name: str) -> FakeTable:
        if name not in self.cluster.tables:
            raise KuduStatusError(f"Not found: the table does not exist: table_name: {name}")
        return self.cluster.tables[name]

    def new_session(
        self, *, timeout_ms: int, mutation_buffer_bytes: int, flush_interval_ms: int
    ) -> FakeSession:
        return FakeSession(mutation_buffer_bytes, timeout_ms, flush_interval_ms)

    def upsert(self, session: FakeSession, table: FakeTable, row: tuple[object, ...]) -> None:
        cluster = self.cluster
        cluster.applies += 1
        if cluster.fail_applies:
            cluster.fail_applies -= 1
            raise KuduStatusError("Network error: recv error: Connection reset by peer")
        columns = table.spec.columns
        if len(row) != len(columns):
            raise KuduStatusError(f"Invalid argument: {len(row)} values for {len(columns)} columns")
        stored = {c.name: _store(c, v) for c, v in zip(columns, row, strict=True)}
        size = 16 + sum(len(v) if isinstance(v, str | bytes) else 8 for v in stored.values())
        if session.used + size > session.buffer_bytes:
            raise KuduStatusError(
                "Incomplete: not enough mutation buffer space remaining for operation: "
                f"required additional {size} when {session.used} of {session.buffer_bytes} "
                "already used"
            )
        text = "UPSERT " + ", ".join(_render(c, stored[c.name]) for c in columns)
        session.buffer.append((table, stored, text))
        session.used += size
        cluster.max_buffered = max(cluster.max_buffered, len(session.buffer))

    def flush(self, session: FakeSession) -> None:
        cluster = self.cluster
        if cluster.flush_delay_s:
            time.sleep(cluster.flush_delay_s)
        ops, session.buffer, session.used = session.buffer, [], 0
        cluster.flushes.append(len(ops))
        failed = False
        transient = cluster.fail_flushes > 0
        if transient:
            cluster.fail_flushes -= 1
        for table, stored, text in ops:
            if transient:
                status = f"Timed out: Failed to write batch of {len(ops)} ops: {SOFT_MEMORY}"
                session.errors.append(RowError(text, status, False))
                failed = True
                continue
            spec = table.spec
            if spec.range is not None:
                at = stored[spec.range.column]
                if not any(lo <= at < hi for lo, hi in spec.range.bounds):  # type: ignore[operator]
                    status = "Not found: No tablet covering the requested range partition"
                    session.errors.append(RowError(text, status, False))
                    failed = True
                    continue
            key = tuple(stored[k] for k in spec.primary_key)
            with cluster.lock:
                table.rows[key] = stored
        if failed:
            raise KuduStatusError("IO error: Some errors occurred")

    def pending_errors(self, session: FakeSession) -> tuple[list[RowError], bool]:
        errors, session.errors = session.errors, []
        return errors, False

    def close(self) -> None:
        self.cluster.closed += 1
