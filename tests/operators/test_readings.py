"""readings_arrays / quality_array: one check and one set of views per batch, shared."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from reference import readings_batch

from telepipe.errors import SchemaError
from telepipe.operators.runtime.readings import quality_array, readings_arrays
from telepipe.schema import READINGS


def test_the_same_batch_gets_the_same_read_only_views() -> None:
    batch = readings_batch([3, 1], [20, 10], [1.5, 2.5])
    sid, ts, val = readings_arrays(batch)
    assert sid.tolist() == [3, 1] and ts.tolist() == [20, 10] and val.tolist() == [1.5, 2.5]
    assert ts.dtype == np.int64
    again = readings_arrays(batch)
    assert all(a is b for a, b in zip(again, (sid, ts, val), strict=True))
    assert not any(a.flags.writeable for a in again)
    assert quality_array(batch) is quality_array(batch)


def test_an_equal_batch_gets_its_own_arrays() -> None:
    first = readings_batch([1], [10], [1.0])
    second = readings_batch([2], [20], [2.0])
    readings_arrays(first)
    assert readings_arrays(second)[0].tolist() == [2]
    assert readings_arrays(first)[0].tolist() == [1]


def test_a_sliced_batch_reads_its_own_rows() -> None:
    batch = readings_batch([1, 2, 3, 4], [10, 20, 30, 40], [1.0, 2.0, 3.0, 4.0])
    sid, ts, val = readings_arrays(batch.slice(1, 2))
    assert sid.tolist() == [2, 3] and ts.tolist() == [20, 30] and val.tolist() == [2.0, 3.0]


def _with_column(batch: pa.RecordBatch, name: str, column: pa.Array) -> pa.RecordBatch:
    i = batch.schema.get_field_index(name)
    return batch.set_column(i, pa.field(name, column.type), column)


@pytest.mark.parametrize(
    "mend, message",
    [
        (lambda b: b.drop_columns(["value"]), "no column 'value'"),
        (lambda b: _with_column(b, "ts", pa.array([10, 20], pa.int64())), "'ts' is int64"),
        (lambda b: _with_column(b, "value", pa.array([1.0, None])), "'value' holds 1 nulls"),
        (lambda b: _with_column(b, "sensor_id", pa.array([1, 2], pa.int64())), "is int64"),
        (
            lambda b: _with_column(b, "ts", pa.array([10, 2**62], pa.timestamp("ns"))),
            r"'ts' holds 1 values outside the event-time range .* \(row 1: 4611686018427387904\)",
        ),
        (
            lambda b: _with_column(b, "ts", pa.array([-(2**63), 0], pa.timestamp("ns"))),
            "'ts' holds 1 values outside",
        ),
    ],
)
def test_a_bad_batch_is_refused_after_good_ones_of_the_same_shape(mend, message) -> None:
    good = readings_batch([1, 2], [10, 20], [1.0, 2.0])
    readings_arrays(good)
    with pytest.raises(SchemaError, match=message):
        readings_arrays(mend(good))
    assert readings_arrays(good)[0].tolist() == [1, 2]


def test_nulls_are_refused_in_a_batch_of_the_very_schema_seen() -> None:
    readings_arrays(readings_batch([1], [10], [1.0]))
    nulls = pa.RecordBatch.from_arrays(
        [
            pa.array([1, None], pa.int32()),
            pa.array([10, 20], pa.timestamp("ns")),
            pa.array([1.0, 2.0]),
            pa.array([0, 0], pa.uint8()),
        ],
        schema=READINGS.remove_metadata(),
    )
    with pytest.raises(SchemaError, match="'sensor_id' holds 1 nulls"):
        readings_arrays(nulls)


def test_bad_quality_and_not_a_batch_are_refused() -> None:
    batch = readings_batch([1], [10], [1.0])
    with pytest.raises(SchemaError, match="quality"):
        quality_array(_with_column(batch, "quality", pa.array([0], pa.int32())))
    with pytest.raises(SchemaError, match="no column 'quality'"):
        quality_array(batch.drop_columns(["quality"]))
    with pytest.raises(SchemaError, match=r"expected a pyarrow\.RecordBatch"):
        readings_arrays(pa.Table.from_batches([batch]))  # type: ignore[arg-type]
