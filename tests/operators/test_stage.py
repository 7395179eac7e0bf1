"""stage(): snapshots ride barriers under the step's name, restore checks and seeds the logic,
late rows reach the side output (a callback, or in-band ``SideOutput`` items)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import reactivex

from telepipe.errors import SnapshotError
from telepipe.markers import CheckpointBarrier, SideOutput, Watermark
from telepipe.operators.detectors.dedup import Dedup
from telepipe.operators.detectors.hysteresis_alarm import HysteresisAlarm
from telepipe.operators.detectors.threshold_alarm.alarm import ThresholdAlarm
from telepipe.operators.runtime.snapshot import Snapshot
from telepipe.operators.runtime.stage import stage
from telepipe.operators.runtime.thread_boundary import ThreadBoundary
from telepipe.operators.windows.session import SessionWindow
from telepipe.operators.windows.sliding import SlidingWindow
from telepipe.operators.windows.tumbling import TumblingWindow


def readings(ts_ms: list[int]) -> pa.RecordBatch:
    n = len(ts_ms)
    return pa.RecordBatch.from_pydict(
        {
            "sensor_id": pa.array(np.ones(n, np.int32)),
            "ts": pa.array(np.asarray(ts_ms, np.int64) * 1_000_000, pa.timestamp("ns")),
            "value": pa.array(np.arange(n, dtype=np.float64)),
            "quality": pa.array(np.zeros(n, np.uint8)),
        }
    )


def test_late_rows_go_to_the_side_output_before_what_follows() -> None:
    op = SlidingWindow(size_ms=100, slide_ms=100)
    seen: list[object] = []
    items = [readings([10, 20]), Watermark(500_000_000), readings([30]), Watermark(600_000_000)]
    reactivex.from_iterable(items).pipe(
        stage(op.build, name="w", late=lambda b: seen.append(("late", b.num_rows)))
    ).subscribe(lambda item: seen.append(type(item).__name__))
    assert ("late", 1) in seen
    assert seen.index(("late", 1)) < len(seen) - 1


def test_a_named_stage_puts_its_snapshot_on_the_barrier_and_restores_from_it() -> None:
    op = SlidingWindow(size_ms=100, slide_ms=100)
    barriers: list[CheckpointBarrier] = []
    reactivex.from_iterable([readings([10, 20, 150]), CheckpointBarrier(1, {"1:2": 64})]).pipe(
        stage(op.build, name="w")
    ).subscribe(lambda item: barriers.append(item) if isinstance(item, CheckpointBarrier) else None)
    snapshot = barriers[0].state["w"]
    out: list[pa.RecordBatch] = []
    reactivex.from_iterable([Watermark(10**9)]).pipe(stage(op.build, restore=snapshot)).subscribe(
        lambda item: out.append(item) if isinstance(item, pa.RecordBatch) else None
    )
    assert pa.Table.from_batches(out).column("count").to_pylist() == [2, 1]


@pytest.mark.parametrize(
    "op",
    [
        TumblingWindow(size_ms=100),
        ThresholdAlarm(threshold=0.5, consecutive=1),
        HysteresisAlarm(enter=0.5, exit=0.2),
        SessionWindow(gap_ms=50),
    ],
    ids=lambda op: type(op).__name__,
)
def test_every_keyed_operator_sets_its_late_rows_aside(op) -> None:
    """Rows behind the operator's watermark reach the side output whole (input schema),
    as many as ``late_rows`` counts, and take no part in the results."""
    late: list[pa.RecordBatch] = []
    out: list[pa.RecordBatch] = []
    logic_box: list[object] = []

    def build():
        logic_box.append(op.build())
        return logic_box[-1]

    items = [
        readings([10, 20, 30]),
        Watermark(250_000_000),
        readings([40, 300, 60]),  # 40 and 60 are behind 250 ms
        Watermark(10**9),
    ]
    reactivex.from_iterable(items).pipe(stage(build, late=late.append)).subscribe(
        lambda item: out.append(item) if isinstance(item, pa.RecordBatch) else None
    )
    assert logic_box[0].late_rows == 2
    (aside,) = late
    assert aside.schema == items[0].schema
    assert aside.column("ts").cast(pa.int64()).to_pylist() == [40_000_000, 60_000_000]


def run_items(flow_op, items: list[object]) -> tuple[list[object], list[Exception]]:
    seen: list[object] = []
    errors: list[Exception] = []
    reactivex.from_iterable(items).pipe(flow_op).subscribe(seen.append, errors.append)
    return seen, errors


def test_a_piped_operator_checkpoints_under_its_derived_name() -> None:
    """``.pipe(Op(...))`` from Python is a named stage: its Snapshot rides the barrier under
    the snake-case class name, and a stage restored from it goes on as the first would."""
    op = TumblingWindow(size_ms=100)
    seen, errors = run_items(op, [readings([10, 20, 150]), CheckpointBarrier(1, {"1:2": 64})])
    assert errors == []
    (barrier,) = [i for i in seen if isinstance(i, CheckpointBarrier)]
    snap = barrier.state["tumbling_window"]
    assert isinstance(snap, Snapshot)
    assert (snap.operator, snap.version, snap.options) == ("TumblingWindow", 1, {"size_ms": 100})
    assert all(isinstance(v, np.ndarray | int | float | str) for v in snap.state.values())
    out, _ = run_items(op.named("w", restore=snap), [Watermark(10**9)])
    counts = [b.column("count").to_pylist() for b in out if isinstance(b, pa.RecordBatch)]
    assert counts == [[2, 1]]


def test_an_explicit_name_and_two_stages_of_one_name() -> None:
    op = SlidingWindow(size_ms=100, slide_ms=100)
    barrier = CheckpointBarrier(1)
    seen, errors = run_items(
        lambda flow: flow.pipe(op.named("fast"), TumblingWindow(size_ms=10)), [barrier]
    )
    assert errors == [] and set(seen[0].state) == {"fast", "tumbling_window"}
    seen, errors = run_items(
        lambda flow: flow.pipe(TumblingWindow(size_ms=10), TumblingWindow(size_ms=20)), [barrier]
    )
    assert seen == []
    (error,) = errors
    assert isinstance(error, SnapshotError)
    assert str(error).startswith("two steps named 'tumbling_window' in one chain")
    assert "\n" not in str(error)


LATE_ITEMS = [
    readings([10, 20, 30]),
    Watermark(250_000_000),
    readings([40, 300, 60]),  # 40 and 60 are behind 250 ms
    Watermark(10**9),
]


def test_late_rows_are_side_outputs_in_order_when_no_callback_is_given() -> None:
    """Without ``late=``, a stage emits its late rows in-band, whole (input schema), before
    the outputs of the call that found them."""
    seen, errors = run_items(TumblingWindow(size_ms=100), LATE_ITEMS)
    assert errors == []
    kinds = [type(i).__name__ for i in seen]
    assert kinds == ["RecordBatch", "Watermark", "SideOutput", "RecordBatch", "Watermark"]
    side = seen[2]
    assert isinstance(side, SideOutput)
    assert (side.tag, side.step) == ("late", "tumbling_window")
    assert side.batch.schema == LATE_ITEMS[0].schema
    assert side.batch.column("ts").cast(pa.int64()).to_pylist() == [40_000_000, 60_000_000]


def test_side_outputs_pass_later_stages_and_thread_boundaries_in_order() -> None:
    done: list[bool] = []
    seen: list[object] = []
    reactivex.from_iterable(LATE_ITEMS).pipe(
        Dedup(), ThreadBoundary(capacity=2), TumblingWindow(size_ms=100)
    ).subscribe(seen.append, seen.append, lambda: done.append(True))
    assert done == [True]
    kinds = [type(i).__name__ for i in seen]
    assert kinds == ["RecordBatch", "Watermark", "SideOutput", "RecordBatch", "Watermark"]
    assert (seen[2].tag, seen[2].step, seen[2].batch.num_rows) == ("late", "dedup", 2)


def test_a_late_callback_takes_the_rows_instead() -> None:
    late: list[pa.RecordBatch] = []
    items = [readings([300]), Watermark(250_000_000), readings([40]), Watermark(10**9)]
    seen, _ = run_items(stage(TumblingWindow(size_ms=100).build, late=late.append), items)
    assert [b.num_rows for b in late] == [1]
    assert not any(isinstance(i, SideOutput) for i in seen)


@pytest.mark.parametrize(
    ("snap", "message"),
    [
        (
            Snapshot("TumblingWindow", 1, {"size_ms": 200}, {}),
            "step 'w': the TumblingWindow snapshot was taken with size_ms=200, "
            "the step has size_ms=100",
        ),
        (
            Snapshot("TumblingWindow", 99, {"size_ms": 100}, {}),
            "step 'w': TumblingWindow snapshot format 99, this telepipe reads format 1: "
            "start from an empty data_dir",
        ),
        (
            Snapshot("SlidingWindow", 1, {"size_ms": 100}, {}),
            "step 'w': the snapshot is a SlidingWindow's, the step is a TumblingWindow",
        ),
        (
            {"size_ns": 100_000_000, "watermark": 0},
            "step 'w': the saved state is not a telepipe Snapshot but a dict (saved by an older "
            "telepipe?): start from an empty data_dir",
        ),
    ],
    ids=["options", "version", "operator", "not a snapshot"],
)
def test_a_snapshot_of_another_kind_is_refused_in_one_line(snap, message) -> None:
    seen, errors = run_items(
        TumblingWindow(size_ms=100).named("w", restore=snap), [readings([10]), Watermark(10**9)]
    )
    assert seen == []
    (error,) = errors
    assert isinstance(error, SnapshotError)
    assert str(error) == message


def test_every_operator_logic_declares_the_stage_contract() -> None:
    """Each operator's logic has the members ``stage`` uses (mypy checks their types)."""
    import telepipe.operators as ops

    built = [
        ops.TumblingWindow(),
        ops.SlidingWindow(),
        ops.SessionWindow(),
        ops.ThresholdAlarm(threshold=1.0),
        ops.HysteresisAlarm(enter=1.0, exit=0.0),
        ops.RateOfChange(max_rate=1.0),
        ops.Flatline(),
        ops.HeartbeatTimeout(),
        ops.EwmaZScore(),
        ops.Dedup(),
        ops.Resample(),
        ops.Pattern.begin("a", "value > 1").operator(),
        ops.ActorStage(ops.Counter()),
    ]
    public = {
        t for t in map(vars(ops).get, ops.__all__)
        if isinstance(t, type) and issubclass(t, ops.StageOperator) and t is not ops.StageOperator
    }  # fmt: skip
    assert {type(op) for op in built} == public
    for op in built:
        logic = op.build()
        assert logic.options is op
        assert isinstance(type(logic).snapshot_version, int)
        assert logic.take_late() == []
        snap = Snapshot.take(logic)
        assert snap.operator == type(op).__name__
        assert all(isinstance(v, np.ndarray | int | float | str) for v in snap.state.values())
