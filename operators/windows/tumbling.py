"""``TumblingWindow``: keyed event-time tumbling windows with count/mean/min/max."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa

from telepipe.errors import ConfigError
from telepipe.markers import MAX_WATERMARK, State, as_watermark_ns
from telepipe.operators.runtime._key_kernels import INT64_MAX, INT64_MIN
from telepipe.operators.runtime.key_index import (
    KeyIndex,
    empty_slot_table,
    grown_state,
    rehashed,
    slot_table,
)
from telepipe.operators.runtime.readings import readings_arrays
from telepipe.operators.runtime.snapshot import as_array, as_int
from telepipe.operators.runtime.stage import StageOperator
from telepipe.operators.windows._tumbling_kernels import (
    _newest_kernel,
    _window_count_fired_kernel,
    _window_emit_kernel,
    _window_table_kernel,
    _window_update_kernel,
)
from telepipe.schema import WINDOWS, arrow_column


@dataclass(frozen=True)
class TumblingWindow(StageOperator):
    """Per-sensor event-time tumbling windows ``[k*size, (k+1)*size)`` of ``value``.

    Emits ``telepipe.schema.WINDOWS`` rows (count, mean, min, max) when the watermark
    reaches a window's end, sorted by ``(window_start, sensor_id)``. ``min``/``max``
    skip NaN (NaN only if all values are NaN, as polars); ``mean`` is IEEE (NaN
    if any value is NaN). Rows of already fired windows are late: counted in
    ``logic.late_rows`` and kept for ``logic.take_late()`` (a pipeline's
    ``late_readings`` table).
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
        return TumblingWindowLogic(self)


