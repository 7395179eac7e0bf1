"""``SessionWindow``: keyed event-time session windows (gap) with chosen aggregates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa

from telepipe.errors import ConfigError
from telepipe.markers import MAX_WATERMARK, State, as_watermark_ns
from telepipe.operators.runtime._key_kernels import INT64_MIN
from telepipe.operators.runtime.key_index import (
    KeyIndex,
    capacity_for,
    empty_slot_table,
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
    I_FTS,
    I_LTS,
    N_A,
    N_I,
    _sketch_add_kernel,
    _sketch_rebuild_kernel,
)
from telepipe.operators.windows._session_kernels import (
    _sensor_ts_order_kernel,
    _session_merge_kernel,
)
from telepipe.operators.windows.options import (
    DEFAULT_AGGREGATES,
    aggregates_tuple,
    clamp64,
    dead_end,
    emit_batch,
    positive_ms,
    sketch_state,
    sketch_two,
    wants_quantiles,
    windows_schema,
)

_MS = 1_000_000


@dataclass(frozen=True)
class SessionWindow(StageOperator):
    """Per-sensor sessions of ``value``: rows less than ``gap_ms`` apart share a session.

    A session is ``[first ts, last ts + gap)``; an out-of-order row can extend one
    or join two. It fires when the watermark reaches its end and is kept
    ``allowed_lateness_ms`` longer: rows arriving meanwhile update it and it is
    emitted again at the next watermark with ``revision`` 1, 2, ... (a column
    only when ``allowed_lateness_ms > 0``; an update may have grown bounds). A row
    that would only make a session already past ``end + allowed_lateness`` is
    late: counted in ``logic.late_rows`` and kept for ``logic.take_late()``,
    decided at the next watermark. Output rows are sorted by (window_start,
    sensor_id) within each firing.
    """

    gap_ms: int = 5000
    aggregates: tuple[str, ...] = DEFAULT_AGGREGATES
    allowed_lateness_ms: int = 0

    def __post_init__(self) -> None:
        positive_ms("SessionWindow", "gap_ms", self.gap_ms)
        object.__setattr__(self, "aggregates", aggregates_tuple("SessionWindow", self.aggregates))
        positive_ms("SessionWindow", "allowed_lateness_ms", self.allowed_lateness_ms, zero_ok=True)

    @property
    def output_schema(self) -> pa.Schema:
        return windows_schema(self.aggregates, self.allowed_lateness_ms > 0)

    def build(self) -> SessionWindowLogic:
        return SessionWindowLogic(self)


class SessionWindowLogic:
    """The ``BatchLogic`` of ``SessionWindow``.

    Open sessions are accumulator arrays sorted by (sensor, start), merged with each
    batch sorted by (sensor, ts, arrival): O(open sessions + rows log rows) per
    batch. Each session has an id that keys its DDSketch; a session that merges
    into another hands its sketch buckets over. Rows that could only start a
    session already past allowed lateness wait (``_pending``) for the next
    watermark, when the rows between two watermarks have all been seen: so
    whether a row is late does not depend on how the input was batched.
    """

    snapshot_version: ClassVar[int] = 1

    def __init__(self, options: SessionWindow) -> None:
        self.options = options
        self.gap_ns = options.gap_ms * _MS
        self.lateness_ns = options.allowed_lateness_ms * _MS
        self.schema = options.output_schema
        self.watermark = INT64_MIN
        self.late_rows = 0
        self._seq = 0
        self._next_id = 0
        self._late: list[pa.RecordBatch] = []
        self._pending: list[tuple[pa.RecordBatch, np.ndarray]] = []
        self._quantiles = wants_quantiles(options.aggregates)
        self._set_state(
            np.zeros(0, np.int32),
            np.zeros(0, np.int64),
            np.zeros((0, N_I), np.int64),
            np.zeros((0, N_A), np.float64),
        )
        # Sketches are keyed by the sensor's slot (and session id, bucket).
        self._keys = KeyIndex()
        self._sketch, self._n_sketch = empty_slot_table(1, 0)

    def _set_state(self, sid, ids, ia, fa) -> None:
        self._sid, self._id, self._ia, self._fa = sid, ids, ia, fa

    def take_late(self) -> list[pa.RecordBatch]:
        """The late rows (input schema) since the last call."""
        late, self._late = self._late, []
        return late

    def on_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        sid, ts, val = readings_arrays(batch)
        n = len(ts)
        seqs = np.arange(self._seq, self._seq + n, dtype=np.int64)
        self._seq += n
        if n == 0:
            return []
        if self.watermark >= MAX_WATERMARK:
            self.late_rows += n
            self._late.append(batch)
            return []
        if self.watermark > INT64_MIN:
            # A row whose own session [ts, ts + gap) is past allowed lateness may still
            # join a held session: decided at the next watermark.
            lateish = ts <= clamp64(dead_end(self.watermark, self.lateness_ns) - self.gap_ns)
            if lateish.any():
                self._pending.append((batch.filter(pa.array(lateish)), seqs[lateish]))
                keep = ~lateish
                sid, ts, val, seqs = sid[keep], ts[keep], val[keep], seqs[keep]
        self._merge(sid, ts, val, seqs)
        return []

    def _merge(self, sid, ts, val, seqs) -> np.ndarray:
        """Merge rows into the sessions; returns each row's session id (-1: late)."""
        if len(ts) == 0:
            return np.zeros(0, np.int64)
        order = _sensor_ts_order_kernel(sid, ts)  # equal (sensor, ts) in arrival order
        dead = dead_end(self.watermark, self.lateness_ns)
        state, row_id, absorbed, into, self._next_id = _session_merge_kernel(
            self._sid, self._id, self._ia, self._fa, sid, ts, val, seqs, order,
            self.gap_ns, dead, self._next_id,
        )  # fmt: skip
        self._set_state(*state)
        if self._quantiles:
            slots = self._keys.slots(sid)
            pos = 0
            k_lo = np.maximum(row_id, 0)  # late rows (-1) get lo > hi: skipped
            while True:
                pos, self._n_sketch = _sketch_add_kernel(
                    slots, val, k_lo, row_id, pos, self._sketch, self._n_sketch
                )
                if pos >= len(ts):
                    break
                more = int(row_id[pos] - k_lo[pos]) + 1
                self._sketch, self._n_sketch = rehashed(self._sketch, self._n_sketch, room=more)
            if len(absorbed):
                by = np.argsort(absorbed)
                self._rekey_sketch(absorbed[by], into[by])
        return row_id

    def _rekey_sketch(self, keys: np.ndarray, to: np.ndarray) -> None:
        cap = len(self._sketch[0])
        self._sketch, self._n_sketch = _sketch_rebuild_kernel(
            self._sketch, INT64_MIN, keys, to, capacity_for(self._n_sketch) if cap > 64 else cap
        )

    def on_watermark(self, watermark_ns: int) -> list[pa.RecordBatch]:
        watermark_ns = as_watermark_ns(watermark_ns)
        if watermark_ns <= self.watermark:
            return []
        if self._pending:
            self._resolve_pending()
        self.watermark = watermark_ns
        out = self._fire()
        self._purge()
        return out

    def _resolve_pending(self) -> None:
        batches = [b for b, _ in self._pending]
        seqs = np.concatenate([s for _, s in self._pending])
        self._pending = []
        batch = _concat(batches)
        sid, ts, val = readings_arrays(batch)
        row_id = self._merge(sid, ts, val, seqs)
        late = row_id < 0
        n_late = int(np.count_nonzero(late))
        if n_late:
            self.late_rows += n_late
            self._late.append(batch.filter(pa.array(late)))

    def _fire(self) -> list[pa.RecordBatch]:
        ia = self._ia
        end = ia[:, I_LTS] + self.gap_ns
        fire = (end <= self.watermark) & ((ia[:, I_FIRED] == 0) | (ia[:, I_DIRTY] != 0))
        slots = np.flatnonzero(fire)
        if len(slots) == 0:
            return []
        sketch = key_slot = None
        if self._quantiles:
            sketch, key_slot = self._sketch, self._keys.slots(self._sid)
        start = np.ascontiguousarray(ia[:, I_FTS])
        batch, slots = emit_batch(
            self.schema, self.options.aggregates, slots, self._sid[slots], self._id, ia, self._fa,
            start, end, sketch, key_slot,
        )  # fmt: skip
        ia[slots, I_FIRED] += 1
        ia[slots, I_DIRTY] = 0
        return [batch]

    def _purge(self) -> None:
        end = self._ia[:, I_LTS] + self.gap_ns
        gone = end <= dead_end(self.watermark, self.lateness_ns)
        if not gone.any():
            return
        if self._quantiles:
            ids = np.sort(self._id[gone])
            self._rekey_sketch(ids, np.full(len(ids), -1, np.int64))
        keep = ~gone
        self._set_state(self._sid[keep], self._id[keep], self._ia[keep], self._fa[keep])

    def snapshot(self) -> State:
        state: State = {
            "watermark": self.watermark,
            "late_rows": self.late_rows,
            "seq": self._seq,
            "next_id": self._next_id,
            "sensor_id": self._sid.copy(),
            "session_id": self._id.copy(),
            "acc_int": self._ia.copy(),
            "acc_float": self._fa.copy(),
            **sketch_state(self._keys.keys, self._sketch, "session"),
            "pending_seq": np.concatenate([s for _, s in self._pending] or [np.empty(0, np.int64)]),
        }
        if self._pending:  # the rows as they came: late ones go to the side output whole
            state["pending"] = _concat([b for b, _ in self._pending])
        return state

    def restore(self, snapshot: State) -> None:
        self.watermark = as_int(snapshot["watermark"])
        self.late_rows = as_int(snapshot["late_rows"])
        self._seq = as_int(snapshot["seq"])
        self._next_id = as_int(snapshot["next_id"])
        self._late = []
        pending = snapshot.get("pending")
        seqs = as_array(snapshot["pending_seq"], np.int64)
        self._pending = [(pending, seqs.copy())] if isinstance(pending, pa.RecordBatch) else []
        ia = as_array(snapshot["acc_int"], np.int64).reshape(-1, N_I)
        if len(ia) and (ia[:, I_CNT] <= 0).any():
            raise ConfigError("snapshot holds an empty session")
        self._set_state(
            as_array(snapshot["sensor_id"], np.int32),
            as_array(snapshot["session_id"], np.int64),
            ia.copy(),
            as_array(snapshot["acc_float"], np.float64).reshape(-1, N_A).copy(),
        )
        self._keys = KeyIndex()
        count = as_array(snapshot["sketch_count"], np.int64)
        self._sketch, self._n_sketch = slot_table(
            self._keys.slots(as_array(snapshot["sketch_sensor_id"], np.int32)),
            sketch_two(
                as_array(snapshot["sketch_session"], np.int64),
                as_array(snapshot["sketch_bucket"], np.int64),
            ),
            count.reshape(-1, 1),
            np.zeros((len(count), 0)),
        )


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    """One batch of ``batches`` (of one schema), in order."""
    table = pa.Table.from_batches(batches).combine_chunks()
    return table.to_batches()[0] if table.num_rows else batches[0]
