"""Control markers that travel in-band between batches, as in Flink.

A flow is a sequence of ``Item``: record batches interleaved with markers.
Markers are small frozen values; operators pass them on after reacting.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

MAX_WATERMARK = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Watermark:
    """No row with ``ts`` (ns) below ``ts_ns`` will follow: an int64 (numpy ints too)."""

    ts_ns: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "ts_ns", as_watermark_ns(self.ts_ns, "Watermark.ts_ns"))


def as_watermark_ns(ts: object, what: str = "a watermark") -> int:
    """``ts`` as an int64 of ns (numpy ints too); ``TypeError`` for anything else (a NaN
    or a float, a bool, a value past int64): what ``on_watermark`` and ``Watermark`` take."""
    try:
        value = operator.index(ts)  # type: ignore[arg-type]
    except TypeError:
        value = None
    if value is None or isinstance(ts, bool) or not -(2**63) <= value <= MAX_WATERMARK:
        raise TypeError(f"{what} must be an int64 ns, got {ts!r}")
    return value


@dataclass(frozen=True, slots=True)
class CheckpointBarrier:
    """Everything before this barrier covers the source ``positions`` (key -> position).

    ``state`` accumulates, stage by stage, the snapshots taken at this barrier
    (the source's decoder first, then each stateful operator of the chain it
    went through), so a sink can commit a chain's state with its rows.
    """

    checkpoint_id: int
    positions: dict[str, int] = field(default_factory=dict, hash=False)
    state: dict[str, object] = field(default_factory=dict, hash=False, compare=False)

    def with_state(self, name: str, snapshot: object) -> CheckpointBarrier:
        return CheckpointBarrier(self.checkpoint_id, self.positions, {**self.state, name: snapshot})


Marker = Watermark | CheckpointBarrier
Item = pa.RecordBatch | Watermark | CheckpointBarrier


class BatchLogic(Protocol):
    """Stateful logic of one stage, as Bytewax's ``on_batch / on_watermark / snapshot``.

    Built fresh by an operator's ``build()``; driven by ``telepipe.operators.runtime.stage``.
    """

    def on_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]: ...

    def on_watermark(self, watermark_ns: int) -> list[pa.RecordBatch]: ...

    def snapshot(self) -> dict[str, object]: ...

    def restore(self, snapshot: dict[str, object]) -> None: ...