class TumblingWindowLogic:
    """The ``BatchLogic`` of ``TumblingWindow``.

    State: each sensor's newest window in dense arrays indexed by its ``KeyIndex``
    slot, older open windows (out-of-order rows) in a slot table keyed by (slot,
    window). A window fires from the table, after its dense entry moved there.
    """

    snapshot_version: ClassVar[int] = 1

    def __init__(self, options: TumblingWindow) -> None:
        self.options = options
        self.size_ns = size_ns = options.size_ms * 1_000_000
        self.watermark = INT64_MIN
        self.late_rows = 0
        # Windows with index < _fire_below have fired; their rows are late.
        self._fire_below = INT64_MIN // size_ns
        self._fired_below: int | None = None  # _fire_below at the last _fire
        self._keys = KeyIndex()
        self._cur = _empty_current(0)
        self._table, self._n_used = empty_slot_table(1, 3)
        self._late: list[pa.RecordBatch] = []
        self._moved = _entries(0)
        self._deferred = np.empty(0, np.int64)

    def take_late(self) -> list[pa.RecordBatch]:
        """The late rows (input schema) since the last call."""
        late, self._late = self._late, []
        return late

    def on_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        sid, ts, val = readings_arrays(batch)
        n = len(ts)
        if len(self._deferred) < n:
            # At most one of each per row. Untouched pages of np.empty are never faulted in.
            self._deferred = np.empty(n, np.int64)
            self._moved = _entries(n)
        start = n_late = n_moved = n_def = 0
        while True:
            start, late, n_moved, n_def = _window_update_kernel(
                sid, ts, val, start, self.size_ns, self._fire_below, self._keys.lookup,
                self._cur, self._moved, n_moved, self._deferred, n_def,
            )  # fmt: skip
            n_late += late
            if start >= n:
                break
            self._keys.slots(sid[start:])
            self._grow_current()
        m_pos = d_pos = 0
        while m_pos < n_moved or d_pos < n_def:
            m_pos, d_pos, self._n_used = _window_table_kernel(
                self._moved, m_pos, n_moved, (sid, ts, val), self._deferred, d_pos, n_def,
                self.size_ns, self._keys.lookup, self._table, self._n_used,
            )  # fmt: skip
            if m_pos < n_moved or d_pos < n_def:
                self._grow_table(1)
        if n_late:
            self.late_rows += n_late
            # ts < start of the first unfired window (the kernel's ``w < fire_below``).
            first_open = max(INT64_MIN, min(INT64_MAX, self._fire_below * self.size_ns))
            late_rows = ts < first_open if self._fire_below < INT64_MAX else np.ones(n, bool)
            self._late.append(batch.filter(pa.array(late_rows)))
        return []

    def _grow_current(self) -> None:
        n = self._keys.n
        win, *rest = self._cur
        self._cur = (grown_state(win, n, INT64_MIN), *(grown_state(a, n, 0) for a in rest))

    def _grow_table(self, more: int) -> None:
        """Room for ``more`` entries."""
        if (self._n_used + more) * 2 > len(self._table[0]):
            self._table, self._n_used = rehashed(self._table, self._n_used, room=more)

    def _spill(self, below: int) -> None:
        """Move the dense entries of windows ``< below`` into the table."""
        n = self._keys.n
        win, cnt = self._cur[0][:n], self._cur[1][:n]
        moving = np.flatnonzero((cnt != 0) & (win < below))
        if len(moving) == 0:
            return
        self._grow_table(len(moving))
        entries = (moving.astype(np.int32), *(column[moving] for column in self._cur))
        no_rows = (np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0, np.float64))
        _, _, self._n_used = _window_table_kernel(
            entries, 0, len(moving), no_rows, np.empty(0, np.int64), 0, 0, self.size_ns,
            self._keys.lookup, self._table, self._n_used,
        )  # fmt: skip
        cnt[moving] = 0
        win[moving] = INT64_MIN  # emptied: no row's window, so the hit test needs no count

    def on_watermark(self, watermark_ns: int) -> list[pa.RecordBatch]:
        watermark_ns = as_watermark_ns(watermark_ns)
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
        if self._fire_below == self._fired_below:
            # Every window below it fired then, and rows of such windows are late since.
            return []
        self._fired_below = self._fire_below
        self._spill(self._fire_below)
        k_slot, k_win, _, _ = self._table
        n_fire = _window_count_fired_kernel(k_slot, k_win, self._fire_below)
        if n_fire == 0:
            return []
        columns = _window_emit_kernel(
            self._table, self._keys.keys, self._fire_below, n_fire, self.size_ns
        )
        self._table, self._n_used = rehashed(
            self._table, self._n_used - n_fire, keep_from=self._fire_below
        )
        types = [field.type for field in WINDOWS]
        arrays = [arrow_column(column, type_) for column, type_ in zip(columns, types, strict=True)]
        return [pa.RecordBatch.from_arrays(arrays, schema=WINDOWS)]

    def snapshot(self) -> State:
        k_slot, k_win, ints, floats = self._table
        live = k_slot >= 0
        n = self._keys.n
        c_win, c_cnt, c_sm, c_mn, c_mx = (a[:n] for a in self._cur)
        cur = c_cnt != 0
        keys = self._keys.keys
        return {
            "watermark": self.watermark,
            "late_rows": self.late_rows,
            "sensor_id": np.concatenate([keys[k_slot[live]], keys[cur]]),
            "window": np.concatenate([k_win[live], c_win[cur]]),
            "count": np.concatenate([ints[live, 0], c_cnt[cur]]),
            "sum": np.concatenate([floats[live, 0], c_sm[cur]]),
            "min": np.concatenate([floats[live, 1], c_mn[cur]]),
            "max": np.concatenate([floats[live, 2], c_mx[cur]]),
        }

    def restore(self, snapshot: State) -> None:
        self._set_watermark(as_int(snapshot["watermark"]))
        self._fired_below = None
        self.late_rows = as_int(snapshot["late_rows"])
        entries = (
            as_array(snapshot["count"], np.int64),
            as_array(snapshot["sensor_id"], np.int32),
            as_array(snapshot["window"], np.int64),
            as_array(snapshot["sum"], np.float64),
            as_array(snapshot["min"], np.float64),
            as_array(snapshot["max"], np.float64),
        )
        cnt, sid, win = entries[:3]
        # Each sensor's newest window goes back to the dense arrays, as it was:
        # the sums then go on in the same order as without the restart. Slots in
        # order of first appearance in the snapshot; the newest by one pass over
        # them (no sort: a lexsort of (sensor, window) was 90 ms of 1M entries).
        self._keys = KeyIndex()
        self._keys.reserve(sid)  # about one entry per sensor: sized once
        all_slots = self._keys.slots(sid)
        newest = _newest_kernel(all_slots, win, self._keys.n)
        newest &= cnt != 0
        slots = all_slots[newest]
        self._cur = _empty_current(self._keys.n)
        for dst, src in zip(self._cur, (win, *entries[:1], *entries[3:]), strict=True):
            dst[slots] = src[newest]
        rest = ~newest
        self._table, self._n_used = slot_table(
            all_slots[rest],
            win[rest],
            cnt[rest].reshape(-1, 1),
            np.stack([entries[3][rest], entries[4][rest], entries[5][rest]], axis=1),
        )


def _entries(n: int) -> tuple[np.ndarray, ...]:
    """Window entries as columns: ``(slot, win, count, sum, min, max)``."""
    return (
        np.empty(n, np.int32),
        np.empty(n, np.int64),
        np.empty(n, np.int64),
        np.empty(n, np.float64),
        np.empty(n, np.float64),
        np.empty(n, np.float64),
    )


def _empty_current(n: int) -> tuple[np.ndarray, ...]:
    """Per-slot newest window: ``(win, count, sum, min, max)``."""
    return (
        np.full(n, INT64_MIN, np.int64),
        np.zeros(n, np.int64),
        np.zeros(n, np.float64),
        np.zeros(n, np.float64),
        np.zeros(n, np.float64),
    )
