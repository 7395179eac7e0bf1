"""The event store of actor stages: the ``actor_events`` and ``actor_snapshots`` tables.

A stage with ``journal: true`` journals every event it applies (internal ones too)
and, at each checkpoint barrier, hands them over with snapshot rows of the entities
that applied ``snapshot_every`` events since their last one (``ActorLogic.on_barrier``).
They travel in-band as side outputs before the barrier, so the sink commits them in
the same checkpoint as every other table, exactly once from a recorded input (a
restart replays and each table skips the checkpoints it holds).

``actor_events``: ``step`` (``table.step``), ``checkpoint_id``, ``key_group``,
``entity``, ``seq`` (the entity's event number, from 1), ``ts`` (event time),
``event`` (its type's name) and the payload columns of every journaled stage's
event types (typed, null where a type has none).

``actor_snapshots``: ``step``, ``checkpoint_id``, ``key_group``, ``entity``, ``seq``
(events folded into it), ``status`` (0 running, 1 stopped) and ``state_<column>``
per state column.

Rows of several stages share the tables (``step`` tells them apart): a column two
stages declare must have one type. ``recovery.recover`` folds them back.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from telepipe.errors import ConfigError
from telepipe.operators.actors.spec import EVENT_HEAD, Spec
from telepipe.schema import TS_NS, arrow_column
from telepipe.state.key_groups import DEFAULT_KEY_GROUPS, key_group

ACTOR_EVENTS, ACTOR_SNAPSHOTS = "actor_events", "actor_snapshots"
STORE_TABLES = (ACTOR_EVENTS, ACTOR_SNAPSHOTS)

_HEAD = [
    pa.field("step", pa.string(), nullable=False),
    pa.field("checkpoint_id", pa.int64(), nullable=False),
    pa.field("key_group", pa.int32(), nullable=False),
    pa.field("entity", pa.int32(), nullable=False),
    pa.field("seq", pa.int64(), nullable=False),
]
EVENTS_HEAD = pa.schema(
    [*_HEAD, pa.field("ts", TS_NS, nullable=False), pa.field("event", pa.string(), False)]
)
SNAPSHOTS_HEAD = pa.schema([*_HEAD, pa.field("status", pa.int8(), nullable=False)])


def payload_fields(spec: Spec) -> list[pa.Field]:
    names = spec.event_dtype.names or ()
    return [pa.field(n, pa.from_numpy_dtype(spec.event_dtype[n])) for n in names[len(EVENT_HEAD) :]]


def state_fields(spec: Spec) -> list[pa.Field]:
    return [
        pa.field(f"state_{n}", pa.from_numpy_dtype(spec.state_dtype[n]))
        for n in spec.state_dtype.names or ()
    ]


def store_schemas(specs: Iterable[tuple[str, Spec]]) -> dict[str, pa.Schema]:
    """The two tables' schemas for journaled stages ``(where, spec)`` (empty: none);
    a column two stages declare with two types is a one-line ``ConfigError``."""
    specs = list(specs)
    if not specs:
        return {}
    out = {}
    for table, head, fields_of in (
        (ACTOR_EVENTS, EVENTS_HEAD, payload_fields),
        (ACTOR_SNAPSHOTS, SNAPSHOTS_HEAD, state_fields),
    ):
        fields = {f.name: (f, "the table's own") for f in head}
        for where, spec in specs:
            for f in fields_of(spec):
                seen = fields.get(f.name)
                if seen is None:
                    fields[f.name] = (f, where)
                elif seen[0].type != f.type or seen[1] == "the table's own":
                    raise ConfigError(
                        f"{where}: {table} column {f.name!r} is {f.type} here and "
                        f"{seen[0].type} in {seen[1]}: one type per column"
                    )
        out[table] = pa.schema([f.with_nullable(True) if n not in head.names else f
                                for n, (f, _) in fields.items()])  # fmt: skip
    return out


def event_rows(
    spec: Spec, ids: np.ndarray, events: np.ndarray, checkpoint_id: int
) -> pa.RecordBatch:
    """Journal rows (no ``step``: routing adds it) of ``events`` (event records of
    ``spec``, in the order applied) of entities ``ids``."""
    n = len(events)
    names = pa.array(["", *spec.event_names], pa.string())
    codes = events["type"]
    columns: list[pa.Array] = [
        pa.array(np.full(n, checkpoint_id, np.int64)),
        pa.array(key_group(ids, DEFAULT_KEY_GROUPS), pa.int32()),
        pa.array(ids, pa.int32()),
        pa.array(events["seq"], pa.int64()),
        arrow_column(events["ts"], TS_NS),
        names.take(pa.array(codes.astype(np.int32))),
    ]
    fields = payload_fields(spec)
    for f in fields:
        has = np.array([f.name in p for p in spec.payload], bool)
        valid = np.r_[False, has][codes]
        columns.append(pa.array(np.ascontiguousarray(events[f.name]), mask=~valid))
    return pa.RecordBatch.from_arrays(columns, schema=_without_step(EVENTS_HEAD, fields))


def snapshot_rows(
    spec: Spec,
    ids: np.ndarray,
    seq: np.ndarray,
    status: np.ndarray,
    records: np.ndarray,
    checkpoint_id: int,
) -> pa.RecordBatch:
    """Snapshot rows (no ``step``) of entities ``ids`` with their state ``records``."""
    columns: list[pa.Array] = [
        pa.array(np.full(len(ids), checkpoint_id, np.int64)),
        pa.array(key_group(ids, DEFAULT_KEY_GROUPS), pa.int32()),
        pa.array(ids, pa.int32()),
        pa.array(seq, pa.int64()),
        pa.array(status, pa.int8()),
    ]
    fields = state_fields(spec)
    for name in spec.state_dtype.names or ():
        columns.append(pa.array(np.ascontiguousarray(records[name])))
    return pa.RecordBatch.from_arrays(columns, schema=_without_step(SNAPSHOTS_HEAD, fields))


def _without_step(head: pa.Schema, more: list[pa.Field]) -> pa.Schema:
    return pa.schema([*(f for f in head if f.name != "step"), *more])


def conform(batch: pa.RecordBatch, schema: pa.Schema, step: str) -> pa.RecordBatch:
    """``batch`` (a stage's rows) as rows of the table of ``schema``: ``step`` first,
    the columns of other stages null."""
    n = batch.num_rows
    names = batch.schema.names
    columns = []
    for f in schema:
        if f.name == "step":
            columns.append(pa.array([step] * n, pa.string()) if n else pa.array([], pa.string()))
        elif f.name in names:
            columns.append(batch.column(f.name).cast(f.type))
        else:
            columns.append(pa.nulls(n, f.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)
