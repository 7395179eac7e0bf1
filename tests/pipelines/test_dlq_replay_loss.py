"""A ``dlq replay`` brings every letter back or leaves it in the store (issue 17, case
8): queue policies that drop are refused, a replay SIGKILLed at any of its commits
loses no letter (``dlq resume`` finishes it, exactly once), and no queue policy drops
dead letters or late readings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from dead_letter_data import add_letters, good_letter, readings, write_capture
from helpers import ROOT

from telepipe.boundary import BoundaryOptions
from telepipe.markers import CheckpointBarrier
from telepipe.operators.actors.journal import STORE_TABLES
from telepipe.pipelines.graph import RESERVED_TABLES
from telepipe.sinks.dead_letter_store import DeadLetterStore
from telepipe.sinks.queued import NEVER_DROPPED, QueuedSink

# The fixtures pristine (a pipeline run's data dir), store (a copy per test) and the
# audit key in a tmp dir (autouse).
pytest_plugins = ["dead_letter_fixtures"]


def telepipe(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telepipe.cli", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=180, env={**os.environ, **env},
    )  # fmt: skip


def test_a_replay_with_a_dropping_queue_policy_is_refused_before_any_change(
    store: DeadLetterStore,
) -> None:
    """The reported case: drop_newest with capacity 1 removed 23 letters, 18 were lost."""
    add_letters(store.data_dir, [good_letter()])
    before = store.list()
    ids = before["id"].to_list()
    for policy, key in [
        ("drop_newest", "sink.queue.policy"),
        ("drop_oldest", "sink.queue.policy"),
    ]:
        done = telepipe(
            "dlq", "replay", *ids, "--confirm", "--data-dir", str(store.data_dir),
            "-o", f"{key}={policy}", "-o", "sink.queue.capacity=1",
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [
            f"telepipe: error: {key}={policy}: a dlq replay refuses queue policies that drop "
            "(its letters would be lost); use block or fail"
        ]
    threaded = telepipe(
        "dlq", "replay", *ids, "--confirm", "--data-dir", str(store.data_dir), "-o",
        "+pipeline.outputs.windows.boundary={_target_: telepipe.operators.ThreadBoundary,"
        " capacity: 8, policy: drop_oldest, name: w}",
    )  # fmt: skip
    assert threaded.returncode == 2, threaded.stderr
    assert "pipeline.outputs.windows.boundary.policy=drop_oldest" in threaded.stderr
    assert store.list().equals(before) and not store.audit.path.exists()


@pytest.mark.parametrize(
    "override", ["replay.stream=5", "replay.from=2030-01-01T00:00:00Z", "+replay.to=1"]
)
def test_a_replay_that_would_filter_letters_out_is_refused(
    store: DeadLetterStore, override: str
) -> None:
    """A replay filter removed every letter it kept from the run: '0 came back', all gone
    (found by review)."""
    add_letters(store.data_dir, [good_letter()])
    before = store.list()
    done = telepipe(
        "dlq", "replay", *before["id"].to_list(), "--confirm", "--data-dir", str(store.data_dir),
        "-o", override,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "every letter is replayed" in done.stderr
    assert store.list().equals(before) and not store.audit.path.exists()


KILLS = [
    "before:readings:end",
    "after:readings:end",
    "before:dead_letters:end",
    "after:dead_letters:end",
]


@pytest.mark.parametrize("kill", KILLS)
def test_a_replay_killed_at_a_commit_loses_no_letter(store: DeadLetterStore, kill: str) -> None:
    good = good_letter()
    add_letters(store.data_dir, [good])
    failing = store.list().filter(pl.col("id") != good.id)["id"].to_list()
    before = readings(store.data_dir).height

    done = telepipe(
        "dlq", "replay", *failing, good.id, "--confirm", "--data-dir", str(store.data_dir),
        TELEPIPE_FAULT_KILL=kill,
    )  # fmt: skip
    assert done.returncode == -9, done.stderr  # SIGKILLed by the Delta sink at ``kill``

    # Nothing is lost meanwhile: what the table lacks is in the replay's capture.
    (start,) = store.audit.entries()
    assert start["action"] == "replay_start"
    assert Path(start["detail"]["capture"]).is_dir()
    ok, problem = store.verify()
    assert not ok and "dlq resume" in str(problem)

    resumed = telepipe("dlq", "resume", "--data-dir", str(store.data_dir))
    assert resumed.returncode == 0, resumed.stderr
    letters = store.list()
    assert sorted(letters["id"]) == sorted(failing)  # each failing letter back, once
    mine = readings(store.data_dir).filter(pl.col("sensor_id") >= 5000)
    assert sorted(mine["sensor_id"]) == list(range(5000, 5010))  # delivered, once
    assert readings(store.data_dir).height == before + 10
    assert store.verify() == (True, None)
    end = store.audit.entries()[-1]
    assert end["action"] == "replay" and end["detail"]["came_back_ids"] == [
        i for i in [*failing, good.id] if i in set(failing)
    ]


class Gated(QueuedSink):
    """A sink whose writer waits for ``gate`` before taking each batch."""

    def __init__(self, options: BoundaryOptions) -> None:
        super().__init__(["readings", *RESERVED_TABLES], options)
        self.gate = threading.Event()
        self.taken = threading.Event()  # the writer holds a batch
        self.rows: dict[str, int] = dict.fromkeys(self.table_names, 0)

    def on_rows(self, table: str, batch: pa.RecordBatch) -> None:
        self.taken.set()
        self.gate.wait()
        self.rows[table] += batch.num_rows

    def on_barrier(self, table: str, barrier: CheckpointBarrier) -> None:
        pass

    def on_end(self, table: str) -> None:
        pass

    def committed(self) -> dict[str, int]:
        return dict(self.rows)


@pytest.mark.parametrize("policy", ["drop_newest", "drop_oldest"])
def test_no_queue_policy_drops_dead_letters_or_late_readings(policy: str) -> None:
    assert {*RESERVED_TABLES, *STORE_TABLES} == NEVER_DROPPED  # and the actors' event store
    sink = Gated(BoundaryOptions(capacity=1, policy=policy)).start()
    batch = pa.record_batch({"x": [1, 2, 3]})
    sink.write("readings", batch)  # taken by the writer, which waits at the gate
    assert sink.taken.wait(30)
    sink.write("readings", batch)  # fills the queue
    sink.write("readings", batch)  # dropped (newest, or the oldest queued)

    def reserved() -> None:
        for table in RESERVED_TABLES:
            sink.write(table, batch)

    producer = threading.Thread(target=reserved)
    producer.start()
    producer.join(0.2)
    assert producer.is_alive()  # waits for room rather than dropping
    sink.gate.set()
    producer.join(30)
    assert not producer.is_alive()
    for table in ["readings", *RESERVED_TABLES]:
        sink.close(table)
    sink.join(30)
    assert sink.dropped() == {"readings": 3, "late_readings": 0, "dead_letters": 0}
    assert sink.committed() == {"readings": 6, "late_readings": 3, "dead_letters": 3}


def test_a_run_under_a_dropping_policy_keeps_every_dead_letter(tmp_path: Path) -> None:
    """The pipeline's own run with a 1-batch queue that drops, and a slow store: readings
    may be dropped (counted), dead letters never."""
    from dead_letter_data import messages

    payloads, reasons = messages()
    write_capture(tmp_path / "capture", payloads)
    done = telepipe(
        "replay", "pipeline=demo", f"input={tmp_path / 'capture'}",
        f"data_dir={tmp_path / 'data'}", "ui=never", "replay.batch_messages=1",
        "sink.queue.policy=drop_newest", "sink.queue.capacity=1", "sink.delay_ms=20",
        f"stats_file={tmp_path / 'stats.json'}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    dropped = json.loads((tmp_path / "stats.json").read_text())["dropped_by_table"]
    assert dropped["readings"] > 0  # the policy did drop
    assert dropped["dead_letters"] == dropped["late_readings"] == 0
    letters = pl.read_delta(str(tmp_path / "data" / "dead_letters"))
    assert sorted(letters["reason"]) == sorted(reasons.values())
