"""Shared machinery of the detectors: event-time buffering, keyed numba state, validation.

A detector's logic (``DetectorLogic``) holds the rows not yet below the
watermark in a ``SensorOrderBuffer`` (``Dedup``: an ``EventTimeBuffer``): a
watermark releases them in the (ts, arrival) order the per-sensor state
machines need. Rows below the watermark at
arrival are late: counted in ``late_rows`` and kept for ``take_late()``. Per-sensor state lives in a
``KeyedTable`` (numpy arrays probed by numba kernels, see ``_detector_kernels``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import pyarrow as pa

from telepipe.errors import ConfigError
from telepipe.markers import StageOptions, State, as_watermark_ns
from telepipe.operators.detectors._detector_kernels import _table_rebuild_kernel
from telepipe.operators.runtime.event_buffer import EventTimeBuffer
from telepipe.operators.runtime.readings import quality_array, readings_arrays
from telepipe.operators.runtime.sensor_order_buffer import SensorOrderBuffer
from telepipe.operators.runtime.snapshot import as_array
from telepipe.schema import arrow_column

_MIN_CAPACITY = 64
INT32_MAX = 2**31 - 1

# ------------------------------------------------------------- validation


def check_number(owner: str, name: str, value: object, *, finite: bool = True) -> float:
    """A real number (``int``/``float``, not bool, not NaN; finite unless told)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and (math.isnan(value) or (finite and math.isinf(value))):  # type: ignore[arg-type]
        ok = False
    if not ok:
        kind = "a finite number" if finite else "a number"
        raise ConfigError(f"{owner}.{name} must be {kind}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_int(owner: str, name: str, value: object, lo: int, hi: int = INT32_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{owner}.{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def check_choice(owner: str, name: str, value: object, choices: Sequence[str]) -> int:
    """The index of ``value`` in ``choices``."""
    if value not in choices:
        raise ConfigError(f"{owner}.{name} must be one of {', '.join(choices)}, got {value!r}")
    return list(choices).index(value)  # type: ignore[arg-type]


# -------------------------------------------------------------- keyed state


class KeyedTable:
    """Per-sensor state: ``used``, ``k_sid``, ``ints[cap, ni]``, ``floats[cap, nf]``."""

    def __init__(self, n_ints: int, n_floats: int) -> None:
        self.n_ints = n_ints
        self.n_floats = n_floats
        self.set_entries(
            np.empty(0, np.int32), np.empty((0, n_ints), np.int64), np.empty((0, n_floats))
        )

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.used, self.k_sid, self.ints, self.floats

    def set_entries(self, sid: np.ndarray, ints: np.ndarray, floats: np.ndarray) -> None:
        cap = _MIN_CAPACITY
        while cap < 4 * len(sid):
            cap *= 2
        ints = np.ascontiguousarray(ints, np.int64).reshape(len(sid), self.n_ints)
        floats = np.ascontiguousarray(floats, np.float64).reshape(len(sid), self.n_floats)
        used = np.ones(len(sid), np.uint8)
        self._rebuild(used, np.asarray(sid, np.int32), ints, floats, used, cap)

    def _rebuild(self, used, k_sid, ints, floats, keep, cap: int) -> None:
        (self.used, self.k_sid, self.ints, self.floats), self.n_used = _table_rebuild_kernel(
            used, k_sid, ints, floats, keep, cap
        )

    def grow(self) -> None:
        self._rebuild(*self.arrays, self.used, 2 * len(self.used))

    def keep_only(self, keep: np.ndarray) -> None:
        """Drop the slots with ``keep == 0``, shrinking the capacity to fit."""
        n = int(np.count_nonzero(self.used & keep))
        cap = _MIN_CAPACITY
        while cap < 4 * n:
            cap *= 2
        self._rebuild(*self.arrays, keep, cap)

    def entries(self) -> dict[str, np.ndarray]:
        live = self.used != 0
        return {
            "sensor_id": self.k_sid[live],
            "ints": self.ints[live],
            "floats": self.floats[live],
        }

    def restore(self, state: State) -> None:
        self.set_entries(
            as_array(state["sensor_id"], np.int32),
            as_array(state["ints"], np.int64),
            as_array(state["floats"], np.float64),
        )

    def run(self, kernel: Callable[..., tuple[int, int, int]], n: int) -> int:
        """Call ``kernel(pos, table, n_used, n_out) -> (pos, n_used, n_out)`` until all
        ``n`` rows are done, growing the table whenever it stops early. Returns ``n_out``."""
        pos = n_out = 0
        while True:
            pos, self.n_used, n_out = kernel(pos, self.arrays, self.n_used, n_out)
            if pos >= n:
                return n_out
            self.grow()


# ------------------------------------------------------------------ logic


class DetectorLogic:
    """Event-time buffer + keyed table; subclasses implement ``_advance``.

    ``options``: what the logic was built from. ``with_quality`` keeps the readings'
    ``quality`` column in the buffer (for operators that pass readings through).
    """

    snapshot_version: ClassVar[int] = 1
    # Released rows in each sensor's event order, not interleaved in global ts order
    # (SensorOrderBuffer): enough for per-sensor state machines whose outputs are
    # sorted afterwards.
    sensor_order = True

    def __init__(
        self, options: StageOptions, n_ints: int, n_floats: int, with_quality: bool = False
    ) -> None:
        self.options = options
        self.with_quality = with_quality
        self.table = KeyedTable(n_ints, n_floats)
        kind = SensorOrderBuffer if self.sensor_order else EventTimeBuffer
        self.buffer: EventTimeBuffer | SensorOrderBuffer = kind(with_quality)
        self._late: list[pa.RecordBatch] = []

    @property
    def watermark(self) -> int:
        return self.buffer.watermark

    @property
    def late_rows(self) -> int:
        return self.buffer.late_rows

    # -- the BatchLogic protocol

    def on_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        sid, ts, val = readings_arrays(batch)
        q = quality_array(batch) if self.with_quality else np.empty(0, np.uint8)
        late = self.buffer.admit(sid, ts, val, q)
        if late is not None:
            self._late.append(batch.filter(pa.array(late)))
        return []

    def take_late(self) -> list[pa.RecordBatch]:
        """The late rows (input schema) since the last call."""
        late, self._late = self._late, []
        return late

    def on_watermark(self, watermark_ns: int) -> list[pa.RecordBatch]:
        watermark_ns = as_watermark_ns(watermark_ns)
        rows = self.buffer.release(watermark_ns)
        if rows is None:
            return []
        return self._advance(*rows, watermark_ns)

    def snapshot(self) -> State:
        return {
            **self.table.entries(),
            **self.buffer.snapshot(),
            **self._extra_snapshot(),
        }

    def restore(self, snapshot: State) -> None:
        self.table.restore(snapshot)
        self.buffer.restore(snapshot)
        self._restore_extra(snapshot)

    # -- for subclasses

    def _advance(self, sid, ts, val, q, watermark: int) -> list[pa.RecordBatch]:
        """Process released rows (in (ts, arrival) order), then the new watermark."""
        raise NotImplementedError

    def _extra_snapshot(self) -> State:
        return {}

    def _restore_extra(self, snapshot: State) -> None:
        pass


def event_batch(schema: pa.Schema, columns: Sequence[np.ndarray]) -> list[pa.RecordBatch]:
    """One batch of ``schema`` from numpy columns (int64 for timestamps), or none if empty."""
    if len(columns[0]) == 0:
        return []
    arrays = [arrow_column(c, f.type) for c, f in zip(columns, schema, strict=True)]
    return [pa.RecordBatch.from_arrays(arrays, schema=schema)]


def out_buffer(n: int, dtype: type | str) -> np.ndarray:
    """An output array for ``n`` rows; untouched pages of ``np.empty`` are never faulted in."""
    return np.empty(max(n, 1), dtype)
