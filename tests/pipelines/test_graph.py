"""``connect``: the rows a step sets aside as late reach the runner named by table and step."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from omegaconf import OmegaConf
from reactivex.subject import Subject

from telepipe.markers import Item, Watermark
from telepipe.pipelines.graph import connect, outputs_from_config

SEC = 1_000_000_000
SCHEMA = pa.schema(
    [("sensor_id", pa.int32()), ("ts", pa.timestamp("ns")), ("value", pa.float64()),
     ("quality", pa.uint8())]
)  # fmt: skip


def readings(ts_s: list[int]) -> pa.RecordBatch:
    n = len(ts_s)
    return pa.RecordBatch.from_arrays(
        [pa.array(np.arange(n, dtype=np.int32)), pa.array(np.array(ts_s) * SEC, pa.timestamp("ns")),
         pa.array(np.ones(n)), pa.array(np.zeros(n, np.uint8))],
        schema=SCHEMA,
    )  # fmt: skip


def test_late_rows_go_to_the_runner_named_by_table_and_step() -> None:
    pipeline = OmegaConf.create(
        {"outputs": {"windows": {"tumble": {
            "_target_": "telepipe.operators.windows.tumbling.TumblingWindow", "size_ms": 1000}}}}
    )  # fmt: skip
    (output,) = outputs_from_config(pipeline)
    subject: Subject[Item] = Subject()
    late: list[tuple[str, pa.RecordBatch]] = []
    out: list[Item] = []
    connect(subject, output, late=lambda where, rows: late.append((where, rows))).subscribe(
        out.append
    )
    subject.on_next(readings([10, 10]))
    subject.on_next(Watermark(12 * SEC))
    subject.on_next(readings([3, 11, 12]))  # ts 3 s and 11 s are behind the watermark
    subject.on_completed()
    assert [where for where, _ in late] == ["windows.tumble"]
    ((_, rows),) = late
    assert rows.column("ts").cast(pa.int64()).to_pylist() == [3 * SEC, 11 * SEC]
