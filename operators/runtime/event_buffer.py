"""``EventTimeBuffer``: rows held until the watermark, released in (ts, arrival) order.

For operators whose output follows the global event order (``Dedup``); those
that only need each sensor's rows in event order use ``SensorOrderBuffer``.
Each batch is merged into a buffer kept sorted by (ts, arrival), so the rows a
watermark releases are a prefix, found by binary search. Live rows are
``[head:end]``; a released prefix is dropped by moving ``head``, and the buffer
is compacted only when an append needs the room.
"""

from __future__ import annotations

import numpy as np

from telepipe.markers import MAX_WATERMARK, State
from telepipe.operators.runtime._buffer_kernels import _merge_rows_kernel
from telepipe.operators.runtime._key_kernels import INT64_MIN
from telepipe.operators.runtime._sort_kernels import _stable_argsort_kernel
from telepipe.operators.runtime.snapshot import as_array, as_int

Rows = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # sensor_id, ts, value, quality


def split_late(
    watermark: int, rows: Rows, with_quality: bool
) -> tuple[np.ndarray | None, Rows | None]:
    """``(late mask or None, the rows at or above the watermark or None)``."""
    ts = rows[1]
    if watermark >= MAX_WATERMARK:
        return (np.ones(len(ts), bool) if len(ts) else None), None
    if watermark == INT64_MIN or len(ts) == 0 or int(ts.min()) >= watermark:
        return None, rows
    on_time = ts >= watermark
    sid, ts, val, q = rows
    q = q[on_time] if with_quality else q
    return ~on_time, (sid[on_time], ts[on_time], val[on_time], q)


class LateSplit:
    """``admit``: the rows at or above the watermark to ``_hold``, the others counted late."""

    watermark: int
    late_rows: int
    with_quality: bool

    def admit(
        self, sid: np.ndarray, ts: np.ndarray, val: np.ndarray, q: np.ndarray
    ) -> np.ndarray | None:
        """Buffer the rows at or above the watermark; count the others as late.

        Returns the late rows' mask, or None when none is late.
        """
        late, rows = split_late(self.watermark, (sid, ts, val, q), self.with_quality)
        if late is not None:
            self.late_rows += int(np.count_nonzero(late))
        if rows is not None:
            self._hold(*rows)
        return late

    def _hold(self, sid: np.ndarray, ts: np.ndarray, val: np.ndarray, q: np.ndarray) -> None:
        raise NotImplementedError


class EventTimeBuffer(LateSplit):
    """``quality`` is kept only when ``with_quality`` (operators passing readings on)."""

    def __init__(self, with_quality: bool = False) -> None:
        self.with_quality = with_quality
        self.watermark = INT64_MIN
        self.late_rows = 0
        self._buf: list[np.ndarray] = [
            np.empty(0, np.int32),
            np.empty(0, np.int64),
            np.empty(0, np.float64),
            np.empty(0, np.uint8),
        ]
        self._head = 0
        self._end = 0

    @property
    def live_rows(self) -> int:
        return self._end - self._head

    @property
    def capacity(self) -> int:
        return len(self._buf[1])

    def release(self, watermark_ns: int) -> Rows | None:
        """Advance the watermark; the rows below it as views (None if it did not advance).

        The views stay valid until the next ``append``.
        """
        if watermark_ns <= self.watermark:
            return None
        self.watermark = watermark_ns
        head, end = self._head, self._end
        if watermark_ns >= MAX_WATERMARK:
            cut = end
        else:
            cut = head + int(np.searchsorted(self._buf[1][head:end], watermark_ns, "left"))
        rows = tuple(b[head:cut] for b in self._buf)
        if cut == end:
            self._head = self._end = 0
        else:
            self._head = cut
        return rows  # type: ignore[return-value]

    def _hold(self, sid: np.ndarray, ts: np.ndarray, val: np.ndarray, q: np.ndarray) -> None:
        self.append(sid, ts, val, q)

    def append(self, sid: np.ndarray, ts: np.ndarray, val: np.ndarray, q: np.ndarray) -> None:
        add = len(ts)
        if add == 0:
            return
        head, end = self._head, self._end
        live = end - head
        if end + add > len(self._buf[1]):
            # Compact in place while that leaves half the buffer free, else grow.
            cap = len(self._buf[1])
            new_cap = cap if live + add <= cap // 2 else max(1024, 2 * (live + add))
            for i, old in enumerate(self._buf):
                if i == 3 and not self.with_quality:
                    continue
                new = old if new_cap == len(old) else np.empty(new_cap, old.dtype)
                new[:live] = old[head:end]  # memmove when in place
                self._buf[i] = new
            head, end = 0, live
        order = _stable_argsort_kernel(ts)
        self._end = _merge_rows_kernel(*self._buf, head, end, sid, ts, val, q, order)
        self._head = head

    def snapshot(self) -> State:
        sid, ts, val, q = (b[self._head : self._end].copy() for b in self._buf)
        return {
            "watermark": self.watermark,
            "late_rows": self.late_rows,
            "buffer_sensor_id": sid,
            "buffer_ts": ts,
            "buffer_value": val,
            "buffer_quality": q,
        }

    def restore(self, snapshot: State) -> None:
        self.watermark = as_int(snapshot["watermark"])
        self.late_rows = as_int(snapshot["late_rows"])
        self._head = self._end = 0
        self.append(
            as_array(snapshot["buffer_sensor_id"], np.int32),
            as_array(snapshot["buffer_ts"], np.int64),
            as_array(snapshot["buffer_value"], np.float64),
            as_array(snapshot.get("buffer_quality", np.empty(0)), np.uint8),
        )
