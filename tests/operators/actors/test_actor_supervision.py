"""Supervision: a failing row is retried max_attempts times then goes out as an actor_failure
side output and the entity goes on; temporary stops entities (one_for_one, one_for_all
by key group, rest_for_one by activation order); too many restarts within a period
of event time or rows stops the run in one line naming the entity, the step, the error."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import reactivex
from actor_reference import batches_of, drive, frame, machine_reference

from telepipe.markers import SideOutput, Watermark
from telepipe.operators import ActorStage, EquipmentStateMachine
from telepipe.operators.actors import ACTOR_FAILURE, ActorError
from telepipe.operators.runtime.stage import step_of
from telepipe.state.key_groups import key_group

NAN = math.nan


def _rows() -> list:
    rows = [(s, t, 50.0 if t % 3 else 5.0, 0, 0) for t in range(1, 40) for s in (1, 2, 3)]
    rows[10] = (rows[10][0], rows[10][1], NAN, 0, 0)
    rows[70] = (rows[70][0], rows[70][1], NAN, 0, 0)
    return rows


def _op(**kw) -> ActorStage:
    return ActorStage(EquipmentStateMachine(nan_is_error=True), **kw)


def test_a_failing_row_is_retried_then_a_dead_letter_and_the_entity_goes_on() -> None:
    rows = _rows()
    logic = _op(max_attempts=3).build()
    items = drive(logic, rows, [20, 50], [True])
    side = logic.take_side()
    assert {tag for tag, _ in side} == {ACTOR_FAILURE}
    failed = [b for _, b in side]
    dead = pa.Table.from_batches(failed)
    assert dead.column("sensor_id").to_pylist() == [rows[10][0], rows[70][0]]
    assert set(dead.column("error").to_pylist()) == {"nan_reading"}
    c = logic.counters()
    assert (c["failures"], c["restarts"], c["dead_letter_rows"]) == (6, 6, 2)
    events, _ = machine_reference(rows, lambda s: s, 10.0, 90.0)  # NaN rows skipped
    got = frame(items)
    assert got["seq"].to_list() == [e[2] for e in events]


def test_the_side_output_is_in_band_under_the_step_name() -> None:
    items = [*batches_of(_rows()), Watermark(2**62)]
    seen: list = []
    reactivex.from_iterable(items).pipe(_op().named("m")).subscribe(seen.append)
    side = [i for i in seen if isinstance(i, SideOutput)]
    assert [(s.tag, s.step, s.batch.num_rows) for s in side] == [(ACTOR_FAILURE, "m", 2)]


def test_too_many_restarts_stop_the_run_in_one_line_naming_entity_step_and_error() -> None:
    errors: list[Exception] = []
    items = [*batches_of(_rows()), Watermark(2**62)]
    op = _op(max_restarts=2, period=1000, period_unit="rows")
    reactivex.from_iterable(items).pipe(op.named("machines")).subscribe(on_error=errors.append)
    (error,) = errors
    assert isinstance(error, ActorError) and step_of(error) == "machines"
    line = str(error)
    assert "\n" not in line
    assert f"entity sensor_id={_rows()[10][0]}" in line and "nan_reading" in line
    assert "more than 2 restarts within 1000 rows" in line


def test_restarts_outside_the_event_time_period_do_not_add_up() -> None:
    rows = [(1, t * 1_000_000_000, NAN if t % 10 == 0 else 1.0, 0, 0) for t in range(1, 60)]
    logic = _op(max_restarts=1, max_attempts=1, period=5_000).build()
    drive(logic, rows, [], [True])  # one failure per 10 s: never two within 5 s
    assert logic.counters()["dead_letter_rows"] == 5
    logic = _op(max_restarts=1, max_attempts=1, period=30_000).build()
    with pytest.raises(ActorError, match="more than 1 restarts within 30000 ms of event time"):
        drive(logic, rows, [], [True])


def _stopped(strategy: str) -> set[int]:
    sensors = list(range(1, 30))
    rows = [(s, 1, 5.0, 0, 0) for s in sensors]  # activation order: 1, 2, ...
    rows += [(7, 2, NAN, 0, 0)] + [(s, 3, 50.0, 0, 0) for s in sensors]
    logic = _op(restart="temporary", strategy=strategy).build()
    drive(logic, rows, [len(sensors)], [True])
    snap = logic.snapshot()
    return set(snap["sensor_id"][snap["status"] == 1].tolist())


def test_temporary_entities_stop_by_strategy() -> None:
    assert _stopped("one_for_one") == {7}
    assert _stopped("rest_for_one") == set(range(7, 30))
    groups = key_group(np.arange(1, 30, dtype=np.int32))
    same = {
        s for s, g in zip(range(1, 30), groups, strict=True) if g == key_group(np.array([7]))[0]
    }
    assert _stopped("one_for_all") == same
