"""``Dedup``: readings passed through without duplicates of (sensor_id, ts)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from telepipe.markers import State
from telepipe.operators.detectors._detector_kernels import _dedup_kernel
from telepipe.operators.detectors.base import DetectorLogic, check_choice, event_batch
from telepipe.operators.runtime.snapshot import as_int
from telepipe.operators.runtime.stage import StageOperator
from telepipe.schema import READINGS

_KEEP = ("first", "last")


@dataclass(frozen=True)
class Dedup(StageOperator):
    """Drop readings that repeat the key ``(sensor_id, ts)`` (the ts acts as the sequence).

    Rows are held until the watermark passes their ts and released in
    (ts, arrival) order; by then every copy of a key has arrived, so the
    duplicates of a key are found exactly, and the state is only the rows above
    the watermark. ``keep``: the ``first`` or ``last`` arrival of a key survives
    (``last`` treats a resend as a correction). A copy arriving after the
    watermark passed its ts is late: dropped and counted in ``logic.late_rows``,
    never emitted twice. Duplicates are counted in ``logic.duplicates``. Emits
    ``READINGS`` (``quality`` is carried through) in (ts, arrival) order.
    """

    keep: str = "first"

    def __post_init__(self) -> None:
        check_choice("Dedup", "keep", self.keep, _KEEP)

    @property
    def output_schema(self) -> pa.Schema:
        return READINGS

    def build(self) -> DedupLogic:
        return DedupLogic(self)


class DedupLogic(DetectorLogic):
    sensor_order = False  # it emits the rows themselves, in (ts, arrival) order

    def __init__(self, options: Dedup) -> None:
        self.keep_last = options.keep == "last"
        self.duplicates = 0
        super().__init__(options, n_ints=0, n_floats=0, with_quality=True)

    def _advance(self, sid, ts, val, q, watermark: int) -> list[pa.RecordBatch]:
        if len(ts) == 0:
            return []
        keep, n_dup = _dedup_kernel(sid, ts, self.keep_last)
        if n_dup:
            self.duplicates += n_dup
            rows = keep.view(np.bool_)
            sid, ts, val, q = sid[rows], ts[rows], val[rows], q[rows]
        else:
            sid, ts, val, q = sid.copy(), ts.copy(), val.copy(), q.copy()  # views of the buffer
        return event_batch(READINGS, [sid, ts, val, q])

    def _extra_snapshot(self) -> State:
        return {"duplicates": self.duplicates}

    def _restore_extra(self, snapshot: State) -> None:
        self.duplicates = as_int(snapshot["duplicates"])
