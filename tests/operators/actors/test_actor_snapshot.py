"""ActorStage snapshots: Arrow-ready keyed columns, versioned like every stage; restored state
equals live state; a snapshot cut by key groups loads into two stages whose outputs
together are the one stage's."""

from __future__ import annotations

import numpy as np
import polars as pl
import reactivex
from actor_reference import batches_of, drive, frame, random_rows

from telepipe.markers import MAX_WATERMARK, CheckpointBarrier, Watermark
from telepipe.operators import ActorStage, EquipmentStateMachine
from telepipe.operators.runtime import snapshot as snapshots
from telepipe.state.key_groups import keeps, key_group

MAPPING = {s: 100 + s % 7 for s in range(40)}
OP = ActorStage(EquipmentStateMachine(), key="equipment_id", mapping=MAPPING, max_active=3)


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert a[k].tolist() == b[k].tolist(), k
        else:
            assert a[k] == b[k], k


def test_restored_state_equals_live_state_and_goes_on_the_same() -> None:
    rows = random_rows(np.random.default_rng(5), 600, 40, alarms=True)
    first, rest = rows[:300], rows[300:]
    whole = OP.build()
    out_whole = frame(drive(whole, rows, [100, 300, 450], [True]))
    live = OP.build()
    for batch in batches_of(first):
        live.on_batch(batch)
    live.on_watermark(min(r[1] for r in rest) - 3)  # some rows stay held
    taken = snapshots.Snapshot.take(live)
    again = OP.build()
    snapshots.restore(again, taken, "machines")
    _same(again.snapshot(), live.snapshot())
    out_before = frame([*drive_rest(live, rest)])
    out_again = frame([*drive_rest(again, rest)])
    assert out_again.equals(out_before)
    _same(again.snapshot(), live.snapshot())
    assert again.snapshot()["state_changes"].sum() == whole.snapshot()["state_changes"].sum()
    assert len(out_whole) > 0


def drive_rest(logic, rest):
    for batch in batches_of(rest):
        yield from logic.on_batch(batch)
    yield from logic.on_watermark(MAX_WATERMARK)


def test_a_snapshot_cut_in_two_by_key_groups_gives_the_same_output_in_two_stages() -> None:
    rows = random_rows(np.random.default_rng(8), 800, 40, alarms=True)
    first, rest = rows[:400], rows[400:]
    one = OP.build()
    out_one = frame([*_run(one, first), *drive_rest(one, rest)])
    live = OP.build()
    head = frame(_run(live, first))
    state = live.snapshot()
    halves = [range(0, 64), range(64, 128)]
    outs = [head]
    for groups in halves:
        part = OP.build()
        part.restore(snapshots.select(state, keeps(groups)))
        mine = [
            r for r in rest
            if r[0] in MAPPING and key_group(np.array([MAPPING[r[0]]]))[0] in groups
        ]  # fmt: skip
        outs.append(frame([*drive_rest(part, mine)]))
    both = pl.concat([o for o in outs if not o.is_empty()]).sort("ts", "equipment_id", "seq")
    assert both.equals(out_one.sort("ts", "equipment_id", "seq"))


def _run(logic, rows):
    out = []
    for batch in batches_of(rows):
        out += logic.on_batch(batch)
    out += logic.on_watermark(max(r[1] for r in rows) - 2)
    return out


def test_a_barrier_carries_the_snapshot_and_a_restore_checks_it() -> None:
    rows = random_rows(np.random.default_rng(2), 100, 40, alarms=False)
    items = [*batches_of(rows), Watermark(10), CheckpointBarrier(1, {"s": 1})]
    barriers: list = []
    reactivex.from_iterable(items).pipe(OP.named("machines")).subscribe(
        lambda item: barriers.append(item) if isinstance(item, CheckpointBarrier) else None
    )
    snap = barriers[0].state["machines"]
    assert snap.operator == "ActorStage" and snap.version == 3
    assert snap.options["actor"].endswith("EquipmentStateMachine")
    snapshots.layout(snap.state, "machines")  # keyed rows, cut by key group
    other = ActorStage(EquipmentStateMachine(run_level=20.0), key="equipment_id", mapping=MAPPING)
    try:
        snapshots.restore(other.build(), snap, "machines")
    except Exception as error:
        assert "run_level" in str(error).splitlines()[0]
    else:
        raise AssertionError("a snapshot taken with other params was restored")
