"""What an ``ActorStage`` takes: its actor type (an instance, or a component's name with
params), and input rows of readings or of an earlier step's alarms."""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import pyarrow as pa

from telepipe.errors import ConfigError, SchemaError
from telepipe.operators.actors.spec import ALARM, ActorType
from telepipe.operators.runtime.snapshot import options_json

_OWNER = "ActorStage"


def actor_of(actor: object, params: object) -> ActorType:
    if isinstance(actor, ActorType):
        if params not in (None, {}) and params != options_json(actor):  # type: ignore[arg-type]
            raise ConfigError(f"{_OWNER}.params: give an actor instance or a name with params")
        if not dataclasses.is_dataclass(actor):
            raise ConfigError(f"{_OWNER}.actor: {type(actor).__name__} must be a dataclass")
        return actor
    if not isinstance(actor, str):
        raise ConfigError(f"{_OWNER}.actor must name an actor type, got {actor!r}")
    from telepipe.targets import resolve

    name = resolve(actor, f"{_OWNER}.actor").split(".")
    module = importlib.import_module(".".join(name[:-1]))
    cls = getattr(module, name[-1])
    if not (isinstance(cls, type) and issubclass(cls, ActorType)):
        raise ConfigError(f"{_OWNER}.actor: {actor!r} is not an actor type")
    if params is not None and not isinstance(params, dict):
        raise ConfigError(f"{_OWNER}.params must be a mapping, got {params!r}")
    try:
        return cls(**(params or {}))
    except TypeError as error:
        raise ConfigError(f"{_OWNER}.params: {error}") from None


def input_rows(batch: pa.RecordBatch) -> tuple[np.ndarray, ...]:
    """``(sensor_id int32, ts int64, value float64, kind int8, flag int8)`` of a readings
    or alarms batch."""
    names = batch.schema.names
    for column in ("sensor_id", "ts", "value"):
        if column not in names:
            raise SchemaError(f"{_OWNER}: input rows need a {column!r} column, got {names}")
    try:
        sid = batch.column("sensor_id").to_numpy().astype(np.int32, copy=False)
        ts = batch.column("ts").cast(pa.int64()).to_numpy()
        value = batch.column("value").to_numpy().astype(np.float64, copy=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as error:
        raise SchemaError(f"{_OWNER}: input columns: {error}") from None
    n = len(ts)
    if "state" in names:
        kind = np.full(n, ALARM, np.int8)
        flag = batch.column("state").to_numpy().astype(np.int8)
    elif "start_ts" in names:
        kind, flag = np.full(n, ALARM, np.int8), np.ones(n, np.int8)
    else:
        kind = np.zeros(n, np.int8)
        q = batch.column("quality").to_numpy() if "quality" in names else np.zeros(n, np.uint8)
        flag = q.astype(np.int8)
    return sid, ts, value, kind, flag
