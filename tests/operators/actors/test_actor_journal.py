"""The event store: a journaled stage's ``actor_events`` / ``actor_snapshots`` rows at each
barrier (in-band side outputs, before the barrier), written as the Delta sink writes
them; ``recover`` folds snapshot rows plus later events back into exactly the state
the stage held at each checkpoint, for all key groups or some, whatever order the
files come back in; a gap in the journal is refused."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import reactivex
from actor_reference import batches_of, random_rows
from deltalake import write_deltalake

from telepipe.errors import ConfigError, SnapshotError
from telepipe.markers import CheckpointBarrier, SideOutput, Watermark
from telepipe.operators import ActorStage, Counter, EquipmentStateMachine
from telepipe.operators.actors import Event, PythonActor
from telepipe.operators.actors.journal import ACTOR_EVENTS, ACTOR_SNAPSHOTS, conform, store_schemas
from telepipe.operators.actors.recovery import recover
from telepipe.sinks.delta_types import to_delta_table
from telepipe.state.key_groups import key_group

MAPPING = {s: 100 + s % 13 for s in range(60)}
STEP = "machine_states.machines"


@dataclass(frozen=True)
class PyCount(PythonActor):
    state = {"count": np.int64, "total": np.float64}
    events = {"seen": {"count": np.int64, "total": np.float64}}

    def handle(self, entity, rows, ctx):
        s = ctx.state
        total = s["total"] + float(rows["value"].sum())
        return [
            Event("seen", int(rows["ts"][-1]), {"count": s["count"] + len(rows), "total": total})
        ]

    def apply(self, state, event):
        return {"count": event.data["count"], "total": event.data["total"]}


def run_journaled(op: ActorStage, rows: list, cuts: int, base: Path, shuffle: bool = False) -> dict:
    """Rows through the stage with a watermark and a barrier after each of ``cuts``
    parts; the store's rows to Delta as the sink writes them (one commit per table per
    barrier). Returns checkpoint id -> the stage's state at that barrier (with
    ``check_store``, the entities' state too)."""
    schemas = store_schemas([(STEP, op.__dict__["_spec"])])
    items: list = []
    parts = np.array_split(np.arange(len(rows)), cuts)
    for k, part in enumerate(parts, start=1):
        chunk = [rows[i] for i in part]
        items += batches_of(chunk)
        rest = [r[1] for r in rows[part[-1] + 1 :]] if part[-1] + 1 < len(rows) else []
        items.append(Watermark(min(rest) if rest else 2**62))
        items.append(CheckpointBarrier(k, {"s": k}))
    pending: dict[str, list[pa.RecordBatch]] = {ACTOR_EVENTS: [], ACTOR_SNAPSHOTS: []}
    states: dict[int, dict] = {}
    commits: dict[str, list[pa.Table]] = {ACTOR_EVENTS: [], ACTOR_SNAPSHOTS: []}

    def seen(item: object) -> None:
        if isinstance(item, SideOutput) and item.tag in pending:
            pending[item.tag].append(conform(item.batch, schemas[item.tag], STEP))
        elif isinstance(item, CheckpointBarrier):
            states[item.checkpoint_id] = item.state["machines"].state  # type: ignore[attr-defined]
            for table, batches in pending.items():
                assert batches, f"no {table} rows before barrier {item.checkpoint_id}"
                commits[table].append(to_delta_table(pa.Table.from_batches(batches)))
                batches.clear()

    reactivex.from_iterable(items).pipe(op.named("machines")).subscribe(seen)
    order = np.random.default_rng(3).permutation if shuffle else (lambda n: np.arange(n))
    for table, tables in commits.items():
        for i in order(len(tables)):
            write_deltalake(str(base / table), tables[i], mode="append")
    return states


def _held(live: dict, groups: list[int] | None = None) -> dict:
    ids = np.asarray(live["sensor_id"])
    keep = np.asarray(live["seq"]) > 0
    if groups is not None:
        keep &= np.isin(key_group(ids), groups)
    return {k: np.asarray(v)[keep] for k, v in live.items() if k in ("sensor_id", "seq")
            or k.startswith("state_")}  # fmt: skip


