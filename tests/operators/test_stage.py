"""stage(): snapshots ride barriers, restore seeds the logic, late rows reach the side output."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import reactivex

from telepipe.markers import CheckpointBarrier, Watermark
from telepipe.operators.sliding_window import SlidingWindow
from telepipe.operators.stage import stage


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
