"""``EntityStore``: one slot per entity, active or passive, as arrays (``_actor_kernels``).

An entity id (int32: a sensor id, or an equipment id) gets an entity number from a
``KeyIndex`` on its first row, for good. Its state is a record of the actor type's
state dtype, in the *active* store (a slot, taken from a free list on activation)
or, once passivated, in the *passive* store (packed rows of the state alone).
Reactivation copies the record back: the state is kept exactly, so outputs do not
depend on when an entity was passivated.
"""

from __future__ import annotations

import numpy as np

from telepipe.markers import State
from telepipe.operators.actors._actor_kernels import (
    ACTIVATIONS,
    N_FREE,
    N_PASSIVE,
    REACTIVATIONS,
    STOPPED,
    STOPPED_ROWS,
    _activate_kernel,
    _passivate_kernel,
)
from telepipe.operators.runtime.key_index import KeyIndex, grown_state
from telepipe.operators.runtime.snapshot import as_array

_MIN = 64


class EntityStore:
    """Entity id -> state record, active (``max_active`` at most between releases) or
    passive."""

    def __init__(self, state_dtype: np.dtype, initial: np.ndarray) -> None:
        self.dtype = state_dtype
        self.initial = initial
        self.keys = KeyIndex()
        self.act = np.full(0, -1, np.int32)
        self.pas = np.full(0, -1, np.int32)
        self.status = np.zeros(0, np.int8)
        self.seq = np.zeros(0, np.int64)
        self.state = np.zeros(0, state_dtype)
        self.owner = np.full(0, -1, np.int32)
        self.used = np.zeros(0, np.int64)
        self.free = np.zeros(0, np.int32)
        self.pstate = np.zeros(0, state_dtype)
        self.powner = np.full(0, -1, np.int32)
        self.cnt = np.zeros(5, np.int64)
        # Scratch of the order check, per entity number.
        self.last_ts = np.zeros(0, np.int64)
        self.last_kind = np.zeros(0, np.int8)

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        return (
            self.act, self.pas, self.status, self.seq, self.state, self.owner, self.used,
            self.free, self.pstate, self.powner, self.cnt,
        )  # fmt: skip

    @property
    def n_active(self) -> int:
        return len(self.state) - int(self.cnt[N_FREE])

    @property
    def n_passive(self) -> int:
        return int(self.cnt[N_PASSIVE])

    def counters(self) -> dict[str, int]:
        return {
            "entities": self.keys.n,
            "active": self.n_active,
            "passive": self.n_passive,
            "activations": int(self.cnt[ACTIVATIONS]),
            "reactivations": int(self.cnt[REACTIVATIONS]),
            "stopped_rows": int(self.cnt[STOPPED_ROWS]),
        }

    def entities(self, ids: np.ndarray) -> np.ndarray:
        """The entity numbers of ``ids`` (new ones added), with per-entity arrays to match."""
        numbers = self.keys.slots(ids)
        n = self.keys.n
        if len(self.act) < n:
            self.act = grown_state(self.act, n, -1)
            self.pas = grown_state(self.pas, n, -1)
            self.status = grown_state(self.status, n, 0)
            self.seq = grown_state(self.seq, n, 0)
            self.last_ts = grown_state(self.last_ts, n, np.iinfo(np.int64).min)
            self.last_kind = grown_state(self.last_kind, n, 0)
        return numbers

    def grow_active(self, more: int) -> None:
        """Room for at least ``more`` activations without a passivation (doubling)."""
        if int(self.cnt[N_FREE]) >= more:
            return
        old = len(self.state)
        size = max(_MIN, old)
        while size - old + int(self.cnt[N_FREE]) < more:
            size *= 2
        state = np.zeros(size, self.dtype)
        state[:old] = self.state
        self.state = state
        self.owner = grown_state(self.owner, size, -1)
        self.used = grown_state(self.used, size, 0)
        free = np.empty(size, np.int32)
        k = int(self.cnt[N_FREE])
        free[:k] = self.free[:k]
        free[k : k + size - old] = np.arange(size - 1, old - 1, -1, dtype=np.int32)
        self.free = free
        self.cnt[N_FREE] = k + size - old

    def activate(self, entities: np.ndarray) -> np.ndarray:
        """The active slots of ``entities`` (entity numbers), activating those passive or new."""
        entities = np.asarray(entities, np.int32)
        self.grow_active(len(entities))
        slots = np.empty(len(entities), np.int32)
        _activate_kernel(entities, self.arrays, self.initial, slots)
        return slots

    def passivate(self, slots: np.ndarray) -> None:
        """Move the entities of active ``slots`` to the passive store."""
        need = self.n_passive + len(slots)
        if len(self.pstate) < need:
            size = max(_MIN, len(self.pstate))
            while size < need:
                size *= 2
            pstate = np.zeros(size, self.dtype)
            pstate[: self.n_passive] = self.pstate[: self.n_passive]
            self.pstate = pstate
            self.powner = grown_state(self.powner, size, -1)
        _passivate_kernel(np.asarray(slots, np.int32), self.arrays)

    def passivate_idle(self, before_ts: int, max_active: int) -> np.ndarray:
        """Passivate the active entities whose last row is before ``before_ts``, then the
        least recently used (by event time, then entity number) beyond ``max_active``.
        Returns their entity numbers."""
        active = np.flatnonzero(self.owner >= 0).astype(np.int32)
        idle = self.used[active] < before_ts
        chosen = active[idle]
        rest = active[~idle]
        excess = len(rest) - max_active
        if excess > 0:
            order = np.lexsort((self.owner[rest], self.used[rest]))
            chosen = np.concatenate([chosen, rest[order[:excess]]])
        entities = self.owner[chosen].copy()
        if len(chosen):
            self.passivate(chosen)
        return entities

    # -- state as keyed rows

    def held(self) -> tuple[np.ndarray, np.ndarray]:
        """``(entity numbers, state records)`` of every entity that has state, by entity
        id (the same rows however entities were activated or passivated)."""
        active = np.flatnonzero(self.owner >= 0)
        np_ = self.n_passive
        entities = np.concatenate([self.owner[active], self.powner[:np_]])
        records = np.concatenate([self.state[active], self.pstate[:np_]])
        stopped = np.flatnonzero(self.status[: self.keys.n] == STOPPED).astype(np.int32)
        lone = stopped[(self.act[stopped] < 0) & (self.pas[stopped] < 0)]
        if len(lone):  # stopped before its first event: state is the initial one
            entities = np.concatenate([entities, lone])
            records = np.concatenate([records, np.repeat(self.initial, len(lone))])
        order = np.argsort(self.keys.keys[entities], kind="stable")  # by entity id
        return entities[order], records[order]

    def snapshot(self) -> State:
        """Keyed rows: ``sensor_id`` (the entity id), ``seq``, ``status`` and one
        ``state_<column>`` per state column."""
        entities, records = self.held()
        out: State = {
            "sensor_id": self.keys.keys[entities].copy(),
            "seq": self.seq[entities].copy(),
            "status": self.status[entities].copy(),
        }
        for name in self.dtype.names or ():
            out[f"state_{name}"] = np.ascontiguousarray(records[name])
        return out

    def restore(self, state: State) -> None:
        """Load keyed rows (any subset of key groups); every entity comes back passive."""
        ids = as_array(state["sensor_id"], np.int32)
        self.keys.reserve(ids)
        entities = self.entities(ids)
        self.seq[entities] = as_array(state["seq"], np.int64)
        self.status[entities] = as_array(state["status"], np.int8)
        records = np.zeros(len(ids), self.dtype)
        for name in self.dtype.names or ():
            records[name] = as_array(state[f"state_{name}"], self.dtype[name])
        n = len(ids)
        self.pstate = np.zeros(max(_MIN, n), self.dtype)
        self.pstate[:n] = records
        self.powner = np.full(max(_MIN, n), -1, np.int32)
        self.powner[:n] = entities
        self.pas[entities] = np.arange(n, dtype=np.int32)
        self.cnt[N_PASSIVE] = n

    def record(self, entity: int) -> np.ndarray:
        """The state record of ``entity`` (a view into the active store: activates it)."""
        slot = self.activate(np.array([entity], np.int32))[0]
        return self.state[slot : slot + 1]
