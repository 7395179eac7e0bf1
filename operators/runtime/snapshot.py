"""``Snapshot``: a stage's state as a value, with what it was taken by and with.

``stage`` takes one at every checkpoint barrier and checks one, here and only here,
before a restore: the operator class, the logic's format version
(``BatchLogic.snapshot_version``) and the options (plain JSON values of the frozen
options dataclass) must all be the step's own. A mismatch is one line naming the
step and what differs.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from telepipe.errors import SnapshotError
from telepipe.markers import BatchLogic, StageOptions, State, StateValue

type JsonValue = bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None


@dataclass(frozen=True)
class Snapshot:
    """``operator``: the options' class name; ``version``: the logic's state format;
    ``options``: the options as JSON values; ``state``: the logic's flat state."""

    operator: str
    version: int
    options: dict[str, JsonValue]
    state: State

    @classmethod
    def take(cls, logic: BatchLogic) -> Snapshot:
        operator, version, options = identity(logic)
        return cls(operator, version, options, logic.snapshot())


def identity(logic: BatchLogic) -> tuple[str, int, dict[str, JsonValue]]:
    """``(operator class name, state format version, options as JSON values)``."""
    options = logic.options
    return type(options).__name__, type(logic).snapshot_version, options_json(options)


def options_json(options: StageOptions) -> dict[str, JsonValue]:
    """The options dataclass as plain JSON values (tuples as lists, nested dataclasses
    as mappings), as a manifest would hold them."""
    return {k: _json(v) for k, v in dataclasses.asdict(options).items()}


def _json(value: object) -> JsonValue:
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"an option value must be a JSON value, got {value!r}")


def restore(logic: BatchLogic, snapshot: object, step: str) -> None:
    """Load ``snapshot`` into ``logic`` after checking it is the step's own kind."""
    if not isinstance(snapshot, Snapshot):
        raise SnapshotError(
            f"step {step!r}: the saved state is not a telepipe Snapshot but a "
            f"{type(snapshot).__name__} (saved by an older telepipe?): start from an empty data_dir"
        )
    operator, version, options = identity(logic)
    if snapshot.operator != operator:
        raise SnapshotError(
            f"step {step!r}: the snapshot is a {snapshot.operator}'s, the step is a {operator}"
        )
    if snapshot.version != version:
        raise SnapshotError(
            f"step {step!r}: {operator} snapshot format {snapshot.version}, this telepipe "
            f"reads format {version}: start from an empty data_dir"
        )
    if snapshot.options != options:
        keys = sorted(set(snapshot.options) | set(options))
        differ = [k for k in keys if snapshot.options.get(k) != options.get(k)]
        taken = ", ".join(f"{k}={snapshot.options.get(k)!r}" for k in differ)
        mine = ", ".join(f"{k}={options.get(k)!r}" for k in differ)
        raise SnapshotError(
            f"step {step!r}: the {operator} snapshot was taken with {taken}, the step has {mine}"
        )
    logic.restore(snapshot.state)


def step_name(operator: str) -> str:
    """The name a stage gets when none is given: its operator's class name in snake
    case (``TumblingWindow`` -> ``tumbling_window``)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", operator).lower()


def as_int(value: StateValue) -> int:
    """A state's integer (a numpy integer too)."""
    if isinstance(value, str):
        raise TypeError(f"expected an integer in the state, got {value!r}")
    return int(value)


def as_array(value: StateValue, dtype: npt.DTypeLike) -> np.ndarray:
    """A state's array as ``dtype``."""
    return np.asarray(value, dtype)
