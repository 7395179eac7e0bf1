"""The Python-class path of ``ActorStage``: ``handle``/``apply`` per entity, timers, messages.

Per release (a watermark): each entity with rows gets one ``handle(entity, rows, ctx)``
call with its rows in event-time order, entities by ascending id; then the timers
below the watermark fire in ``(ts, entity, tag)`` order and the messages sent are
delivered in ``(ts, sender, send order)`` order, rounds until none is left. So a
replay (the same rows, the same watermarks) gives the same events however the input
was cut into batches.

A call is a transaction: its events are folded by ``apply`` into a copy of the
state, and the state, the events, the timers set and the messages sent are kept only
if every step succeeded. An exception is the entity's failure (``supervision``):
``on_failure`` is called and the call is tried again from the state it had, then,
``max_attempts`` failures in, its rows are handled one by one (each supervised the
same) and those that still fail go to the ``actor_failure`` side output.

Mailboxes are bounded (``mailbox_size`` per entity), with the queue policies:
``block`` (the full mailbox is delivered first: lossless, counted as blocked),
``drop_oldest``, ``drop_newest`` (counted as dropped), ``fail``
(``BackpressureError``).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from telepipe.errors import BackpressureError
from telepipe.markers import State
from telepipe.operators.actors._actor_kernels import STOPPED
from telepipe.operators.actors.spec import ROW, Event, PythonActor
from telepipe.operators.actors.supervision import ActorError
from telepipe.operators.runtime.snapshot import as_array

if TYPE_CHECKING:
    from telepipe.operators.actors.stage import ActorLogic

_MAX_ROUNDS = 1000


class Context:
    """What a handler gets: the entity's ``state`` (a copy: change it with events),
    ``entity`` (its id), ``ts`` (the event time of what it handles), ``watermark``;
    ``set_timer``, ``send`` and ``stop`` take effect if the call succeeds."""

    def __init__(self, entity: int, state: dict[str, Any], ts: int, watermark: int) -> None:
        self.entity = entity
        self.state = state
        self.ts = ts
        self.watermark = watermark
        self.timers: list[tuple[int, int]] = []
        self.sent: list[tuple[int, Any, int]] = []
        self.stopping = False

    def set_timer(self, ts: int, tag: int = 0) -> None:
        """Call ``on_timer(entity, ts, tag, ctx)`` once the watermark passes ``ts``."""
        self.timers.append((int(ts), int(tag)))

    def send(self, to: int, message: Any, ts: int | None = None) -> None:
        """Send ``message`` to entity ``to``'s ``on_message`` (after this release's rows),
        at event time ``ts`` (default ``ctx.ts``: the first row's of this call)."""
        self.sent.append((int(to), message, self.ts if ts is None else int(ts)))

    def stop(self) -> None:
        """Stop this entity normally (a ``permanent`` one is restarted, state kept)."""
        self.stopping = True


class PythonRunner:
    def __init__(self, logic: ActorLogic) -> None:
        self.logic = logic
        actor = logic.actor
        assert isinstance(actor, PythonActor)
        self.actor = actor
        self.spec = logic.spec
        self.store = logic.store
        self.names = self.spec.state_dtype.names
        self._timers: list[tuple[int, int, int]] = []  # heap of (ts, entity id, tag)
        self._timer_set: set[tuple[int, int, int]] = set()
        self._mail: dict[int, deque[tuple[int, int, int, Any]]] = {}
        self._send_seq = 0
        self._events: list[tuple[Any, ...]] = []
        self._states: list[np.ndarray] = []
        self._watermark = 0
        self.count = dict.fromkeys(
            ("mailbox_sent", "mailbox_delivered", "mailbox_dropped", "mailbox_blocked",
             "mailbox_max_depth", "timers_fired"), 0,
        )  # fmt: skip

    def counters(self) -> dict[str, int]:
        return dict(self.count)

    # -- a release

    def run(self, rows: np.ndarray, failed: list[np.ndarray]) -> tuple[np.ndarray, Any]:
        """``rows`` sorted by (entity, ts, kind): one ``handle`` per entity, by entity id."""
        self._watermark = self.logic.watermark
        e = rows["entity"]
        starts = np.flatnonzero(np.r_[True, e[1:] != e[:-1]])
        ends = np.r_[starts[1:], len(rows)]
        ids = self.store.keys.keys[e[starts]]
        for g in np.argsort(ids, kind="stable"):
            part = rows[starts[g] : ends[g]]
            entity = int(part["entity"][0])
            self._call(entity, part, int(starts[g]), failed, self._handler(part))
        self._deliver(failed)
        return self._take()

    def fire(self, watermark: int, failed: list[np.ndarray]) -> tuple[np.ndarray, Any]:
        """The timers below ``watermark`` (and the messages they send)."""
        self._watermark = watermark
        while self._timers and self._timers[0][0] < watermark:
            ts, entity_id, tag = heapq.heappop(self._timers)
            self._timer_set.discard((ts, entity_id, tag))
            self.count["timers_fired"] += 1
            entity = int(self.store.entities(np.array([entity_id], np.int32))[0])
            row = _row(entity, ts)
            self._call(entity, row, -1, failed, self._timer(ts, tag))
            self._deliver(failed)
        return self._take()

    def _handler(self, rows: np.ndarray) -> Callable[[Context], list[Event]]:
        return lambda ctx: self.actor.handle(ctx.entity, rows, ctx)

    def _timer(self, ts: int, tag: int) -> Callable[[Context], list[Event]]:
        return lambda ctx: self.actor.on_timer(ctx.entity, ts, tag, ctx)

    def _take(self) -> tuple[np.ndarray, Any]:
        events = np.array(self._events, self.spec.event_dtype)
        states = np.concatenate(self._states) if self._states else None
        if self.logic.options.with_state and states is None:
            states = np.zeros(0, self.spec.state_dtype)
        self._events, self._states = [], []
        return events, (states if self.logic.options.with_state else None)

    # -- one call, as a transaction under supervision

    def _call(
        self,
        entity: int,
        rows: np.ndarray,
        pos: int,
        failed: list[np.ndarray],
        handler: Callable[[Context], list[Event]],
    ) -> None:
        store, logic = self.store, self.logic
        if store.status[entity] == STOPPED:
            store.cnt[4] += len(rows)  # STOPPED_ROWS
            return
        entity_id = int(store.keys.keys[entity])
        ts = int(rows["ts"][0])
        while True:
            if store.act[entity] < 0:
                store.record(entity)
                self.actor.on_start(entity_id, self._context(entity, ts))
            record = store.record(entity)
            ctx = self._context(entity, ts)
            try:
                events = handler(ctx)
                state, applied = self._fold(ctx.state, events or [])
            except Exception as error:
                self.actor.on_failure(entity_id, error, ctx)
                reason = (str(error).splitlines() or [""])[0][:200]
                what = f"{type(error).__name__}{': ' + reason if reason else ''}"
                if logic.fail(entity, rows[0], pos, what):
                    if pos >= 0 and len(rows) > 1 and store.status[entity] != STOPPED:
                        for i in range(len(rows)):  # find the row(s) that keep failing
                            self._call(
                                entity,
                                rows[i : i + 1],
                                pos + i,
                                failed,
                                self._handler(rows[i : i + 1]),
                            )
                    elif pos >= 0:  # input rows (a timer or a message has none to give)
                        failed.append(logic.failure_rows(rows, what))
                    return
                continue
            self._commit(entity, record, state, applied, ctx)
            return

    def _context(self, entity: int, ts: int) -> Context:
        record = self.store.record(entity)
        state = {name: record[name][0].item() for name in self.names}
        return Context(int(self.store.keys.keys[entity]), state, ts, self._watermark)

    def _fold(self, state: dict[str, Any], events: list[Event]) -> tuple[Any, list[Event]]:
        """``apply`` over ``events`` from a copy of ``state``; the new state as a record."""
        record = np.zeros(1, self.spec.state_dtype)
        for event in events:
            if not isinstance(event, Event):
                raise TypeError(f"handle must return Event values, got {event!r}")
            code = self.spec.code(event.type)
            unknown = set(event.data) - set(self.spec.payload[code - 1])
            if unknown:
                raise ValueError(f"event {event.type!r} has no column(s) {sorted(unknown)}")
            state = self.actor.apply(dict(state), event)
        for name in self.names:
            record[name] = state[name]
        return record, list(events)

    def _commit(
        self, entity: int, record: np.ndarray, state: np.ndarray, events: list[Event], ctx: Context
    ) -> None:
        store = self.store
        keep = self.logic._keep
        names = self.spec.event_dtype.names[4:]
        for event in events:
            code = self.spec.code(event.type)
            store.seq[entity] += 1
            if keep[code]:
                payload = tuple(event.data.get(n, 0) for n in names)
                self._events.append((entity, code, int(store.seq[entity]), int(event.ts), *payload))
                if self.logic.options.with_state:
                    self._states.append(state.copy())
        record[:] = state
        for ts, tag in ctx.timers:
            key = (ts, ctx.entity, tag)
            if key not in self._timer_set:
                self._timer_set.add(key)
                heapq.heappush(self._timers, key)
        for to, message, ts in ctx.sent:
            self._post(to, ctx.entity, ts, message)
        if ctx.stopping:
            self.actor.on_stop(ctx.entity, ctx)
            if self.logic.options.restart == "permanent":
                self.actor.on_start(ctx.entity, ctx)
            else:
                store.status[entity] = STOPPED

    # -- messages

    def _post(self, to: int, sender: int, ts: int, message: Any) -> None:
        box = self._mail.setdefault(to, deque())
        options = self.logic.options
        self.count["mailbox_sent"] += 1
        if len(box) >= options.mailbox_size:
            policy = options.mailbox_policy
            if policy == "fail":
                raise BackpressureError(
                    f"ActorStage: the mailbox of entity {options.key}={to} is full "
                    f"({options.mailbox_size} messages, mailbox_policy fail)"
                )
            if policy == "drop_newest":
                self.count["mailbox_dropped"] += 1
                return
            if policy == "drop_oldest":
                box.popleft()
                self.count["mailbox_dropped"] += 1
            else:  # block: the receiver takes what it has first
                self.count["mailbox_blocked"] += 1
                self._deliver_box(to, [])
                box = self._mail.setdefault(to, deque())
        self._send_seq += 1
        box.append((ts, sender, self._send_seq, message))
        self.count["mailbox_max_depth"] = max(self.count["mailbox_max_depth"], len(box))

    def _deliver_box(self, to: int, failed: list[np.ndarray]) -> None:
        box = self._mail.pop(to, deque())
        for ts, _sender, _seq, message in box:
            self._message(to, ts, message, failed)

    def _message(self, to: int, ts: int, message: Any, failed: list[np.ndarray]) -> None:
        self.count["mailbox_delivered"] += 1
        entity = int(self.store.entities(np.array([to], np.int32))[0])
        self._call(
            entity, _row(entity, ts), -1, failed,
            lambda ctx: self.actor.on_message(ctx.entity, message, ctx),
        )  # fmt: skip

    def _deliver(self, failed: list[np.ndarray]) -> None:
        for _ in range(_MAX_ROUNDS):
            if not any(self._mail.values()):
                return
            mail = sorted(
                ((ts, sender, seq, to, message)
                 for to, box in self._mail.items() for ts, sender, seq, message in box),
                key=lambda m: m[:3],
            )  # fmt: skip
            self._mail = {}
            for ts, _sender, _seq, to, message in mail:
                self._message(to, ts, message, failed)
        raise ActorError(
            f"actor {self.spec.name}: messages still flowing after {_MAX_ROUNDS} rounds "
            "in one release (entities answering each other forever?)"
        )

    # -- lifecycle and state

    def stopped(self, entities: np.ndarray) -> None:
        """Entities were passivated."""
        for entity in entities:
            entity_id = int(self.store.keys.keys[entity])
            self.actor.on_stop(entity_id, Context(entity_id, {}, self._watermark, self._watermark))

    def restarted(self, entity: int, group: np.ndarray, restart: bool) -> None:
        for e in group:
            entity_id = int(self.store.keys.keys[e])
            ctx = Context(entity_id, {}, self._watermark, self._watermark)
            self.actor.on_stop(entity_id, ctx)
            if restart and self.store.status[e] != STOPPED:
                self.actor.on_start(entity_id, ctx)

    def timer_rows(self) -> State:
        timers = sorted(self._timers)
        return {
            "timer_sensor_id": np.array([t[1] for t in timers], np.int32),
            "timer_ts": np.array([t[0] for t in timers], np.int64),
            "timer_tag": np.array([t[2] for t in timers], np.int64),
        }

    def restore_timers(self, state: State) -> None:
        ids = as_array(state["timer_sensor_id"], np.int32)
        ts = as_array(state["timer_ts"], np.int64)
        tags = as_array(state["timer_tag"], np.int64)
        for key in zip(ts.tolist(), ids.tolist(), tags.tolist(), strict=True):
            if key not in self._timer_set:
                self._timer_set.add(key)
                heapq.heappush(self._timers, key)


def _row(entity: int, ts: int) -> np.ndarray:
    """The stand-in row of a timer or a message (sensor -1)."""
    row = np.zeros(1, ROW)
    row["entity"], row["sensor_id"], row["ts"] = entity, -1, ts
    return row
