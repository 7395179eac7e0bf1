"""Control markers that travel in-band between batches, as in Flink.

A flow is a sequence of ``Item``: record batches interleaved with markers.
Markers are small frozen values; operators pass them on after reacting.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
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


@dataclass(frozen=True, slots=True)
class SideOutput:
    """Rows a stage set aside, in-band: ``tag`` says why (``"late"``: behind its
    watermark), ``step`` names the stage. Every stage and boundary after it passes it
    on unchanged and in order; sinks that do not route it ignore it."""

    tag: str
    step: str
    batch: pa.RecordBatch


Marker = Watermark | CheckpointBarrier
Item = pa.RecordBatch | Watermark | CheckpointBarrier | SideOutput

#: A logic's state: a flat mapping (no nesting), arrays by key, so it can be written
#: as Arrow columns. A RecordBatch only where rows of the input are held as they came.
type StateValue = np.ndarray | int | float | str | pa.RecordBatch
type State = dict[str, StateValue]


class StageOptions(Protocol):
    """The frozen options dataclass a logic was built from (``dataclasses.asdict``-able)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]


class BatchLogic(Protocol):
    """Stateful logic of one stage, as Bytewax's ``on_batch / on_watermark / snapshot``.

    Built fresh by an operator's ``build()``; driven by ``telepipe.operators.runtime.stage``,
    which wraps ``snapshot()`` in a ``Snapshot`` (the operator, ``snapshot_version`` and
    ``options``) and checks those before it hands a snapshot's state to ``restore``.
    """

    #: The format of ``snapshot()``'s state: bumped when its keys or meaning change.
    snapshot_version: ClassVar[int]

    @property
    def options(self) -> StageOptions: ...

    def on_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]: ...

    def on_watermark(self, watermark_ns: int) -> list[pa.RecordBatch]: ...

    def take_late(self) -> list[pa.RecordBatch]:
        """The rows set aside as late since the last call (input schema), in order."""
        ...

    def snapshot(self) -> State: ...

    def restore(self, state: State) -> None: ...
