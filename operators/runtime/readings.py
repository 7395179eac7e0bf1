"""The columns of a READINGS batch as zero-copy numpy arrays, checked once per batch.

Operators fanned out from one flow (a pipeline's outputs) all receive the same
batch object, and each used to check its schema and wrap its columns again:
~8 us a batch and operator, most of an operator's cost per batch beside its
kernel (pyarrow builds a new ``Array`` object per ``column()`` call). The arrays
of the last batch seen are kept by a weak reference and given to the next
operator that asks for the same batch; they are read-only views of the batch's
buffers, so sharing them is safe.
"""

from __future__ import annotations

import weakref

import numpy as np
import pyarrow as pa

from telepipe.errors import SchemaError
from telepipe.schema import TS_MAX, TS_MIN

_COLUMNS = (("sensor_id", pa.int32()), ("ts", pa.timestamp("ns")), ("value", pa.float64()))
_QUALITY = ("quality", pa.uint8())

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]


class _LastBatch:
    """What was computed for the last batch seen, the batch held by a weak reference.

    Entry and batch are one tuple, replaced in one assignment, so an operator on
    another thread never pairs a batch with another batch's arrays.
    """

    __slots__ = ("_entry",)

    def __init__(self) -> None:
        self._entry: tuple[weakref.ref[pa.RecordBatch], object] | None = None

    def get(self, batch: pa.RecordBatch) -> object | None:
        entry = self._entry
        return entry[1] if entry is not None and entry[0]() is batch else None

    def put(self, batch: pa.RecordBatch, value: object) -> None:
        self._entry = (weakref.ref(batch), value)


_last_readings = _LastBatch()
_last_quality = _LastBatch()
# (schema, column indexes) of the last schema checked.
_checked: tuple[pa.Schema | None, tuple[int, ...]] = (None, ())


def readings_arrays(batch: pa.RecordBatch) -> Arrays:
    """Zero-copy ``(sensor_id int32, ts int64 ns, value float64)`` of a readings batch.

    Raises ``SchemaError`` if a column is missing, mistyped or holds nulls, or a ts is
    outside ``telepipe.schema``'s event-time range.
    """
    known = _last_readings.get(batch)
    if known is not None:
        return known  # type: ignore[return-value]
    if not isinstance(batch, pa.RecordBatch):
        raise SchemaError(f"expected a pyarrow.RecordBatch of readings, got {type(batch)!r}")
    arrays = []
    for index, (name, _) in zip(_indexes(batch.schema), _COLUMNS, strict=True):
        column = batch.column(index)
        if column.null_count:
            raise SchemaError(f"readings column {name!r} holds {column.null_count} nulls")
        arrays.append(column.to_numpy(zero_copy_only=True))
    sid, ts, val = arrays
    ts = ts.view(np.int64)
    if len(ts) and (ts.min() < TS_MIN or ts.max() >= TS_MAX):
        outside = np.flatnonzero((ts < TS_MIN) | (ts >= TS_MAX))
        raise SchemaError(
            f"readings column 'ts' holds {len(outside)} values outside the event-time range "
            f"[{TS_MIN}, {TS_MAX}) ns (row {outside[0]}: {ts[outside[0]]})"
        )
    result = (sid, ts, val)
    _last_readings.put(batch, result)
    return result


def quality_array(batch: pa.RecordBatch) -> np.ndarray:
    """Zero-copy ``quality`` (uint8) of a readings batch; ``SchemaError`` as above."""
    known = _last_quality.get(batch)
    if known is not None:
        return known  # type: ignore[return-value]
    name, type_ = _QUALITY
    index = batch.schema.get_field_index(name)
    if index < 0:
        raise SchemaError(f"readings batch has no column {name!r} ({batch.schema.names})")
    column = batch.column(index)
    if column.type != type_ or column.null_count:
        raise SchemaError(f"readings column {name!r} is {column.type} with nulls or not {type_}")
    quality = column.to_numpy(zero_copy_only=True)
    _last_quality.put(batch, quality)
    return quality


def _indexes(schema: pa.Schema) -> tuple[int, ...]:
    """The indexes of ``_COLUMNS`` in ``schema``, checked (once while schemas are equal)."""
    global _checked
    checked = _checked
    if checked[0] is schema or (checked[0] is not None and checked[0].equals(schema)):
        return checked[1]
    indexes = []
    for name, type_ in _COLUMNS:
        index = schema.get_field_index(name)
        if index < 0:
            raise SchemaError(f"readings batch has no column {name!r} ({schema.names})")
        if schema.field(index).type != type_:
            raise SchemaError(
                f"readings column {name!r} is {schema.field(index).type}, expected {type_}"
            )
        indexes.append(index)
    _checked = (schema, tuple(indexes))
    return _checked[1]
