"""Shared machinery of the detectors: event-time buffering, keyed numba state, validation.

A detector's logic (``DetectorLogic``) holds the rows not yet below the
watermark in a ``SensorOrderBuffer`` (``Dedup``: an ``EventTimeBuffer``): a
watermark releases them in the (ts, arrival) order the per-sensor state
machines need. Rows below the watermark at arrival are late: counted in
``late_rows`` and kept for ``take_late()``. Per-sensor state lives in arrays indexed
by the sensor's ``KeyIndex`` slot (``KeyedState``, see ``_detector_kernels``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import pyarrow as pa

from telepipe.errors import ConfigError
from telepipe.markers import StageOptions, State, as_watermark_ns
from telepipe.operators.runtime.event_buffer import EventTimeBuffer
from telepipe.operators.runtime.key_index import KeyIndex, grown_state
from telepipe.operators.runtime.readings import quality_array, readings_arrays
from telepipe.operators.runtime.sensor_order_buffer import SensorOrderBuffer
from telepipe.operators.runtime.snapshot import as_array
from telepipe.schema import arrow_column

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


class KeyedState:
    """Per-sensor state by ``KeyIndex`` slot: ``present[slot]`` (the sensor has state),
    ``ints[slot, ni]`` and ``floats[slot, nf]``; what the kernels take is ``arrays``."""

    def __init__(self, n_ints: int, n_floats: int) -> None:
        self._clear(n_ints, n_floats)

    def _clear(self, n_ints: int, n_floats: int) -> None:
        self.keys = KeyIndex()
        self.present = np.zeros(0, np.uint8)
        self.ints = np.zeros((0, n_ints), np.int64)
        self.floats = np.zeros((0, n_floats), np.float64)

    @property
    def arrays(self) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray, np.ndarray]:
        return self.keys.lookup, self.present, self.ints, self.floats

    def add(self, sid: np.ndarray) -> np.ndarray:
        """Slots for the sensors of ``sid`` (their slots), with state arrays to match."""
        slots = self.keys.slots(sid)
        n = self.keys.n
        self.present = grown_state(self.present, n, 0)
        self.ints = grown_state(self.ints, n, 0)
        self.floats = grown_state(self.floats, n, 0)
        return slots

    def run(self, kernel: Callable[[int, int], tuple[int, int]], sid: np.ndarray) -> int:
        """Call ``kernel(pos, n_out) -> (pos, n_out)`` until every row of ``sid`` is done,
        adding the sensors of the rest whenever it stops early. Returns ``n_out``."""
        pos = n_out = 0
        while True:
            pos, n_out = kernel(pos, n_out)
            if pos >= len(sid):
                return n_out
            self.add(sid[pos:])

    def snapshot(self) -> State:
        n = self.keys.n
        live = self.present[:n] != 0
        return {
            "sensor_id": self.keys.keys[live],
            "ints": self.ints[:n][live],
            "floats": self.floats[:n][live],
        }

    def restore(self, state: State) -> None:
        self._clear(self.ints.shape[1], self.floats.shape[1])
        sid = as_array(state["sensor_id"], np.int32)
        self.keys.reserve(sid)  # one key per row: sized once, not grown per key
        slots = self.add(sid)
        self.present[slots] = 1
        n_ints, n_floats = self.ints.shape[1], self.floats.shape[1]
        self.ints[slots] = as_array(state["ints"], np.int64).reshape(len(slots), n_ints)
        self.floats[slots] = as_array(state["floats"], np.float64).reshape(len(slots), n_floats)


# ------------------------------------------------------------------ logic


class DetectorLogic:
    """Event-time buffer + keyed state; subclasses implement ``_advance``.

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
        self.state = KeyedState(n_ints, n_floats)
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
            **self.state.snapshot(),
            **self.buffer.snapshot(),
            **self._extra_snapshot(),
        }

    def restore(self, snapshot: State) -> None:
        self.state.restore(snapshot)
        self.buffer.restore(snapshot)
        self._restore_extra(snapshot)

    # -- for subclasses

    def _row_events(
        self,
        kernel: Callable[..., tuple[int, int]],
        readings: tuple[np.ndarray, ...],
        args: tuple[object, ...],
        dtypes: Sequence[type],
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Run a detector kernel that flags rows: ``kernel(readings, pos, args, state,
        out, n_out)`` with ``out`` = (row index, one column per ``dtypes``). Returns the
        flagged rows in (ts, sensor) order (stable: ties keep event order) and the other
        columns in that order."""
        sid, ts = readings[0], readings[1]
        n, state = len(ts), self.state
        out = tuple(out_buffer(n, d) for d in (np.int64, *dtypes))
        n_out = state.run(
            lambda pos, n_out: kernel(readings, pos, args, state.arrays, out, n_out), sid
        )
        rows = out[0][:n_out]
        by = np.lexsort((sid[rows], ts[rows]))
        return rows[by], [column[:n_out][by] for column in out[1:]]

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
