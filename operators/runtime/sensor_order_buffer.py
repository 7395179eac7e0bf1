"""``SensorOrderBuffer``: rows held until the watermark, released in each sensor's order.

For per-sensor state machines (detectors, the buffered alarm): they need each
sensor's rows in event-time order (ts, then arrival), not the sensors' rows
interleaved in global ts order. Rows stay in arrival order, one segment per
admitted batch; a watermark releases the rows below it in arrival order, which
is each sensor's event order when its rows arrive in ts order (checked per row
against the sensor's last released ts, ``_buffer_kernels``). When some sensor's
do not, each sensor's released rows are put in (ts, arrival) order where they
are (``sorted_releases`` counts those releases). Only segments holding a row
below the watermark are touched, so a release costs about the rows it
releases, however deep the buffer.
"""

from __future__ import annotations

import numpy as np

from telepipe.markers import MAX_WATERMARK, State
from telepipe.operators.runtime._buffer_kernels import (
    NEED_KEY,
    OUT_OF_ORDER,
    _release_segment_kernel,
    _sensor_order_kernel,
)
from telepipe.operators.runtime._key_kernels import INT64_MIN
from telepipe.operators.runtime._sort_kernels import _stable_argsort_kernel
from telepipe.operators.runtime.event_buffer import LateSplit
from telepipe.operators.runtime.key_index import KeyIndex, grown_state
from telepipe.operators.runtime.snapshot import as_array, as_int

_RECHECK = 16
Rows = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # sensor_id, ts, value, quality


class _Segment:
    """One admitted batch's rows still held: ``[:n]`` of its arrays; ``low`` their min ts."""

    __slots__ = ("columns", "low", "n")

    def __init__(self, columns: list[np.ndarray], low: int) -> None:
        self.columns = columns
        self.n = len(columns[1])
        self.low = low


class SensorOrderBuffer(LateSplit):
    """``quality`` is kept only when ``with_quality`` (operators passing readings on)."""

    # Moves a row (on average) before a disordered release is sorted instead.
    moves_per_row = 8

    def __init__(self, with_quality: bool = False) -> None:
        self.with_quality = with_quality
        self.watermark = INT64_MIN
        self.late_rows = 0
        self.sorted_releases = 0
        # After a release that needed the sort, the next ones sort without
        # checking first (a jittering publisher keeps jittering), trying the
        # check again every _RECHECK releases.
        self._unchecked = 0
        self._segments: list[_Segment] = []
        self._keys = KeyIndex()
        self._last_ts = np.empty(0, np.int64)
        self._out = _columns(0, with_quality)
        # Released rows' slots, and scratch of _in_sensor_order: a row's previous row
        # of its sensor, each slot's last row (-1 between calls).
        self._prev = np.empty(0, np.int64)
        self._slots = np.empty(0, np.int32)
        self._last_pos = np.empty(0, np.int64)

    @property
    def live_rows(self) -> int:
        return sum(s.n for s in self._segments)

    @property
    def capacity(self) -> int:
        return sum(len(s.columns[1]) for s in self._segments)

    def _hold(self, sid: np.ndarray, ts: np.ndarray, val: np.ndarray, q: np.ndarray) -> None:
        if len(ts) == 0:
            return
        columns: list[np.ndarray] = [
            np.array(sid, np.int32),
            np.array(ts, np.int64),
            np.array(val, np.float64),
            np.array(q, np.uint8) if self.with_quality else np.empty(0, np.uint8),
        ]
        self._segments.append(_Segment(columns, int(columns[1].min())))

    def release(self, watermark_ns: int) -> Rows | None:
        """Advance the watermark; the rows below it (None if it did not advance), in
        each sensor's event order. The arrays stay valid until the next release."""
        if watermark_ns <= self.watermark:
            return None
        self.watermark = watermark_ns
        release_all = watermark_ns >= MAX_WATERMARK
        due = [s for s in self._segments if release_all or s.low < watermark_ns]
        total = sum(s.n for s in due)
        if len(self._out[1]) < total:
            self._out = _columns(max(total, 2 * len(self._out[1])), self.with_quality)
            self._slots = np.empty(len(self._out[1]), np.int32)
            self._prev = np.empty(len(self._out[1]), np.int64)
        out = tuple(self._out)
        n_out = 0
        check = self._unchecked == 0
        self._unchecked = max(0, self._unchecked - 1)
        found_disorder = False
        for seg in due:
            pos = kept = 0
            while True:
                pos, n_out, kept, status = _release_segment_kernel(
                    tuple(seg.columns), pos, seg.n, kept, watermark_ns, release_all,
                    self._keys.lookup, self._last_ts, out, self._slots, n_out, check,
                )  # fmt: skip
                if status == NEED_KEY:
                    self._keys.slots(seg.columns[0][pos : seg.n])
                    self._last_ts = grown_state(self._last_ts, self._keys.n, INT64_MIN)
                elif status == OUT_OF_ORDER:
                    check, found_disorder = False, True  # the rest as they come, sort
                else:
                    break
            seg.n = kept
            if kept:
                seg.low = int(seg.columns[1][:kept].min())
        self._segments = [s for s in self._segments if s.n]
        rows = tuple(c[:n_out] if len(c) else c for c in self._out)
        if found_disorder:
            self._unchecked = _RECHECK
        if not check:
            self.sorted_releases += 1
            rows = self._in_sensor_order(rows, self._slots[:n_out])  # type: ignore[arg-type]
        return rows  # type: ignore[return-value]

    def _in_sensor_order(self, rows: Rows, slots: np.ndarray) -> Rows:
        """``rows`` (arrival order) in each sensor's (ts, arrival) order: each row moved
        back past its sensor's later rows (in place), or, if that takes more than a few
        moves a row (a sensor far out of order), a stable sort of them all by ts."""
        n = len(rows[1])
        self._last_pos = grown_state(self._last_pos, self._keys.n, -1)
        moves = self.moves_per_row * n + 64
        if _sensor_order_kernel(slots, rows, n, self._prev, self._last_pos, moves):
            return rows
        order = _stable_argsort_kernel(rows[1])
        return tuple(c[order] if len(c) else c for c in rows)  # type: ignore[return-value]

    def snapshot(self) -> State:
        def column(i: int, dtype: type) -> np.ndarray:
            parts = [s.columns[i][: s.n] for s in self._segments if len(s.columns[i])]
            return np.concatenate(parts) if parts else np.empty(0, dtype)

        return {
            "watermark": self.watermark,
            "late_rows": self.late_rows,
            "buffer_sensor_id": column(0, np.int32),
            "buffer_ts": column(1, np.int64),
            "buffer_value": column(2, np.float64),
            "buffer_quality": column(3, np.uint8),
        }

    def restore(self, snapshot: State) -> None:
        self.watermark = as_int(snapshot["watermark"])
        self.late_rows = as_int(snapshot["late_rows"])
        self._segments = []
        self._hold(
            as_array(snapshot["buffer_sensor_id"], np.int32),
            as_array(snapshot["buffer_ts"], np.int64),
            as_array(snapshot["buffer_value"], np.float64),
            as_array(snapshot.get("buffer_quality", np.empty(0)), np.uint8),
        )


def _columns(n: int, with_quality: bool) -> list[np.ndarray]:
    """Row columns ``(sid, ts, value, quality)``; quality only when kept."""
    return [
        np.empty(n, np.int32),
        np.empty(n, np.int64),
        np.empty(n, np.float64),
        np.empty(n if with_quality else 0, np.uint8),
    ]
