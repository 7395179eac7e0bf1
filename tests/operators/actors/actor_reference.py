"""Plain-Python references for the built-in actors, and helpers to drive an actor stage.

The references take every entity's rows in (ts, kind, arrival) order, one at a time,
with a dict per entity: what ``ActorStage`` must equal however its input is cut.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from telepipe.markers import MAX_WATERMARK
from telepipe.schema import READINGS, TS_NS

Row = tuple[int, int, float, int, int]  # sensor_id, ts, value, kind, flag
ALARM_ROWS = pa.schema(
    [
        pa.field("sensor_id", pa.int32(), nullable=False),
        pa.field("ts", TS_NS, nullable=False),
        pa.field("state", pa.int8(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
    ]
)


def batches_of(rows: Sequence[Row]) -> list[pa.RecordBatch]:
    """Rows as input batches: runs of readings (kind 0) and of alarm rows (kind 1)."""
    out: list[pa.RecordBatch] = []
    i = 0
    while i < len(rows):
        j = i
        while j < len(rows) and rows[j][3] == rows[i][3]:
            j += 1
        part = rows[i:j]
        sid = pa.array([r[0] for r in part], pa.int32())
        ts = pa.array([r[1] for r in part], pa.int64()).cast(TS_NS)
        value = pa.array([r[2] for r in part], pa.float64())
        if rows[i][3] == 0:
            quality = pa.array([r[4] for r in part], pa.uint8())
            out.append(pa.RecordBatch.from_arrays([sid, ts, value, quality], schema=READINGS))
        else:
            state = pa.array([r[4] for r in part], pa.int8())
            out.append(pa.RecordBatch.from_arrays([sid, ts, state, value], schema=ALARM_ROWS))
        i = j
    return out


def drive(logic, rows: Sequence[Row], cuts: Sequence[int], marks: Sequence[int]) -> list:
    """Feed ``rows`` to ``logic`` cut at ``cuts``, a watermark after each cut at the smallest
    ts still to come (never making a row late) when ``marks`` says so, then the end."""
    items: list = []
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(rows))), len(rows)]
    for k in range(len(bounds) - 1):
        part = rows[bounds[k] : bounds[k + 1]]
        for batch in batches_of(part):
            items.extend(logic.on_batch(batch))
        rest = rows[bounds[k + 1] :]
        if rest and marks[k % len(marks)]:
            items.extend(logic.on_watermark(min(r[1] for r in rest)))
    items.extend(logic.on_watermark(MAX_WATERMARK))
    return items


def frame(batches: list) -> pl.DataFrame:
    kept = [b for b in batches if isinstance(b, pa.RecordBatch) and b.num_rows]
    if not kept:
        return pl.DataFrame()
    return pl.from_arrow(pa.Table.from_batches(kept))  # type: ignore[return-value]


def ordered(rows: Sequence[Row], entity_of) -> list[tuple[int, Row]]:
    """Rows with their entity, in each entity's (ts, kind, arrival) order."""
    keyed = [(entity_of(r[0]), r[1], r[3], i, r) for i, r in enumerate(rows)]
    keyed = [k for k in keyed if k[0] is not None]
    keyed.sort(key=lambda k: (k[0], k[1], k[2], k[3]))
    return [(k[0], k[4]) for k in keyed]


def counter_reference(rows: Sequence[Row], every: int) -> tuple[list[tuple], dict]:
    """``(events as (entity, ts, seq, count), state by entity)`` of ``Counter``."""
    state: dict[int, dict] = {}
    events = []
    for e, r in ordered(rows, lambda s: s):
        s = state.setdefault(e, {"count": 0, "last_ts": 0, "seq": 0})
        s["count"] += 1
        s["last_ts"] = r[1]
        s["seq"] += 1
        if every and s["count"] % every == 0:
            events.append((e, r[1], s["seq"], s["count"]))
    return sorted(events, key=lambda ev: (ev[1], ev[0], ev[2])), state


def machine_reference(
    rows: Sequence[Row], entity_of, run_level: float, fault_level: float, maint: int = 2
) -> tuple[list[tuple], dict]:
    """``(events as (entity, ts, seq, event, from, to, duration), state by entity)`` of
    ``EquipmentStateMachine`` (NaN readings skipped)."""
    state: dict[int, dict] = {}
    events = []
    for e, r in ordered(rows, entity_of):
        s = state.setdefault(
            e, {"state": 0, "alarms": 0, "since": None, "changes": 0, "seq": 0,
                "time": [0, 0, 0, 0]},
        )  # fmt: skip
        _, ts, value, kind, flag = r
        alarms = s["alarms"]
        if kind == 1:
            alarms = max(0, alarms + (1 if flag else -1))
            target = 2 if alarms else (0 if s["state"] == 2 else s["state"])
        else:
            if math.isnan(value):
                continue
            if flag == maint:
                target = 3
            elif alarms or value >= fault_level:
                target = 2
            elif value >= run_level:
                target = 1
            else:
                target = 0
        if s["since"] is None:
            s["seq"] += 1
            events.append((e, ts, s["seq"], "started", s["state"], target, 0))
            s.update(state=target, since=ts, alarms=alarms)
        elif target != s["state"]:
            s["seq"] += 1
            duration = ts - s["since"]
            events.append((e, ts, s["seq"], "changed", s["state"], target, duration))
            s["time"][s["state"]] += duration
            s.update(state=target, since=ts, alarms=alarms, changes=s["changes"] + 1)
        elif alarms != s["alarms"]:
            s["seq"] += 1
            s["alarms"] = alarms
    return sorted(events, key=lambda ev: (ev[1], ev[0], ev[2])), state


def random_rows(rng: np.random.Generator, n: int, sensors: int, alarms: bool) -> list[Row]:
    """Rows whose ts wander a little (out of order per sensor, ties)."""
    rows: list[Row] = []
    for i in range(n):
        sid = int(rng.integers(0, sensors))
        ts = int(i // 3 + rng.integers(0, 6))
        if alarms and rng.random() < 0.15:
            rows.append((sid, ts, 0.0, 1, int(rng.integers(0, 2))))
        else:
            value = float(rng.choice([0.0, 5.0, 15.0, 50.0, 95.0]))
            rows.append((sid, ts, value, 0, int(rng.choice([0, 0, 0, 2]))))
    return rows


def with_arrow_state(snapshot: dict) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in snapshot.items()}
