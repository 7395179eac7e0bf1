"""Control markers that travel in-band between batches, as in Flink.

A flow is a sequence of ``Item``: record batches interleaved with markers.
Markers are small frozen values; operators pass them on after reacting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

MAX_WATERMARK = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Watermark:
    """No row with ``ts`` (ns) below ``ts_ns`` will follow."""

    ts_ns: int


@dataclass(frozen=True, slots=True)
class CheckpointBarrier:
    """Everything before this barrier covers the source ``positions`` (key -> position)."""

    checkpoint_id: int
    positions: dict[str, int] = field(default_factory=dict, hash=False)


Marker = Watermark | CheckpointBarrier
Item = pa.RecordBatch | Watermark | CheckpointBarrier


class BatchLogic(Protocol):
    """Stateful logic of one stage, as Bytewax's ``on_batch / on_watermark / snapshot``.

    Built fresh by an operator's ``build()``; driven by ``telepipe.operators.stage``.
    """

    def on_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]: ...

    def on_watermark(self, watermark_ns: int) -> list[pa.RecordBatch]: ...

    def snapshot(self) -> dict[str, object]: ...
