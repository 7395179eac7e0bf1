"""What an actor type declares: its state columns, its event types, and how it runs.

An actor type is a frozen dataclass (its fields are its parameters, JSON values) with
class attributes:

- ``state``: ``{column: numpy dtype}``, the per-entity state, one slot per entity;
  ``initial``: ``{column: value}`` for a fresh entity (zeros otherwise);
- ``events``: ``{event type: {payload column: numpy dtype}}``; a type's code is its
  1-based position (the first type is 1); ``internal``: the types that change state
  but are not emitted as output rows (a counter's tick);
- ``errors``: ``{error code (< 0): name}`` for the codes a vectorised ``step`` returns.

Two ways to run it:

- ``VectorActor`` (the fast path): ``step(s, row, p, e) -> code`` and
  ``apply(s, e)``, both ``numba.njit`` functions, given as static methods. ``s`` is
  the entity's state record (read it, never write it), ``row`` the input row
  (``ts``, ``value``, ``kind`` 0 reading / 1 alarm, ``flag`` quality or alarm state,
  ``sensor_id``), ``p`` the tuple ``params()`` returns, ``e`` the event record to fill
  (its payload columns, zeroed first). ``step`` returns 0 (no event), an event code,
  or a negative error code. ``apply(s, e)`` is the only thing that changes state: a
  fold over events, used live and in recovery alike.
- ``PythonActor`` (the slow, flexible path): ``handle(entity, rows, ctx) -> events``,
  ``apply(state, event) -> state``, ``on_start/on_stop/on_failure``, timers and
  messages through ``ctx`` (``python_path``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pyarrow as pa

from telepipe.errors import ConfigError
from telepipe.schema import TS_NS

#: The input row a ``step`` sees (a record of this dtype).
ROW = np.dtype(
    [
        ("entity", np.int32),  # the entity's number in the stage (internal)
        ("sensor_id", np.int32),
        ("ts", np.int64),
        ("value", np.float64),
        ("kind", np.int8),  # 0: a reading, 1: an alarm row of an earlier step
        ("flag", np.int8),  # a reading's quality, an alarm's state (1 entered, 0 left)
    ],
    align=True,
)
READING, ALARM = 0, 1
#: Columns every event record starts with; payload columns follow.
EVENT_HEAD = (("entity", np.int32), ("type", np.int8), ("seq", np.int64), ("ts", np.int64))


class Event(NamedTuple):
    """An event of the Python-class path: ``type`` (a declared name), ``ts`` (ns),
    ``data`` (its payload columns by name; missing ones are 0)."""

    type: str
    ts: int
    data: Mapping[str, Any] = {}


class ActorType:
    """Base of actor types (see the module docstring); subclasses are frozen dataclasses."""

    state: ClassVar[Mapping[str, Any]] = {}
    initial: ClassVar[Mapping[str, Any]] = {}
    events: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    internal: ClassVar[frozenset[str]] = frozenset()
    errors: ClassVar[Mapping[int, str]] = {}

    def params(self) -> tuple[Any, ...]:
        """What a vectorised ``step`` gets as ``p``: a tuple of numbers."""
        return ()


class VectorActor(ActorType):
    """An actor of the fast path: ``step`` and ``apply`` are ``numba.njit`` functions."""

    step: ClassVar[Callable[..., int]]
    apply: ClassVar[Callable[..., None]]


class PythonActor(ActorType):
    """An actor of the Python-class path (``python_path``): override ``handle``,
    ``apply`` and any hook. One instance serves every entity of a stage; what an entity
    keeps is its state (the declared columns), changed only by ``apply``."""

    def handle(self, entity: int, rows: Any, ctx: Any) -> list[Event]:
        raise NotImplementedError

    def apply(self, state: dict[str, Any], event: Event) -> dict[str, Any]:
        raise NotImplementedError

    def on_start(self, entity: int, ctx: Any) -> None:
        """Called when an entity is activated (first row, reactivation, restart)."""

    def on_stop(self, entity: int, ctx: Any) -> None:
        """Called when an entity is passivated or stopped."""

    def on_failure(self, entity: int, error: BaseException, ctx: Any) -> None:
        """Called when ``handle``/``apply``/a timer or message handler raised for it."""

    def on_timer(self, entity: int, ts: int, tag: int, ctx: Any) -> list[Event]:
        """An event-time timer set with ``ctx.set_timer`` fired (the watermark passed)."""
        return []

    def on_message(self, entity: int, message: Any, ctx: Any) -> list[Event]:
        """A message another entity sent with ``ctx.send``."""
        return []


@dataclass(frozen=True)
class Spec:
    """An actor type's layout, checked: dtypes of state and events, codes, output schema."""

    name: str
    state_dtype: np.dtype
    initial: np.ndarray  # one state record
    event_dtype: np.dtype
    event_names: tuple[str, ...]  # by code - 1
    payload: tuple[tuple[str, ...], ...]  # each type's payload columns
    emitted: np.ndarray  # bool by code (0: none)
    errors: Mapping[int, str]

    def code(self, event: str) -> int:
        try:
            return self.event_names.index(event) + 1
        except ValueError:
            raise ConfigError(
                f"{self.name}: unknown event type {event!r} (declared: "
                f"{', '.join(self.event_names)})"
            ) from None

    def error_name(self, code: int) -> str:
        return self.errors.get(code, f"error code {code}")

    def output_schema(self, key: str, with_state: bool) -> pa.Schema:
        """entity key, ts, seq, event name, payload columns (null where the event type has
        none)[, the state after the event]."""
        fields = [
            pa.field(key, pa.int32(), nullable=False),
            pa.field("ts", TS_NS, nullable=False),
            pa.field("seq", pa.int64(), nullable=False),
            pa.field("event", pa.string(), nullable=False),
        ]
        for name in self.event_dtype.names[len(EVENT_HEAD) :]:  # type: ignore[index]
            fields.append(pa.field(name, pa.from_numpy_dtype(self.event_dtype[name])))
        if with_state:
            for name in self.state_dtype.names or ():
                dtype = self.state_dtype[name]
                fields.append(pa.field(f"state_{name}", pa.from_numpy_dtype(dtype), False))
        return pa.schema(fields)


