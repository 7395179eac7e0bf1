"""``TumblingWindow``: keyed event-time tumbling windows with count/mean/min/max."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from telepipe.errors import ConfigError, SchemaError
from telepipe.markers import MAX_WATERMARK
from telepipe.operators._kernels import (
    INT64_MAX,
    INT64_MIN,
    _window_count_fired_kernel,
    _window_emit_kernel,
    _window_rebuild_kernel,
    _window_update_kernel,
)
from telepipe.operators.stage import StageOperator
from telepipe.schema import WINDOWS

_MIN_CAPACITY = 64
_READING_COLUMNS = (("sensor_id", pa.int32()), ("ts", pa.timestamp("ns")), ("value", pa.float64()))


def readings_arrays(batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zero-copy ``(sensor_id int32, ts int64 ns, value float64)`` of a readings batch.

    Raises ``SchemaError`` if a column is missing, mistyped or holds nulls.
    """
    if not isinstance(batch, pa.RecordBatch):
        raise SchemaError(f"expected a pyarrow.RecordBatch of readings, got {type(batch)!r}")
    arrays = []
    for name, type_ in _READING_COLUMNS:
        index = batch.schema.get_field_index(name)
        if index < 0:
            raise SchemaError(f"readings batch has no column {name!r} ({batch.schema.names})")
        column = batch.column(index)
        if column.type != type_:
            raise SchemaError(f"readings column {name!r} is {column.type}, expected {type_}")
        if column.null_count:
            raise SchemaError(f"readings column {name!r} holds {column.null_count} nulls")
        arrays.append(column.to_numpy(zero_copy_only=True))
    sid, ts, val = arrays
    return sid, ts.view(np.int64), val


def _capacity_for(n_entries: int) -> int:
    """Smallest power of two holding ``n_entries`` at load <= 0.25."""
    cap = _MIN_CAPACITY
    while cap < 4 * n_entries:
        cap *= 2
    return cap


@dataclass(frozen=True)
class TumblingWindow(StageOperator):
    """Per-sensor event-time tumbling windows ``[k*size, (k+1)*size)`` of ``value``.

    Emits ``telepipe.schema.WINDOWS`` rows (count, mean, min, max) when the watermark
    reaches a window's end, sorted by ``(window_start, sensor_id)``. ``min``/``max``
    skip NaN (NaN only if all values are NaN, as polars); ``mean`` is IEEE (NaN
    if any value is NaN). Rows of already fired windows are late: dropped and
    counted in ``logic.late_rows``.
    """

    size_ms: int = 1000

    def __post_init__(self) -> None:
        size = self.size_ms
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ConfigError(f"TumblingWindow.size_ms must be a positive integer, got {size!r}")
        if size * 1_000_000 > INT64_MAX // 4:
            raise ConfigError(f"TumblingWindow.size_ms is too large: {size!r}")

    @property
    def output_schema(self) -> pa.Schema:
        return WINDOWS

    def build(self) -> TumblingWindowLogic:
        return TumblingWindowLogic(self.size_ms * 1_000_000)


class TumblingWindowLogic:
    """The ``BatchLogic`` of ``TumblingWindow``; state is a numba hash table of numpy arrays."""

    def __init__(self, size_ns: int) -> None:
        self.size_ns = size_ns
        self.watermark = INT64_MIN
        self.late_rows = 0
        # Windows with index < _fire_below have fired; their rows are late.
        self._fire_below = INT64_MIN // size_ns
        self._table, self._n_used = _window_rebuild_kernel(
            *_empty_entries(), INT64_MIN, _MIN_CAPACITY
        )

    def on_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        sid, ts, val = readings_arrays(batch)
        n = len(ts)
        start = 0
        while True:
            start, self._n_used, late = _window_update_kernel(
                sid, ts, val, start, self.size_ns, self._fire_below, *self._table, self._n_used
            )
            self.late_rows += late
            if start >= n:
                return []
            self._table, self._n_used = _window_rebuild_kernel(
                *self._table, INT64_MIN, 2 * len(self._table[0])
            )

    def on_watermark(self, watermark_ns: int) -> list[pa.RecordBatch]:
        if watermark_ns <= self.watermark:
            return []
        self._set_watermark(watermark_ns)
        return self._fire()

    def _set_watermark(self, watermark_ns: int) -> None:
        self.watermark = watermark_ns
        if watermark_ns >= MAX_WATERMARK:
            self._fire_below = INT64_MAX  # flush everything; every later row is late
        else:
            self._fire_below = watermark_ns // self.size_ns

    def _fire(self) -> list[pa.RecordBatch]:
        cnt, _, k_win, *_ = self._table
        n_fire = _window_count_fired_kernel(cnt, k_win, self._fire_below)
        if n_fire == 0:
            return []
        columns = _window_emit_kernel(*self._table, self._fire_below, n_fire, self.size_ns)
        remaining = self._n_used - n_fire
        cap = len(cnt)
        if remaining * 8 <= cap:
            cap = _capacity_for(remaining)
        self._table, self._n_used = _window_rebuild_kernel(*self._table, self._fire_below, cap)
        types = [field.type for field in WINDOWS]
        arrays = [
            pa.array(column, type=type_) for column, type_ in zip(columns, types, strict=True)
        ]
        return [pa.RecordBatch.from_arrays(arrays, schema=WINDOWS)]

    def snapshot(self) -> dict[str, object]:
        cnt, k_sid, k_win, sm, mn, mx = self._table
        live = cnt != 0
        return {
            "size_ns": self.size_ns,
            "watermark": self.watermark,
            "late_rows": self.late_rows,
            "sensor_id": k_sid[live],
            "window": k_win[live],
            "count": cnt[live],
            "sum": sm[live],
            "min": mn[live],
            "max": mx[live],
        }

    def restore(self, snapshot: dict[str, object]) -> None:
        if int(snapshot["size_ns"]) != self.size_ns:  # type: ignore[call-overload]
            raise ConfigError(
                f"snapshot size_ns {snapshot['size_ns']} does not match size_ns {self.size_ns}"
            )
        self._set_watermark(int(snapshot["watermark"]))  # type: ignore[call-overload]
        self.late_rows = int(snapshot["late_rows"])  # type: ignore[call-overload]
        entries = (
            np.asarray(snapshot["count"], np.int64),
            np.asarray(snapshot["sensor_id"], np.int32),
            np.asarray(snapshot["window"], np.int64),
            np.asarray(snapshot["sum"], np.float64),
            np.asarray(snapshot["min"], np.float64),
            np.asarray(snapshot["max"], np.float64),
        )
        self._table, self._n_used = _window_rebuild_kernel(
            *entries, INT64_MIN, _capacity_for(len(entries[0]))
        )


def _empty_entries() -> tuple[np.ndarray, ...]:
    return (
        np.zeros(0, np.int64),
        np.zeros(0, np.int32),
        np.zeros(0, np.int64),
        np.zeros(0, np.float64),
        np.zeros(0, np.float64),
        np.zeros(0, np.float64),
    )
