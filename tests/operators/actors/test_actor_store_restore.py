"""The event store is where a journaled stage's entities come back from: its checkpoints
keep only what the store does not (held rows, timers, stopped entities, counters), and
``with_store`` reads the entities back (``recover``) into the snapshot a restart
restores. Restored at any checkpoint, the stage holds exactly the live state and goes
on to exactly the uninterrupted outputs; a checkpoint without its store is refused in
one line; ``check_store`` checks the fold against entities kept in the checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import reactivex
from actor_reference import batches_of, random_rows
from test_actor_journal import MAPPING, STEP, PyCount, run_journaled

from telepipe.errors import SnapshotError
from telepipe.markers import CheckpointBarrier, Watermark
from telepipe.operators import ActorStage, Counter, EquipmentStateMachine
from telepipe.operators.actors import with_store
from telepipe.operators.runtime import snapshot as snapshots
from telepipe.operators.runtime.snapshot import Snapshot, options_json


def _items(rows: list, cuts: int) -> list:
    items: list = []
    parts = np.array_split(np.arange(len(rows)), cuts)
    for k, part in enumerate(parts, start=1):
        items += batches_of([rows[i] for i in part])
        rest = [r[1] for r in rows[part[-1] + 1 :]] if part[-1] + 1 < len(rows) else []
        items.append(Watermark(min(rest) if rest else 2**62))
        items.append(CheckpointBarrier(k, {"s": k}))
    return items


def _outputs_after(op: ActorStage, items: list, k: int, restore: object = None) -> pa.Table:
    """The stage's rows after barrier ``k`` (from ``items`` after it, restored)."""
    cut = next(i for i, it in enumerate(items) if isinstance(it, CheckpointBarrier)
               and it.checkpoint_id == k)  # fmt: skip
    rows: list[pa.RecordBatch] = []
    seen = [restore is not None]

    def take(item: object) -> None:
        if isinstance(item, CheckpointBarrier) and item.checkpoint_id == k:
            seen[0] = True
        elif isinstance(item, pa.RecordBatch) and seen[0]:
            rows.append(item)

    feed = items[cut + 1 :] if restore is not None else items
    reactivex.from_iterable(feed).pipe(op.named("machines", restore=restore)).subscribe(take)
    return pa.Table.from_batches(rows, schema=op.output_schema)


def _machines(**kw: object) -> ActorStage:
    return ActorStage(
        EquipmentStateMachine(), key="equipment_id", mapping=MAPPING, journal=True,
        snapshot_every=3, max_active=4, with_state=True, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


CASES = {
    "machines": _machines,
    "counter": lambda **kw: ActorStage(Counter(every=7), journal=True, snapshot_every=5, **kw),
    "python": lambda **kw: ActorStage(PyCount(), journal=True, snapshot_every=4, **kw),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_restore_from_the_store_equals_the_live_stage_and_goes_on_the_same(
    tmp_path: Path, case: str
) -> None:
    alarms = case == "machines"
    rows = random_rows(np.random.default_rng(21), 900, 60, alarms=alarms)
    thin, full = CASES[case](), CASES[case](check_store=True)
    states = run_journaled(thin, rows, 6, tmp_path / "thin")
    checked = run_journaled(full, rows, 6, tmp_path / "full")
    items = _items(rows, 6)
    for k in (1, 3, 5):
        state = states[k]
        assert "sensor_id" not in state and "state_seq" not in state  # entities: the store
        snap = Snapshot("ActorStage", 3, options_json(thin), state)
        with pytest.raises(SnapshotError, match="event store"):  # not read back: refused
            snapshots.restore(thin.build(), snap, "machines")
        back = with_store(tmp_path / "thin", thin, STEP, snap, checkpoint=k)
        logic = thin.build()
        snapshots.restore(logic, back, "machines")
        live = checked[k]  # the same stage's live state, entities kept in its checkpoint
        got = logic.store.snapshot()
        for column in got:
            assert np.asarray(got[column]).tolist() == np.asarray(live[column]).tolist(), column
        assert _outputs_after(thin, items, k, back).equals(_outputs_after(thin, items, k))
        # check_store: the fold is checked against the entities the checkpoint keeps
        full_snap = Snapshot("ActorStage", 3, options_json(full), live)
        assert with_store(tmp_path / "full", full, STEP, full_snap, checkpoint=k) is full_snap


def test_check_store_refuses_a_store_that_folds_to_another_state(tmp_path: Path) -> None:
    rows = random_rows(np.random.default_rng(22), 400, 20, alarms=False)
    full = ActorStage(Counter(), journal=True, snapshot_every=1000, check_store=True)
    live = run_journaled(full, rows, 3, tmp_path)[2]
    forged = dict(live)
    forged["state_count"] = np.asarray(live["state_count"]) + 1
    snap = Snapshot("ActorStage", 3, options_json(full), forged)
    with pytest.raises(SnapshotError, match=r"folds entity .*state_count"):
        with_store(tmp_path, full, STEP, snap, checkpoint=2)


def test_a_checkpoint_keeps_no_entity_rows_with_a_journal() -> None:
    rows = random_rows(np.random.default_rng(23), 2000, 500, alarms=False)
    sizes = {}
    for journal in (False, True):
        logic = ActorStage(Counter(), journal=journal).build()
        for batch in batches_of(rows):
            logic.on_batch(batch)
        logic.on_watermark(2**62 - 1)
        logic.on_barrier(1)
        state = logic.snapshot()
        sizes[journal] = sum(np.asarray(v).nbytes for v in state.values()
                             if isinstance(v, np.ndarray))  # fmt: skip
    assert sizes[True] * 20 < sizes[False]
