"""Key groups: a snapshot taken mid-stream, written to disk and loaded as two halves
(the key groups split in two) into two instances that are each fed the rest of the
input for their own keys, gives the same output rows as one instance fed everything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

from telepipe.markers import BatchLogic
from telepipe.operators import (
    CepPattern,
    Dedup,
    EwmaZScore,
    Flatline,
    HeartbeatTimeout,
    HysteresisAlarm,
    RateOfChange,
    Resample,
    SessionWindow,
    SlidingWindow,
    ThresholdAlarm,
    TumblingWindow,
)
from telepipe.operators.patterns.pattern import PatternStep
from telepipe.operators.runtime.snapshot import Snapshot, restore
from telepipe.schema import READINGS
from telepipe.state import key_group, key_group_range, read_checkpoint, write_checkpoint

MS = 1_000_000

OPERATORS = [
    TumblingWindow(size_ms=100),
    SlidingWindow(size_ms=200, slide_ms=50, aggregates=("count", "mean", "min", "max", "p50")),
    SessionWindow(gap_ms=40, allowed_lateness_ms=30),
    ThresholdAlarm(threshold=5.0, consecutive=2),
    HysteresisAlarm(enter=7.0, exit=3.0, consecutive=2),
    EwmaZScore(alpha=0.3, threshold=1.5, warmup=3),
    Flatline(min_readings=3, tolerance=0.5),
    RateOfChange(max_rate=100.0),
    Dedup(),
    HeartbeatTimeout(timeout_ms=60),
    Resample(interval_ms=20),
    CepPattern(
        "up_down",
        (
            PatternStep("up", "value > 6", contiguity="begin", quantifier="times(2)"),
            PatternStep("down", "value < 2", contiguity="followed_by"),
        ),
        within_ms=150,
    ),
]


def stream(seed: int) -> list[pa.RecordBatch | int]:
    """Batches of readings of 40 sensors (ids over the whole int32 range), a little out
    of order, each followed by a watermark (an int)."""
    rng = np.random.default_rng(seed)
    sensors = rng.choice(np.r_[rng.integers(-(2**31), 2**31 - 1, 36), 0, 1, 2, 3], 40, False)
    items: list[pa.RecordBatch | int] = []
    t = 0
    for _ in range(30):
        n = int(rng.integers(5, 60))
        ts = t + rng.integers(0, 30, n) * MS
        ts.sort()
        ts += rng.integers(-8, 8, n) * MS  # some disorder, some late rows
        value = np.round(rng.uniform(0, 10, n), 1)
        value[rng.random(n) < 0.2] = 4.0  # runs of equal values (flatline, dedup)
        sid = rng.choice(sensors, n).astype(np.int32)
        items.append(
            pa.RecordBatch.from_arrays(
                [
                    pa.array(sid),
                    pa.array(ts, pa.timestamp("ns")),
                    pa.array(value),
                    pa.array(np.zeros(n, np.uint8)),
                ],
                schema=READINGS,
            )
        )
        t += 25 * MS
        items.append(t - 10 * MS)
    return items


def feed(logic: BatchLogic, items: list[pa.RecordBatch | int]) -> list[pa.RecordBatch]:
    out: list[pa.RecordBatch] = []
    for item in items:
        if isinstance(item, pa.RecordBatch):
            out += logic.on_batch(item)
        else:
            out += logic.on_watermark(item)
        logic.take_late()
    return out


def own(items: list[pa.RecordBatch | int], groups: range) -> list[pa.RecordBatch | int]:
    """The items with only the rows of sensors in ``groups`` (watermarks all kept)."""
    lo, hi = groups.start, groups.stop
    out: list[pa.RecordBatch | int] = []
    for item in items:
        if isinstance(item, pa.RecordBatch):
            g = key_group(item.column("sensor_id").to_numpy())
            item = item.filter(pa.array((g >= lo) & (g < hi)))
        out.append(item)
    return out


def frame(batches: list[pa.RecordBatch]) -> pl.DataFrame:
    table = pa.Table.from_batches(batches) if batches else None
    if table is None or table.num_rows == 0:
        return pl.DataFrame()
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    df = df.drop([c for c in ("session_id",) if c in df.columns])  # numbered per instance
    keys = [c for c, t in df.schema.items() if not isinstance(t, pl.List)]
    return df.sort(keys, nulls_last=True)


@pytest.mark.parametrize("op", OPERATORS, ids=lambda op: type(op).__name__)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_halves_of_a_snapshot_give_what_one_instance_gives(
    op, seed: int, tmp_path: Path
) -> None:
    items = stream(seed)
    cut = len(items) // 2
    whole = op.build()
    feed(whole, items[:cut])
    state = {"decoder": {"watermark": 1}, "step": Snapshot.take(whole)}
    path = write_checkpoint(tmp_path, "app", "t", 7, state)
    after = feed(whole, items[cut:])

    halves = [key_group_range(i, 2) for i in range(2)]
    split: list[pa.RecordBatch] = []
    keyed = {k: 0 for k in state["step"].state if k == "sensor_id" or k.endswith("_sensor_id")}
    for groups in halves:
        checkpoint = read_checkpoint(tmp_path, path, groups)
        assert checkpoint.max_key_groups == 128 and checkpoint.decoder == {"watermark": 1}
        for k in keyed:
            ids = checkpoint.steps["step"].state[k]
            g = key_group(ids)
            assert ((g >= groups.start) & (g < groups.stop)).all()
            keyed[k] += len(ids)
        part = op.build()
        restore(part, checkpoint.steps["step"], "step")
        split += feed(part, own(items[cut:], groups))
    assert keyed == {k: len(state["step"].state[k]) for k in keyed}  # every row in one half
    assert sum(b.num_rows for b in after) > 0
    assert_frame_equal(frame(split), frame(after), check_exact=False, rel_tol=1e-9)


def _fmix32(x: int) -> int:
    """MurmurHash3's finaliser in plain Python: the reference for the vectorised one."""
    h = x & 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h


def test_key_groups_are_stable_and_spread() -> None:
    ids = np.arange(-500_000, 500_000, dtype=np.int32)
    g = key_group(ids)
    assert g.dtype == np.int32 and g.min() == 0 and g.max() == 127
    counts = np.bincount(g, minlength=128)
    assert counts.min() > 0.9 * counts.mean() and counts.max() < 1.1 * counts.mean()
    # fixed values: a snapshot taken today is cut the same way by any later telepipe
    some = [0, 1, 42, -1, -(2**31), 2**31 - 1, 123_456]
    assert key_group(np.array(some, np.int32)).tolist() == [_fmix32(x) % 128 for x in some]
    assert key_group(np.array(some, np.int32), 7).tolist() == [_fmix32(x) % 7 for x in some]
    assert key_group(np.array([0, 1, 42], np.int32)).tolist() == [0, 55, 92]
    assert [len(key_group_range(i, 3)) for i in range(3)] == [42, 43, 43]
    assert [key_group_range(i, 2) for i in range(2)] == [range(0, 64), range(64, 128)]
