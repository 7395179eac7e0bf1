"""``SlidingWindow``: keyed event-time sliding (hopping) windows with chosen aggregates."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa

from telepipe.errors import ConfigError
from telepipe.markers import MAX_WATERMARK, State, as_watermark_ns
from telepipe.operators.runtime._key_kernels import INT64_MAX, INT64_MIN
from telepipe.operators.runtime.key_index import (
    KeyIndex,
    capacity_for,
    empty_slot_table,
    grown_state,
    rehashed,
    slot_table,
)
from telepipe.operators.runtime.readings import readings_arrays
from telepipe.operators.runtime.snapshot import as_array, as_int
from telepipe.operators.runtime.stage import StageOperator
from telepipe.operators.windows._accumulators import (
    I_CNT,
    I_DIRTY,
    I_FIRED,
    N_A,
    N_I,
    _sketch_rebuild_kernel,
)
from telepipe.operators.windows._sliding_kernels import (
    NEED_KEY,
    STAGE_CODES,
    STAGE_SLOTS,
    _sketch_stage_kernel,
    _sliding_due_panes_kernel,
    _sliding_fold_due_kernel,
    _sliding_update_kernel,
    _stage_flush_kernel,
)
from telepipe.operators.windows.options import (
    DEFAULT_AGGREGATES,
    aggregates_tuple,
    dead_end,
    emit_batch,
    positive_ms,
    sketch_state,
    sketch_two,
    wants_quantiles,
    windows_schema,
)

_MAX_WINDOWS_PER_ROW = 1000
_MS = 1_000_000


@dataclass(frozen=True)
class SlidingWindow(StageOperator):
    """Per-sensor windows ``[k*slide, k*slide + size)`` of ``value`` on event time.

    A row belongs to every window holding its ts (``size/slide`` of them when slide
    divides size; none when it falls in a gap of a hopping window with
    ``slide > size``). A window fires when the watermark reaches its end and is
    kept ``allowed_lateness_ms`` longer: rows arriving meanwhile update it and it
    is emitted again at the next watermark with ``revision`` 1, 2, ... (the column
    exists only when ``allowed_lateness_ms > 0``). Rows whose windows are all gone
    are late: counted in ``logic.late_rows`` and kept for ``logic.take_late()``.
    Output rows are sorted by (window_start, sensor_id) within each firing.
    """

    size_ms: int = 10_000
    slide_ms: int = 1000
    aggregates: tuple[str, ...] = DEFAULT_AGGREGATES
    allowed_lateness_ms: int = 0

    def __post_init__(self) -> None:
        size = positive_ms("SlidingWindow", "size_ms", self.size_ms)
        slide = positive_ms("SlidingWindow", "slide_ms", self.slide_ms)
        if -(-size // slide) > _MAX_WINDOWS_PER_ROW:
            raise ConfigError(
                f"SlidingWindow.slide_ms: size_ms/slide_ms is {size / slide:g}, "
                f"at most {_MAX_WINDOWS_PER_ROW} windows per row"
            )
        object.__setattr__(self, "aggregates", aggregates_tuple("SlidingWindow", self.aggregates))
        positive_ms("SlidingWindow", "allowed_lateness_ms", self.allowed_lateness_ms, zero_ok=True)

    @property
    def output_schema(self) -> pa.Schema:
        return windows_schema(self.aggregates, self.allowed_lateness_ms > 0)

    def build(self) -> SlidingWindowLogic:
        return SlidingWindowLogic(self)


class SlidingWindowLogic:
    """The ``BatchLogic`` of ``SlidingWindow``: per-sensor pane accumulators (see
    ``_sliding_kernels``) folded into a slot table of window accumulators keyed by
    (sensor slot, window index), plus a DDSketch table when quantiles are asked."""

    snapshot_version: ClassVar[int] = 1

    def __init__(self, options: SlidingWindow) -> None:
        self.options = options
        self.size_ns = options.size_ms * _MS
        self.slide_ns = options.slide_ms * _MS
        self.lateness_ns = options.allowed_lateness_ms * _MS
        # Every window is a whole number of panes of this width.
        self.pane_ns = math.gcd(self.size_ns, self.slide_ns)
        self._shape = (self.pane_ns, self.size_ns, self.slide_ns)
        # Window k is made of panes k*r .. k*r + p - 1: (r, p), for the sketches.
        self._panes_per = (self.slide_ns // self.pane_ns, self.size_ns // self.pane_ns)
        self._keys = KeyIndex()
        self._panes = _empty_panes()
        self.schema = options.output_schema
        self.watermark = INT64_MIN
        self.late_rows = 0
        self._seq = 0  # rows seen: the arrival number of the next row
        self._late: list[pa.RecordBatch] = []
        self._quantiles = wants_quantiles(options.aggregates)
        self._full = bool({"std", "first", "last"} & set(options.aggregates))
        self._purge_below = INT64_MIN  # windows below are gone
        self._table, self._n_used = empty_slot_table(N_I, N_A)
        self._sketch, self._n_sketch = empty_slot_table(1, 0)
        # Each sensor's staged pane sketch, by slot (``_sketch_stage_kernel``).
        self._stage = _empty_stage(0)

    def take_late(self) -> list[pa.RecordBatch]:
        """The late rows (input schema) since the last call."""
        late, self._late = self._late, []
        return late

    def on_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        sid, ts, val = readings_arrays(batch)
        n = len(ts)
        late = np.zeros(n, np.uint8)
        # The pane each row went to (none: lo > hi): its sketch's key.
        k_lo = np.zeros(n if self._quantiles else 0, np.int64)
        k_hi = np.full(n if self._quantiles else 0, -1, np.int64)
        out, flags = (late, k_lo, k_hi), (self._full, self._quantiles)
        pos = n_late = 0
        per_row = -(-self.size_ns // self.slide_ns)  # most windows a row is in
        while True:
            pos, self._n_used, got, need = _sliding_update_kernel(
                (sid, ts, val), self._seq, pos, self._shape, self._purge_below, out, flags,
                self._keys.lookup, self._panes, self._table, self._n_used,
            )  # fmt: skip
            n_late += got
            if pos >= n:
                break
            if need == NEED_KEY:
                self._keys.slots(sid[pos:])
                self._grow_panes()
            else:
                self._table, self._n_used = rehashed(self._table, self._n_used, room=per_row)
        if self._quantiles:
            self._add_to_sketches(sid, val, k_lo, k_hi)
        self._seq += n
        if n_late:
            self.late_rows += n_late
            self._late.append(batch.filter(pa.array(late.view(np.bool_))))
        return []

    def _add_to_sketches(self, sid, val, k_lo, k_hi) -> None:
        """The batch's rows into their panes' sketches, through each sensor's staged pane
        (``_sketch_stage_kernel``); ``_flush_stage`` moves them to the table."""
        n_stage = min(self._keys.n, STAGE_SLOTS)  # (doubling from 64 stops at STAGE_SLOTS)
        key, base, counts = self._stage
        self._stage = (
            grown_state(key, n_stage, INT64_MIN),
            grown_state(base, n_stage, 0),
            grown_state(counts, n_stage, 0),
        )
        pos = 0
        while True:
            pos, self._n_sketch = _sketch_stage_kernel(
                sid, val, k_lo, k_hi, pos, self._keys.lookup, self._stage, self._sketch,
                self._n_sketch,
            )  # fmt: skip
            if pos >= len(val):
                break
            self._grow_sketch()

    def _flush_stage(self, below: int = INT64_MAX) -> None:
        """The staged panes ``< below`` into the sketch table (before it is read)."""
        pos = 0
        while True:
            pos, self._n_sketch = _stage_flush_kernel(
                pos, self._stage, self._sketch, self._n_sketch, below
            )
            if pos >= len(self._stage[0]):
                break
            self._grow_sketch()

    def _grow_sketch(self) -> None:
        self._sketch, self._n_sketch = rehashed(self._sketch, self._n_sketch, room=STAGE_CODES + 1)

    def _grow_panes(self) -> None:
        n = self._keys.n
        c_pane, pia, pfa = self._panes
        self._panes = (
            grown_state(c_pane, n, INT64_MIN),
            grown_state(pia, n, 0),
            grown_state(pfa, n, 0),
        )

    def on_watermark(self, watermark_ns: int) -> list[pa.RecordBatch]:
        watermark_ns = as_watermark_ns(watermark_ns)
        if watermark_ns <= self.watermark:
            return []
        self._fold_due_panes(_fire_to(watermark_ns, self.size_ns, self.slide_ns))
        self._set_watermark(watermark_ns)
        out = self._fire()
        self._purge()
        return out

    def _fold_due_panes(self, fire_to: int) -> None:
        """Fold the panes of windows that fire (or were fired and get updated) now."""
        if fire_to < INT64_MIN:
            return
        n = self._keys.n
        c_pane, pia, _ = self._panes
        due = _sliding_due_panes_kernel(c_pane, pia, n, self._shape, self._purge_below, fire_to)
        if not due:
            return
        per_pane = -(-self.size_ns // self.slide_ns)
        if (self._n_used + due * per_pane) * 2 > len(self._table[0]):
            self._table, self._n_used = rehashed(self._table, self._n_used, room=due * per_pane)
        self._n_used = _sliding_fold_due_kernel(
            n, self._shape, self._purge_below, fire_to, self._panes, self._table, self._n_used
        )

    def _set_watermark(self, watermark_ns: int) -> None:
        self.watermark = watermark_ns
        # Window k is gone once k*slide + size <= watermark - lateness.
        dead = dead_end(watermark_ns, self.lateness_ns)
        if dead >= INT64_MAX:
            self._purge_below = INT64_MAX
        else:
            self._purge_below = (dead - self.size_ns) // self.slide_ns + 1

    def _fire(self) -> list[pa.RecordBatch]:
        fire_to = _fire_to(self.watermark, self.size_ns, self.slide_ns)
        if fire_to < INT64_MIN:
            return []
        k_slot, k_win, ia, fa = self._table
        fire = (k_slot >= 0) & (k_win <= fire_to)
        fire &= (ia[:, I_FIRED] == 0) | (ia[:, I_DIRTY] != 0)
        slots = np.flatnonzero(fire)
        if len(slots) == 0:
            return []
        start = k_win * self.slide_ns  # by slot (k*slide <= ts: no overflow)
        # The window holding ts near 2**63 cannot state its end: clamp it.
        end = np.where(start > INT64_MAX - self.size_ns, INT64_MAX, start + self.size_ns)
        sketch = None
        if self._quantiles:
            r, p = self._panes_per  # window k holds panes k*r .. k*r + p - 1
            self._flush_stage(INT64_MAX if fire_to > (INT64_MAX - p) // r else fire_to * r + p)
            sketch = self._sketch
        batch, slots = emit_batch(
            self.schema, self.options.aggregates, slots, self._keys.keys[k_slot[slots]], k_win,
            ia, fa, start, end, sketch, k_slot, self._panes_per,
        )  # fmt: skip
        ia[slots, I_FIRED] += 1
        ia[slots, I_DIRTY] = 0
        return [batch]

    def _purge(self) -> None:
        below = self._purge_below
        if below == INT64_MIN:
            return
        k_slot, k_win = self._table[0], self._table[1]
        live = int(np.count_nonzero(k_win[k_slot >= 0] >= below))
        if live < self._n_used:
            self._table, self._n_used = rehashed(self._table, live, keep_from=below)
            if self._quantiles:  # sketches of panes only gone windows held go with them
                first_live = self._first_live_pane(below)
                self._flush_stage(first_live)
                cap = len(self._sketch[0])
                if self._n_sketch * 8 <= cap:
                    cap = capacity_for(self._n_sketch)
                self._sketch, self._n_sketch = _sketch_rebuild_kernel(
                    self._sketch, first_live, *_no_remap(), cap
                )

    def _first_live_pane(self, below: int) -> int:
        """The first pane a window ``>= below`` holds (its sketch must stay)."""
        r = self._panes_per[0]
        if below > INT64_MAX // r:
            return INT64_MAX
        return INT64_MIN if below < INT64_MIN // r else below * r

    def snapshot(self) -> State:
        self._flush_stage()
        keys = self._keys.keys
        k_slot, k_win, ia, fa = self._table
        live = k_slot >= 0
        return {
            "watermark": self.watermark,
            "late_rows": self.late_rows,
            "seq": self._seq,
            "sensor_id": keys[k_slot[live]],
            "window": k_win[live],
            "acc_int": ia[live],
            "acc_float": fa[live],
            **sketch_state(keys, self._sketch, "pane"),
            **self._pane_snapshot(),
        }

    def _pane_snapshot(self) -> dict[str, np.ndarray]:
        n = self._keys.n
        c_pane, pia, pfa = (a[:n] for a in self._panes)
        live = pia[:, I_CNT] != 0
        return {
            "pane_sensor_id": self._keys.keys[live],
            "pane": c_pane[live],
            "pane_acc_int": pia[live],
            "pane_acc_float": pfa[live],
        }

    def restore(self, snapshot: State) -> None:
        self._set_watermark(as_int(snapshot["watermark"]))
        self.late_rows = as_int(snapshot["late_rows"])
        self._seq = as_int(snapshot["seq"])
        # Open panes go back as they were, so sums go on in the same order.
        self._keys, self._panes = KeyIndex(), _empty_panes()
        slots = self._keys.slots(as_array(snapshot["pane_sensor_id"], np.int32))
        self._grow_panes()
        c_pane, pia, pfa = self._panes
        c_pane[slots] = as_array(snapshot["pane"], np.int64)
        pia[slots] = as_array(snapshot["pane_acc_int"], np.int64).reshape(-1, N_I)
        pfa[slots] = as_array(snapshot["pane_acc_float"], np.float64).reshape(-1, N_A)
        self._table, self._n_used = slot_table(
            self._keys.slots(as_array(snapshot["sensor_id"], np.int32)),
            as_array(snapshot["window"], np.int64),
            as_array(snapshot["acc_int"], np.int64).reshape(-1, N_I),
            as_array(snapshot["acc_float"], np.float64).reshape(-1, N_A),
        )
        self._grow_panes()
        self._stage = _empty_stage(0)
        count = as_array(snapshot["sketch_count"], np.int64)
        self._sketch, self._n_sketch = slot_table(
            self._keys.slots(as_array(snapshot["sketch_sensor_id"], np.int32)),
            sketch_two(
                as_array(snapshot["sketch_pane"], np.int64),
                as_array(snapshot["sketch_bucket"], np.int64),
            ),
            count.reshape(-1, 1),
            np.zeros((len(count), 0)),
        )


def _fire_to(watermark_ns: int, size_ns: int, slide_ns: int) -> int:
    """The last window index whose end is at or before the watermark (Python int)."""
    if watermark_ns >= MAX_WATERMARK:
        return INT64_MAX
    return (watermark_ns - size_ns) // slide_ns


def _empty_panes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-slot newest pane: ``(pane index, ia, fa)``."""
    return np.zeros(0, np.int64), np.zeros((0, N_I), np.int64), np.zeros((0, N_A), np.float64)


def _empty_stage(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pane, first code, counts[n, STAGE_CODES])`` per slot, none staged."""
    return (
        np.full(n, INT64_MIN, np.int64),
        np.zeros(n, np.int64),
        np.zeros((n, STAGE_CODES), np.int32),
    )


def _no_remap() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
