"""stage(): snapshots ride barriers, restore seeds the logic, late rows reach the side output."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import reactivex

from telepipe.markers import CheckpointBarrier, Watermark
from telepipe.operators.detectors.hysteresis_alarm import HysteresisAlarm
from telepipe.operators.detectors.threshold_alarm.alarm import ThresholdAlarm
from telepipe.operators.runtime.stage import stage
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
