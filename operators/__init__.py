"""CEP operators over record batches, by family.

- ``windows``: ``TumblingWindow``, ``SlidingWindow``, ``SessionWindow``
- ``detectors``: ``ThresholdAlarm``, ``HysteresisAlarm``, ``RateOfChange``, ``Flatline``,
  ``HeartbeatTimeout``, ``EwmaZScore``, ``Dedup``, ``Resample``
- ``patterns``: ``Pattern``, ``CepPattern``
- ``actors``: ``ActorStage`` (with ``Counter``, ``EquipmentStateMachine``)
- ``runtime``: how a stage runs (``stage``, ``ThreadBoundary``, ``KeyIndex``, event-time
  buffers)

Each family keeps its numba kernels beside it in private ``_*_kernels`` modules.
A pipeline YAML names an operator as ``telepipe.operators.<Name>``.
"""

from telepipe.operators.actors import ActorStage, Counter, EquipmentStateMachine
from telepipe.operators.detectors import (
    Dedup,
    EwmaZScore,
    Flatline,
    HeartbeatTimeout,
    HysteresisAlarm,
    RateOfChange,
    Resample,
    ThresholdAlarm,
)
from telepipe.operators.patterns import CepPattern, Pattern, PatternStep
from telepipe.operators.runtime.stage import StageOperator, stage
from telepipe.operators.runtime.thread_boundary import ThreadBoundary
from telepipe.operators.windows import SessionWindow, SlidingWindow, TumblingWindow

__all__ = [
    "ActorStage",
    "CepPattern",
    "Counter",
    "Dedup",
    "EquipmentStateMachine",
    "EwmaZScore",
    "Flatline",
    "HeartbeatTimeout",
    "HysteresisAlarm",
    "Pattern",
    "PatternStep",
    "RateOfChange",
    "Resample",
    "SessionWindow",
    "SlidingWindow",
    "StageOperator",
    "ThreadBoundary",
    "ThresholdAlarm",
    "TumblingWindow",
    "stage",
]
