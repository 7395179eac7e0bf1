"""Built-in actor types: ``Counter`` (the trivial one) and ``EquipmentStateMachine``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from telepipe.errors import ConfigError
from telepipe.operators.actors.spec import ALARM, VectorActor

# ------------------------------------------------------------------ Counter

TICK, REACHED = 1, 2


@njit(cache=True)
def _counter_step(s, row, p, e):
    e.count = s.count + 1
    if p[0] > 0 and e.count % p[0] == 0:
        return REACHED
    return TICK


@njit(cache=True)
def _counter_apply(s, e):
    s.count = e.count
    s.last_ts = e.ts


@dataclass(frozen=True)
class Counter(VectorActor):
    """Counts each entity's rows; emits ``reached`` every ``every`` rows (0: never)."""

    every: int = 0

    state = {"count": np.int64, "last_ts": np.int64}
    events = {"tick": {"count": np.int64}, "reached": {"count": np.int64}}
    internal = frozenset({"tick"})
    step = staticmethod(_counter_step)
    apply = staticmethod(_counter_apply)

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 0:
            raise ConfigError(f"Counter.every must be an integer >= 0, got {self.every!r}")

    def params(self) -> tuple[int]:
        return (self.every,)


# ------------------------------------------------------- EquipmentStateMachine

IDLE, RUNNING, FAULT, MAINTENANCE = 0, 1, 2, 3
STATES = ("idle", "running", "fault", "maintenance")
STARTED, CHANGED, ALARMS = 1, 2, 3
NAN_READING = -1
_UNSET = np.iinfo(np.int64).min


@njit(cache=True)
def _machine_step(s, row, p, e):
    run_level, fault_level, maintenance_quality, nan_is_error = p
    alarms = s.alarms
    if row.kind == ALARM:
        alarms += 1 if row.flag != 0 else -1
        if alarms < 0:
            alarms = 0
        if alarms > 0:
            target = FAULT
        elif s.state == FAULT:
            target = IDLE  # cleared: idle until the next reading says otherwise
        else:
            target = s.state
    else:
        if math.isnan(row.value):
            return NAN_READING if nan_is_error else 0
        if row.flag == maintenance_quality:
            target = MAINTENANCE
        elif alarms > 0 or row.value >= fault_level:
            target = FAULT
        elif row.value >= run_level:
            target = RUNNING
        else:
            target = IDLE
    e.alarms = alarms
    e.from_state = s.state
    e.to_state = target
    if s.since == _UNSET:
        return STARTED
    if target != s.state:
        e.duration_ns = row.ts - s.since
        return CHANGED
    if alarms != s.alarms:
        return ALARMS
    return 0


@njit(cache=True)
def _machine_apply(s, e):
    s.alarms = e.alarms
    if e.type == STARTED:
        s.state = e.to_state
        s.since = e.ts
    elif e.type == CHANGED:
        if e.from_state == IDLE:
            s.idle_ns += e.duration_ns
        elif e.from_state == RUNNING:
            s.running_ns += e.duration_ns
        elif e.from_state == FAULT:
            s.fault_ns += e.duration_ns
        else:
            s.maintenance_ns += e.duration_ns
        s.state = e.to_state
        s.since = e.ts
        s.changes += 1


@dataclass(frozen=True)
class EquipmentStateMachine(VectorActor):
    """A machine's state (idle 0, running 1, fault 2, maintenance 3) from its readings
    and the alarm rows of an earlier step, with the event time spent in each.

    A reading with quality ``maintenance_quality`` puts it in maintenance; else it is
    in fault while any of its alarms is on or a reading is ``>= fault_level``, running
    at ``>= run_level``, idle below. An alarm row (``state`` 1 entered, 0 left)
    counts the machine's active alarms. Emits ``started`` (its first row;
    ``duration_ns`` 0), ``changed`` (``from_state``, ``to_state``, ``duration_ns`` spent in the state it
    left); ``idle_ns``..``maintenance_ns`` add up the states it left, the current
    one runs from ``since``. A NaN reading is skipped, or with ``nan_is_error`` an
    error (``nan_reading``) for the supervisor.
    """

    run_level: float = 10.0
    fault_level: float = 90.0
    maintenance_quality: int = 2
    nan_is_error: bool = False

    state = {
        "state": np.int8, "alarms": np.int32, "since": np.int64, "changes": np.int64,
        "idle_ns": np.int64, "running_ns": np.int64, "fault_ns": np.int64,
        "maintenance_ns": np.int64,
    }  # fmt: skip
    initial = {"since": _UNSET}
    events = {
        "started": {
            "from_state": np.int8, "to_state": np.int8, "alarms": np.int32,
            "duration_ns": np.int64,
        },
        "changed": {
            "from_state": np.int8, "to_state": np.int8, "duration_ns": np.int64,
            "alarms": np.int32,
        },
        "alarms": {"alarms": np.int32},
    }  # fmt: skip
    internal = frozenset({"alarms"})
    errors = {NAN_READING: "nan_reading"}
    step = staticmethod(_machine_step)
    apply = staticmethod(_machine_apply)

    def __post_init__(self) -> None:
        for name in ("run_level", "fault_level"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
                raise ConfigError(f"EquipmentStateMachine.{name} must be a number, got {value!r}")
        if self.run_level > self.fault_level:
            raise ConfigError(
                "EquipmentStateMachine.run_level must be <= fault_level, got "
                f"{self.run_level} > {self.fault_level}"
            )
        q = self.maintenance_quality
        if isinstance(q, bool) or not isinstance(q, int) or not 0 <= q <= 127:
            raise ConfigError(
                f"EquipmentStateMachine.maintenance_quality must be in 0..127, got {q!r}"
            )

    def params(self) -> tuple[float, float, int, bool]:
        return (
            float(self.run_level), float(self.fault_level), int(self.maintenance_quality),
            bool(self.nan_is_error),
        )  # fmt: skip