def _same(got: dict, live: dict) -> None:
    assert got["sensor_id"].tolist() == live["sensor_id"].tolist()
    for column, values in live.items():
        assert got[column].tolist() == values.tolist(), column


@pytest.mark.parametrize("snapshot_every", [1, 3, 1000])
def test_the_store_folds_back_to_the_live_state_at_every_checkpoint(
    tmp_path: Path, snapshot_every: int
) -> None:
    rows = random_rows(np.random.default_rng(11), 900, 60, alarms=True)
    op = ActorStage(
        EquipmentStateMachine(), key="equipment_id", mapping=MAPPING, journal=True,
        snapshot_every=snapshot_every, max_active=4, check_store=True,
    )  # fmt: skip
    states = run_journaled(op, rows, 6, tmp_path)
    for k, live in states.items():
        _same(recover(tmp_path, op, STEP, checkpoint=k), _held(live))
    for threads in (1, 3):
        got = recover(tmp_path, op, STEP, checkpoint=6, threads=threads)
        _same(got, _held(states[6]))


def test_some_key_groups_and_files_in_another_order(tmp_path: Path) -> None:
    rows = random_rows(np.random.default_rng(12), 900, 60, alarms=True)
    op = ActorStage(
        EquipmentStateMachine(), key="equipment_id", mapping=MAPPING, journal=True,
        snapshot_every=4, check_store=True,
    )  # fmt: skip
    states = run_journaled(op, rows, 5, tmp_path, shuffle=True)
    groups = sorted(set(key_group(np.array(list(MAPPING.values()), np.int32)).tolist()))[::2]
    got = recover(tmp_path, op, STEP, checkpoint=5, key_groups=groups)
    _same(got, _held(states[5], groups))
    _same(recover(tmp_path, op, STEP, checkpoint=4), _held(states[4]))


def test_the_counter_and_the_python_path_fold_back_too(tmp_path: Path) -> None:
    rows = random_rows(np.random.default_rng(13), 700, 30, alarms=False)
    for i, actor in enumerate([Counter(every=7), PyCount()]):
        op = ActorStage(actor, journal=True, snapshot_every=5, check_store=True)
        base = tmp_path / str(i)
        states = run_journaled(op, rows, 4, base)
        for k, live in states.items():
            _same(recover(base, op, STEP, checkpoint=k), _held(live))


def test_a_gap_in_the_journal_is_refused_in_one_line(tmp_path: Path) -> None:
    rows = random_rows(np.random.default_rng(14), 300, 10, alarms=False)
    op = ActorStage(Counter(), journal=True, snapshot_every=10_000)
    run_journaled(op, rows, 2, tmp_path)
    import polars as pl

    events = pl.read_delta(str(tmp_path / ACTOR_EVENTS))
    cut = events.filter(~((pl.col("entity") == events["entity"][0]) & (pl.col("seq") == 2)))
    cut.write_delta(str(tmp_path / "cut" / ACTOR_EVENTS))
    pl.read_delta(str(tmp_path / ACTOR_SNAPSHOTS)).write_delta(
        str(tmp_path / "cut" / ACTOR_SNAPSHOTS)
    )
    with pytest.raises(SnapshotError, match="has event 3 where 2 was due"):
        recover(tmp_path / "cut", op, STEP, checkpoint=2)


def test_two_stages_share_the_tables_and_a_column_of_two_types_is_refused() -> None:
    machine = ActorStage(EquipmentStateMachine(), journal=True).__dict__["_spec"]
    counter = ActorStage(Counter(), journal=True).__dict__["_spec"]
    schemas = store_schemas([("t.a", machine), ("t.b", counter)])
    assert {"duration_ns", "count"} <= set(schemas[ACTOR_EVENTS].names)
    assert {"state_state", "state_count"} <= set(schemas[ACTOR_SNAPSHOTS].names)

    @dataclass(frozen=True)
    class Odd(PythonActor):
        state = {"count": np.float64}
        events = {"x": {"count": np.float64}}

    odd = ActorStage(Odd(), journal=True).__dict__["_spec"]
    with pytest.raises(ConfigError, match=r"column 'count' is double here and int64 in t\.b"):
        store_schemas([("t.b", counter), ("t.c", odd)])