_KINDS = "biuf"


def spec_of(actor: ActorType) -> Spec:
    """The checked layout of ``actor``'s type (``ConfigError`` naming what is wrong)."""
    cls = type(actor)
    name = cls.__name__
    if not cls.state:
        raise ConfigError(f"actor {name} declares no state columns (state = {{name: dtype}})")
    state = _dtype(name, "state", cls.state)
    reserved = {n for n, _ in EVENT_HEAD}
    columns: dict[str, np.dtype] = {}
    payload = []
    if not cls.events:
        raise ConfigError(f"actor {name} declares no event types (events = {{type: {{...}}}})")
    if len(cls.events) > 127:
        raise ConfigError(f"actor {name} declares {len(cls.events)} event types, at most 127")
    for event, fields in cls.events.items():
        dtype = _dtype(name, f"events[{event!r}]", fields)
        for column in dtype.names or ():
            if column in reserved:
                raise ConfigError(f"actor {name}: event {event!r} column {column!r} is reserved")
            if column in columns and columns[column] != dtype[column]:
                raise ConfigError(
                    f"actor {name}: payload column {column!r} is {columns[column]} in one "
                    f"event type and {dtype[column]} in another"
                )
            columns[column] = dtype[column]
        payload.append(tuple(dtype.names or ()))
    unknown = set(cls.internal) - set(cls.events)
    if unknown:
        raise ConfigError(f"actor {name}: internal names unknown event types {sorted(unknown)}")
    for code in cls.errors:
        if not isinstance(code, int) or code >= 0:
            raise ConfigError(f"actor {name}: error codes are negative integers, got {code!r}")
    event_dtype = np.dtype([*EVENT_HEAD, *columns.items()], align=True)
    initial = np.zeros(1, state)
    for column, value in cls.initial.items():
        if column not in (state.names or ()):
            raise ConfigError(f"actor {name}: initial value for unknown column {column!r}")
        initial[column] = value
    emitted = np.zeros(len(cls.events) + 1, bool)
    emitted[1:] = [e not in cls.internal for e in cls.events]
    return Spec(
        name, state, initial, event_dtype, tuple(cls.events), tuple(payload), emitted,
        dict(cls.errors),
    )  # fmt: skip


def _dtype(owner: str, what: str, fields: Mapping[str, Any]) -> np.dtype:
    out = []
    for column, kind in fields.items():
        if not isinstance(column, str) or not column.isidentifier():
            raise ConfigError(f"actor {owner}: {what} column {column!r} is not a name")
        dtype = np.dtype(kind)
        if dtype.kind not in _KINDS or dtype.shape:
            raise ConfigError(
                f"actor {owner}: {what} column {column!r} must be a number dtype, got {dtype}"
            )
        out.append((column, dtype))
    return np.dtype(out, align=True)
