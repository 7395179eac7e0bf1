"""The memory sink: rows commit at barriers and at a table's end, an abort discards
what was not committed, and a run into it makes nothing on disk (no data dir, no lock)."""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from dead_letter_data import telemetry, write_capture

from telepipe.config import load
from telepipe.markers import CheckpointBarrier
from telepipe.pipelines.assembly import Opens, configure
from telepipe.pipelines.registry import sink_kind
from telepipe.sinks.memory import MemorySink, MemorySinkOptions, MemoryStore

SCHEMA = pa.schema([("x", pa.int64())])


def batch(*values: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({"x": list(values)}, schema=SCHEMA)


def test_rows_commit_at_barriers_and_at_the_end() -> None:
    store = MemoryStore()
    sink = MemorySink(MemorySinkOptions(store=store), {"t": SCHEMA, "u": None}).start()
    sink.write("t", batch(1, 2))
    sink.barrier("t", CheckpointBarrier(1, {}))
    sink.write("t", batch(3))
    sink.close("t")
    sink.close("u")
    sink.join(timeout=10)
    assert store.table("t").column("x").to_pylist() == [1, 2, 3]
    assert store.checkpoints["t"] == [1]
    assert store.table("u").num_rows == 0  # no schema, no rows: an empty table
    assert sink.committed() == {"t": 3, "u": 0}


def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_an_abort_discards_what_was_not_committed() -> None:
    sink = MemorySink(MemorySinkOptions(), {"t": SCHEMA}).start()
    sink.write("t", batch(1))
    sink.barrier("t", CheckpointBarrier(1, {}))
    sink.write("t", batch(2))
    until(lambda: sink._pending["t"] != [])  # the writer took the uncommitted batch
    sink.abort(timeout=10)
    assert sink.store.table("t").column("x").to_pylist() == [1]
    assert sink.committed() == {"t": 1}


def test_the_memory_kind_writes_no_data_dir() -> None:
    kind = sink_kind(MemorySinkOptions())
    assert kind.name == "memory" and not kind.data_dir and kind.recover is None


def test_a_run_into_memory_makes_nothing_on_disk(tmp_path: Path) -> None:
    from telepipe.api import _run

    capture = tmp_path / "capture"
    write_capture(capture, [telemetry(i, n=10) for i in range(30)])
    data_dir = tmp_path / "data"
    overrides = [f"data_dir={data_dir}", f"input={capture}", "ui=never"]
    store = MemoryStore()
    options = MemorySinkOptions(store=store)
    plan = configure(load(overrides), overrides, str(capture))
    plan = dataclasses.replace(plan, sink=Opens(sink_kind(options), options))
    handler = signal.getsignal(signal.SIGINT)
    stats = _run(plan)
    assert signal.getsignal(signal.SIGINT) is handler  # the caller's, back
    assert stats.committed_by_table["readings"] == 300
    assert store.table("readings").num_rows == 300
    assert store.checkpoints["readings"] == store.checkpoints["windows"] != []
    assert not data_dir.exists()  # no tables, no lock file, no directory


@pytest.mark.parametrize("policy", ["block", "drop_newest"])
def test_the_queue_policy_is_the_configured_one(policy: str) -> None:
    from telepipe.boundary import BoundaryOptions

    sink = MemorySink(MemorySinkOptions(BoundaryOptions(2, policy)), {"t": SCHEMA})
    assert sink.queue.policy.value == policy
