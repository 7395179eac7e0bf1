"""Actors: keyed, stateful stages with per-entity state under OTP-style supervision.

- ``ActorStage``: the stage (``stage``), keyed by ``sensor_id`` or a mapped entity id
- ``VectorActor`` (numba ``step``/``apply``, the fast path) and ``PythonActor``
  (``handle``/``apply`` and hooks, the flexible path), declared as in ``spec``
- built-ins: ``Counter``, ``EquipmentStateMachine`` (``builtins``)
- ``supervision``: strategies, restart types, intensity; ``ActorError``
- ``journal`` (the ``actor_events`` / ``actor_snapshots`` tables) and ``recover``
  (entities' state folded back from them; ``with_store``: a checkpoint's snapshot with
  them, as a restart restores it; ``entities_from_store``: them alone)
"""

from telepipe.operators.actors.builtins import Counter, EquipmentStateMachine
from telepipe.operators.actors.recovery import entities_from_store, recover, with_store
from telepipe.operators.actors.spec import Event, PythonActor, VectorActor
from telepipe.operators.actors.stage import ACTOR_FAILURE, ActorLogic, ActorStage
from telepipe.operators.actors.supervision import ActorError

__all__ = [
    "ACTOR_FAILURE",
    "ActorError",
    "ActorLogic",
    "ActorStage",
    "Counter",
    "EquipmentStateMachine",
    "Event",
    "PythonActor",
    "VectorActor",
    "entities_from_store",
    "recover",
    "with_store",
]
