"""``ActorStage``: keyed actors as a stage, one slot per entity, under supervision.

Rows are held until the watermark passes them (late ones set aside, as every keyed
operator does), then run per entity in event-time order: ``(ts, kind)``, readings
before alarm rows of the same ts, then arrival. Entities are independent, so rows
that already come in that order per entity run in arrival order (checked in one
pass); otherwise the release is sorted first. Outputs are sorted by
``(ts, entity, seq)``: the same however the input was cut into batches.

Input batches are readings (``sensor_id, ts, value[, quality]``: kind 0, flag the
quality) or alarm rows of an earlier step (with a ``state`` column, as
``HysteresisAlarm``'s: kind 1, flag the state; with ``start_ts``, as
``ThresholdAlarm``'s: kind 1, flag 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from reactivex import Observable

from telepipe.errors import ConfigError
from telepipe.markers import MAX_WATERMARK, Item, State, as_watermark_ns
from telepipe.operators.actors._actor_kernels import (
    DONE,
    NEED_ACTIVE,
    STOPPED,
    _in_order_kernel,
    _run_kernel,
)
from telepipe.operators.actors.inputs import actor_of, input_rows
from telepipe.operators.actors.journal import (
    ACTOR_EVENTS,
    ACTOR_SNAPSHOTS,
    event_rows,
    snapshot_rows,
)
from telepipe.operators.actors.mapping import UNMAPPED, SensorMap, load_mapping
from telepipe.operators.actors.python_path import PythonRunner
from telepipe.operators.actors.spec import ROW, ActorType, PythonActor, VectorActor, spec_of
from telepipe.operators.actors.store import EntityStore
from telepipe.operators.actors.supervision import (
    PERIOD_UNITS,
    RESTARTS,
    STRATEGIES,
    Supervisor,
)
from telepipe.operators.detectors.base import check_choice, check_int
from telepipe.operators.runtime._key_kernels import INT64_MIN
from telepipe.operators.runtime.snapshot import as_array, as_int, options_json
from telepipe.operators.runtime.stage import StageOperator, side_stage
from telepipe.schema import TS_NS, arrow_column
from telepipe.state.key_groups import DEFAULT_KEY_GROUPS, key_group

ACTOR_FAILURE = "actor_failure"  # the tag of failing input rows' side output
#: Rows that kept failing an entity: the input row, its entity and the error.
ACTOR_FAILURES = pa.schema(
    [
        pa.field("sensor_id", pa.int32(), nullable=False),
        pa.field("ts", TS_NS, nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("quality", pa.uint8(), nullable=False),
        pa.field("kind", pa.int8(), nullable=False),
        pa.field("entity", pa.int32(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
    ]
)
_OWNER = "ActorStage"
CHECKPOINT, STORE, BOTH = "checkpoint", "store", "both"  # where entities' state is kept


@dataclass(frozen=True)
class ActorStage(StageOperator):
    """Keyed actors of one type as a stage (see ``docs/operators/actors.md``).

    ``actor``: an actor type instance (Python), or its name, a telepipe or plugin
    component (YAML), with ``params`` its fields. ``key``: ``sensor_id``, or the name
    of an id ``mapping`` gives each sensor (a dict, or a CSV/Parquet path).
    ``idle_ms``: passivate an entity after this much event time without a row (0:
    never); ``max_active``: passivate the least recently used beyond it. ``with_state``:
    each output row carries the state after its event. ``journal``: every event
    (internal ones too) to the ``actor_events`` table and, every ``snapshot_every``
    events of an entity, its state to ``actor_snapshots``, at checkpoints
    (``journal``); the store is then where a restart takes the entities' state from
    (a checkpoint keeps only held rows, timers and counters), and ``telepipe actors
    prune`` keeps ``retain_snapshots`` snapshots per entity. ``check_store``: the
    checkpoints keep every entity's state too and a restart checks the store's fold
    against it (tests, audits). Supervision: ``strategy``,
    ``restart``, ``max_restarts`` within ``period`` (``period_unit`` ms of event time
    or rows), ``max_attempts`` (``supervision``). Mailboxes of the Python-class path:
    ``mailbox_size``, ``mailbox_policy`` (block, drop_oldest, drop_newest, fail).
    """

    actor: Any
    params: Any = None
    key: str = "sensor_id"
    mapping: Any = None
    idle_ms: int = 0
    max_active: int = 1_000_000
    with_state: bool = False
    journal: bool = False
    snapshot_every: int = 1000
    retain_snapshots: int = 2
    check_store: bool = False
    strategy: str = "one_for_one"
    restart: str = "permanent"
    max_restarts: int = 10
    period: int = 60_000
    period_unit: str = "ms"
    max_attempts: int = 3
    mailbox_size: int = 1024
    mailbox_policy: str = "block"

    def __post_init__(self) -> None:
        actor = actor_of(self.actor, self.params)
        object.__setattr__(self, "actor", f"{type(actor).__module__}.{type(actor).__qualname__}")
        object.__setattr__(self, "params", options_json(actor))  # type: ignore[arg-type]
        object.__setattr__(self, "_actor", actor)
        if not isinstance(self.key, str) or not self.key.isidentifier():
            raise ConfigError(f"{_OWNER}.key must be a column name, got {self.key!r}")
        if self.mapping is None and self.key != "sensor_id":
            raise ConfigError(f"{_OWNER}.key {self.key!r} needs a mapping from sensor_id")
        if self.mapping is not None:
            sensors, entities = load_mapping(self.mapping, self.key)
            if not isinstance(self.mapping, str):
                pairs = {int(s): int(e) for s, e in zip(sensors, entities, strict=True)}
                object.__setattr__(self, "mapping", pairs)
            object.__setattr__(self, "_map", SensorMap(sensors, entities))
        check_int(_OWNER, "idle_ms", self.idle_ms, 0, 2**62 // 1_000_000)
        check_int(_OWNER, "max_active", self.max_active, 1)
        check_int(_OWNER, "snapshot_every", self.snapshot_every, 1)
        check_int(_OWNER, "retain_snapshots", self.retain_snapshots, 1)
        for name in ("with_state", "journal", "check_store"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{_OWNER}.{name} must be true or false")
        check_choice(_OWNER, "strategy", self.strategy, STRATEGIES)
        check_choice(_OWNER, "restart", self.restart, RESTARTS)
        check_int(_OWNER, "max_restarts", self.max_restarts, 0)
        check_int(_OWNER, "period", self.period, 1, 2**62 // 1_000_000)
        check_choice(_OWNER, "period_unit", self.period_unit, PERIOD_UNITS)
        check_int(_OWNER, "max_attempts", self.max_attempts, 1)
        check_int(_OWNER, "mailbox_size", self.mailbox_size, 1)
        check_choice(
            _OWNER, "mailbox_policy", self.mailbox_policy,
            ("block", "drop_oldest", "drop_newest", "fail"),
        )  # fmt: skip
        object.__setattr__(self, "_spec", spec_of(actor))

    # StageOperator's face, with side outputs: ``actor_failure`` (failing rows) and, with
    # ``journal``, ``actor_events`` / ``actor_snapshots`` rows at each barrier.
    @property
    def output_schema(self) -> pa.Schema:
        return self.__dict__["_spec"].output_schema(self.key, self.with_state)

    def build(self) -> ActorLogic:
        return ActorLogic(self)

    def named(
        self, name: str, restore: object = None
    ) -> Callable[[Observable[Item]], Observable[Item]]:
        return side_stage(self.build, name=name, restore=restore)

    def __call__(self, source: Observable[Item]) -> Observable[Item]:
        return self.named(self.step_name)(source)


class ActorLogic:
    """The ``BatchLogic`` of ``ActorStage``."""

    # 2: store_seq (the event store's snapshots); 3: with journal, entities in the store
    snapshot_version: ClassVar[int] = 3

    def __init__(self, options: ActorStage) -> None:
        self._options = options
        self.actor: ActorType = options.__dict__["_actor"]
        self.spec = options.__dict__["_spec"]
        self.map: SensorMap | None = options.__dict__.get("_map")
        self.store = EntityStore(self.spec.state_dtype, self.spec.initial)
        self.supervisor = Supervisor(
            options.restart, options.max_restarts, options.period, options.period_unit,
            options.max_attempts,
        )  # fmt: skip
        self.watermark = INT64_MIN
        self.late_rows = 0
        self.unmapped_rows = 0
        self.rows_seen = 0
        self._pend = np.empty(0, ROW)
        self._n_pend = 0
        self._late: list[pa.RecordBatch] = []
        self._journal: list[np.ndarray] = []
        self._side: list[tuple[str, pa.RecordBatch]] = []
        self._store_seq = np.zeros(0, np.int64)  # per entity: seq of its last stored snapshot
        self._zero = np.zeros(1, self.spec.event_dtype)
        self._keep = self.spec.emitted.copy()
        if options.journal:
            self._keep[:] = True
        self._python: PythonRunner | None = None
        if isinstance(self.actor, PythonActor):
            self._python = PythonRunner(self)
        elif not isinstance(self.actor, VectorActor):
            raise ConfigError(
                f"{_OWNER}.actor: {self.spec.name} is neither a VectorActor nor a PythonActor"
            )

    @property
    def options(self) -> ActorStage:
        return self._options

    # -- the BatchLogic protocol

    def on_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        sid, ts, value, kind, flag = input_rows(batch)
        if self.map is not None:
            ids = self.map(sid)
            mapped = ids != UNMAPPED
            if not mapped.all():
                self.unmapped_rows += int(len(ids) - np.count_nonzero(mapped))
                sid, ts, value, kind, flag, ids = (
                    a[mapped] for a in (sid, ts, value, kind, flag, ids)
                )
                batch = batch.filter(pa.array(mapped))
            entity_ids = ids.astype(np.int32)
        else:
            entity_ids = sid
        if self.watermark > INT64_MIN:
            late = ts < self.watermark
            if late.any():
                self.late_rows += int(np.count_nonzero(late))
                self._late.append(batch.filter(pa.array(late)))
                keep = ~late
                sid, ts, value, kind, flag, entity_ids = (
                    a[keep] for a in (sid, ts, value, kind, flag, entity_ids)
                )
        n = len(ts)
        if n == 0:
            return []
        if self._n_pend + n > len(self._pend):
            grown = np.empty(max(self._n_pend + n, 2 * len(self._pend), 1024), ROW)
            grown[: self._n_pend] = self._pend[: self._n_pend]
            self._pend = grown
        rows = self._pend[self._n_pend : self._n_pend + n]
        rows["entity"] = self.store.entities(entity_ids)
        rows["sensor_id"], rows["ts"], rows["value"] = sid, ts, value
        rows["kind"], rows["flag"] = kind, flag
        self._n_pend += n
        return []

    def take_late(self) -> list[pa.RecordBatch]:
        late, self._late = self._late, []
        return late

    def on_watermark(self, watermark_ns: int) -> list[pa.RecordBatch]:
        watermark_ns = as_watermark_ns(watermark_ns)
        if watermark_ns <= self.watermark:
            return []
        self.watermark = watermark_ns
        rows = self._release(watermark_ns)
        failed: list[np.ndarray] = []
        events, states = self._run(rows, failed) if len(rows) else (self._zero[:0], None)
        if self._python is not None:
            more = self._python.fire(watermark_ns, failed)
            if len(more[0]):
                events = np.concatenate([events, more[0]])
                states = None if states is None else np.concatenate([states, more[1]])
        if watermark_ns < MAX_WATERMARK:
            idle = self.options.idle_ms * 1_000_000
            before = watermark_ns - idle if idle else INT64_MIN
            gone = self.store.passivate_idle(before, self.options.max_active)
            if self._python is not None and len(gone):
                self._python.stopped(gone)
        self.supervisor.forget_attempts()
        self._side.extend((ACTOR_FAILURE, b) for b in self._failures(failed))
        return self._events(events, states)

    def _release(self, watermark: int) -> np.ndarray:
        """The held rows below ``watermark``, each entity's in (ts, kind, arrival) order."""
        n = self._n_pend
        pend = self._pend[:n]
        below = pend["ts"] < watermark
        if below.all():
            rows = pend.copy() if self._python is not None else pend
            self._n_pend = 0
        else:
            rows = pend[below]
            rest = pend[~below]
            self._pend[: len(rest)] = rest
            self._n_pend = len(rest)
        if not len(rows):
            return rows
        if self._python is not None or not _in_order_kernel(
            rows, self.store.last_ts, self.store.last_kind
        ):
            rows = rows[np.lexsort((rows["kind"], rows["ts"], rows["entity"]))]
        self.rows_seen += len(rows)
        return rows

    # -- running rows

    def _run(self, rows: np.ndarray, failed: list[np.ndarray]) -> tuple[np.ndarray, Any]:
        if self._python is not None:
            return self._python.run(rows, failed)
        out = np.empty(len(rows), self.spec.event_dtype)
        out_state = np.empty(len(rows) if self.options.with_state else 0, self.spec.state_dtype)
        assert isinstance(self.actor, VectorActor)
        step, apply = type(self.actor).step, type(self.actor).apply
        params, store = self.actor.params(), self.store
        pos = n_out = 0
        while True:
            pos, n_out, status, code = _run_kernel(
                step, apply, params, rows, pos, store.arrays, store.initial, self._zero,
                out, n_out, self._keep, out_state,
            )  # fmt: skip
            if status == DONE:
                break
            if status == NEED_ACTIVE:
                store.grow_active(max(len(store.state), 64))
                continue
            row = rows[pos]
            error = self.spec.error_name(int(code))
            if self.fail(int(row["entity"]), row, pos, error):
                failed.append(self.failure_rows(rows[pos : pos + 1], error))
                pos += 1
        return out[:n_out], (out_state[:n_out] if self.options.with_state else None)

    def fail(self, entity: int, row: np.ndarray, pos: int, error: str) -> bool:
        """Supervise a failure of ``entity`` at ``row``; True when the row is given up."""
        entity_id = int(self.store.keys.keys[entity])
        what = (
            f"actor {self.spec.name}: entity {self.options.key}={entity_id} failed at "
            f"ts {int(row['ts'])} (sensor {int(row['sensor_id'])}): {error}"
        )
        decision = self.supervisor.failed(entity, int(row["ts"]), pos, self.rows_seen, what)
        group = self.restart_group(entity)
        if not decision.restart:
            self.store.status[group] = 1  # temporary: stopped
        if self._python is not None:
            self._python.restarted(entity, group, decision.restart)
        return decision.give_up

    def restart_group(self, entity: int) -> np.ndarray:
        """The entity numbers the strategy restarts with ``entity``."""
        strategy = self.options.strategy
        if strategy == "one_for_one":
            return np.array([entity], np.int32)
        held = np.flatnonzero((self.store.act >= 0) | (self.store.pas >= 0)).astype(np.int32)
        held = np.union1d(held, [entity]).astype(np.int32)
        if strategy == "rest_for_one":  # it and those activated after it
            return held[held >= entity]
        groups = key_group(self.store.keys.keys[held], DEFAULT_KEY_GROUPS)
        mine = key_group(self.store.keys.keys[[entity]], DEFAULT_KEY_GROUPS)[0]
        return held[groups == mine]

    def failure_rows(self, rows: np.ndarray, error: str) -> np.ndarray:
        """Rows given up (a record array with the error's name beside)."""
        out = np.empty(len(rows), [("row", ROW), ("error", object)])
        out["row"], out["error"] = rows, error
        return out

    # -- outputs

    def _failures(self, failed: list[np.ndarray]) -> list[pa.RecordBatch]:
        if not failed:
            return []
        rows = np.concatenate(failed)
        r = rows["row"]
        columns = [
            pa.array(r["sensor_id"], pa.int32()),
            arrow_column(r["ts"], TS_NS),
            pa.array(r["value"], pa.float64()),
            pa.array(r["flag"].astype(np.uint8), pa.uint8()),
            pa.array(r["kind"], pa.int8()),
            pa.array(self.store.keys.keys[r["entity"]], pa.int32()),
            pa.array(rows["error"].tolist(), pa.string()),
        ]
        return [pa.RecordBatch.from_arrays(columns, schema=ACTOR_FAILURES)]

    def _events(self, events: np.ndarray, states: np.ndarray | None) -> list[pa.RecordBatch]:
        if self.options.journal and len(events):
            self._journal.append(events.copy())
        if len(events) and self.options.journal:
            emitted = self.spec.emitted[events["type"]]
            events = events[emitted]
            states = None if states is None else states[emitted]
        if not len(events):
            return []
        ids = self.store.keys.keys[events["entity"]]
        ts = events["ts"]
        if len(ts) > 1 and not (ts[1:] > ts[:-1]).all():  # rows came in ts order: sorted
            order = np.lexsort((events["seq"], ids, ts))
            events, ids = events[order], ids[order]
            states = None if states is None else states[order]
        return [self._event_batch(events, ids, states)]

    def _event_batch(
        self, events: np.ndarray, ids: np.ndarray, states: np.ndarray | None
    ) -> pa.RecordBatch:
        spec = self.spec
        schema = spec.output_schema(self.options.key, self.options.with_state)
        codes = events["type"]
        names = pa.array(["", *spec.event_names], pa.string())
        columns: list[pa.Array] = [
            pa.array(ids, pa.int32()),
            arrow_column(events["ts"], TS_NS),
            pa.array(events["seq"], pa.int64()),
            names.take(pa.array(codes.astype(np.int32))),
        ]
        for name in spec.event_dtype.names[4:]:
            has = np.array([name in p for p in spec.payload], bool)
            valid = np.r_[False, has][codes]
            columns.append(pa.array(np.ascontiguousarray(events[name]), mask=~valid))
        if states is not None:
            for name in spec.state_dtype.names:
                columns.append(pa.array(np.ascontiguousarray(states[name])))
        return pa.RecordBatch.from_arrays(columns, schema=schema)

    def take_side(self) -> list[tuple[str, pa.RecordBatch]]:
        """Side outputs since the last call: ``actor_failure`` rows, and at a barrier the
        ``actor_events`` and ``actor_snapshots`` rows (``SideLogic``)."""
        side, self._side = self._side, []
        return side

    def on_barrier(self, checkpoint_id: int) -> None:
        """With ``journal``: the events applied since the last barrier, and snapshot rows
        of the entities ``snapshot_every`` events past their last one, to ``take_side``."""
        if not self.options.journal:
            return
        events = self.take_journal()
        self._side.append((ACTOR_EVENTS, event_rows(self.spec, *events, checkpoint_id)))
        snapshots = self._due_snapshots(checkpoint_id)
        self._side.append((ACTOR_SNAPSHOTS, snapshots))

    def take_journal(self) -> tuple[np.ndarray, np.ndarray]:
        """Every event applied since the last call (``journal: true``): ``(entity ids,
        event records)`` in the order applied."""
        if not self._journal:
            return np.zeros(0, np.int32), self._zero[:0]
        events = np.concatenate(self._journal) if len(self._journal) > 1 else self._journal[0]
        self._journal = []
        return self.store.keys.keys[events["entity"]], events

    def _due_snapshots(self, checkpoint_id: int) -> pa.RecordBatch:
        store = self.store
        n = store.keys.n
        self._store_seq = _grown(self._store_seq, n)
        due = np.flatnonzero(
            store.seq[:n] - self._store_seq[:n] >= self.options.snapshot_every
        ).astype(np.int32)
        if len(due):
            entities, records = store.held()
            at = np.flatnonzero(np.isin(entities, due))
            entities, records = entities[at], records[at]
        else:
            entities, records = due, np.zeros(0, store.dtype)
        self._store_seq[entities] = store.seq[entities]
        return snapshot_rows(
            self.spec, store.keys.keys[entities], store.seq[entities], store.status[entities],
            records, checkpoint_id,
        )  # fmt: skip

    # -- state

    def counters(self) -> dict[str, int]:
        mailbox = self._python.counters() if self._python is not None else {}
        return {
            **self.store.counters(),
            "rows": self.rows_seen,
            "late_rows": self.late_rows,
            "unmapped_rows": self.unmapped_rows,
            "restarts": self.supervisor.restarts,
            "failures": self.supervisor.failures,
            "dead_letter_rows": self.supervisor.dead_letters,
            **mailbox,
        }

    @property
    def entities_at(self) -> str:
        """Where a checkpoint keeps the entities' state: ``checkpoint`` (no journal),
        ``store`` (the event store only) or ``both`` (``check_store``)."""
        if not self.options.journal:
            return CHECKPOINT
        return BOTH if self.options.check_store else STORE

    def snapshot(self) -> State:
        """The stage's state. With ``journal`` the entities' state is in the event store
        (every event applied is in its rows of this checkpoint), so only what it does
        not hold is here: held rows, timers, stopped entities, counters."""
        held = self._pend[: self._n_pend]
        timers = self._python.timer_rows() if self._python is not None else _no_timers()
        entities: State = {}
        if self.entities_at != STORE:
            entities = self.store.snapshot()
            numbers = self.store.entities(as_array(entities["sensor_id"], np.int32))
            self._store_seq = _grown(self._store_seq, self.store.keys.n)
            entities["store_seq"] = self._store_seq[numbers].copy()
        n = self.store.keys.n
        stopped = np.flatnonzero(self.store.status[:n] == STOPPED)
        return {
            **entities,
            "entities_at": self.entities_at,
            "stopped_sensor_id": np.sort(self.store.keys.keys[stopped]).astype(np.int32),
            "buffer_sensor_id": self.store.keys.keys[held["entity"]].copy(),
            "buffer_source": held["sensor_id"].copy(),
            "buffer_ts": held["ts"].copy(),
            "buffer_value": held["value"].copy(),
            "buffer_kind": held["kind"].copy(),
            "buffer_flag": held["flag"].copy(),
            **timers,
            "watermark": self.watermark,
            "late_rows": self.late_rows,
            "unmapped_rows": self.unmapped_rows,
            "rows_seen": self.rows_seen,
            **self.supervisor.snapshot(),
        }

    def restore(self, state: State) -> None:
        """Load a snapshot; one whose entities are in the event store (``entities_at:
        store``) must come with them, as ``recovery.with_store`` adds them."""
        at = state["entities_at"]
        if at != self.entities_at:
            raise ValueError(f"entities_at {at!r}, the step keeps them at {self.entities_at!r}")
        if "sensor_id" not in state:
            raise ValueError(
                "its entities' state is in the event store (actor_events, actor_snapshots) "
                "and was not read back: restore through telepipe.operators.actors.with_store"
            )
        self.store.restore(state)
        numbers = self.store.entities(as_array(state["sensor_id"], np.int32))
        self._store_seq = _grown(np.zeros(0, np.int64), self.store.keys.n)
        self._store_seq[numbers] = as_array(state["store_seq"], np.int64)
        stopped = self.store.entities(as_array(state["stopped_sensor_id"], np.int32))
        n = self.store.keys.n
        self.store.status[:n] = 0
        self.store.status[stopped] = STOPPED
        self._store_seq = _grown(self._store_seq, n)
        ids = as_array(state["buffer_sensor_id"], np.int32)
        n = len(ids)
        self._pend = np.empty(max(n, 1024), ROW)
        rows = self._pend[:n]
        rows["entity"] = self.store.entities(ids)
        rows["sensor_id"] = as_array(state["buffer_source"], np.int32)
        rows["ts"] = as_array(state["buffer_ts"], np.int64)
        rows["value"] = as_array(state["buffer_value"], np.float64)
        rows["kind"] = as_array(state["buffer_kind"], np.int8)
        rows["flag"] = as_array(state["buffer_flag"], np.int8)
        self._n_pend = n
        timers = {k: state[k] for k in ("timer_sensor_id", "timer_ts", "timer_tag")}
        if self._python is not None:
            self._python.restore_timers(timers)
        self.watermark = as_int(state["watermark"])
        self.late_rows = as_int(state["late_rows"])
        self.unmapped_rows = as_int(state["unmapped_rows"])
        self.rows_seen = as_int(state["rows_seen"])
        self.supervisor.restore(
            {k: state[k] for k in ("restart_stamps", "restarts", "failures", "dead_letter_rows")}
        )


def _no_timers() -> State:
    return {
        "timer_sensor_id": np.zeros(0, np.int32),
        "timer_ts": np.zeros(0, np.int64),
        "timer_tag": np.zeros(0, np.int64),
    }


def _grown(store_seq: np.ndarray, n: int) -> np.ndarray:
    if len(store_seq) >= n:
        return store_seq
    out = np.zeros(max(n, 2 * len(store_seq), 64), np.int64)
    out[: len(store_seq)] = store_seq
    return out
