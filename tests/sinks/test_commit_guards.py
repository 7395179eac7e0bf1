"""What a Delta sink refuses to commit: a commit the disk cannot hold, and (fencing)
any commit once data_dir's epoch file no longer names its own hold.

The second writer is a real process taking the lock (``data_dir_lock.hold``) after the
first writer's lock file, and its epoch file too, were deleted: the counter restarts at
1, below the first writer's epoch, and the first writer must still stop.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from helpers import ROOT

from telepipe.errors import SinkError
from telepipe.markers import CheckpointBarrier
from telepipe.sinks import data_dir_lock
from telepipe.sinks.data_dir_lock import EPOCH_NAME, LOCK_NAME
from telepipe.sinks.delta import DeltaSink, DeltaSinkOptions

SCHEMA = pa.schema([("sensor_id", pa.int32()), ("value", pa.float64())])


def rows(n: int) -> pa.RecordBatch:
    return pa.record_batch([pa.array(range(n), pa.int32()), pa.array([1.0] * n)], schema=SCHEMA)


def commit(sink: DeltaSink, k: int) -> None:
    sink.on_rows("t", rows(3))
    sink.on_barrier("t", CheckpointBarrier(k, {"1001:7": 64 * k}))


def take_in_another_process(data_dir: Path) -> str:
    """Hold ``data_dir`` in a child until it prints its epoch line, then let it exit."""
    code = (
        "import sys\n"
        "from telepipe.sinks import data_dir_lock\n"
        f"with data_dir_lock.hold({str(data_dir)!r}):\n"
        "    print(open(sys.argv[1]).read().strip())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(data_dir / EPOCH_NAME)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return done.stdout.strip()


@pytest.mark.parametrize("epoch_file_too", [False, True])
def test_an_older_writer_stops_at_its_next_commit(tmp_path: Path, epoch_file_too: bool) -> None:
    data_dir = tmp_path / "data"
    for _ in range(2):  # two earlier runs: this one holds epoch 3
        with data_dir_lock.hold(data_dir):
            pass
    with data_dir_lock.hold(data_dir):
        holder = data_dir_lock.holder_of(data_dir)
        assert holder is not None and holder[0] == 3
        sink = DeltaSink(DeltaSinkOptions(), data_dir, {"t": SCHEMA})
        commit(sink, 1)
        (data_dir / LOCK_NAME).unlink()
        if epoch_file_too:
            (data_dir / EPOCH_NAME).unlink()
        newer = take_in_another_process(data_dir)
        assert newer.split()[0] == ("1" if epoch_file_too else "4")
        with pytest.raises(SinkError) as raised:
            commit(sink, 2)
    message = str(raised.value)
    assert "\n" not in message and "fenced" in message and "did not commit checkpoint 2" in message
    history = [h for h in DeltaTable(str(data_dir / "t")).history() if "telepipe.epoch" in h]
    assert [h["telepipe.checkpoint_id"] for h in history] == ["1"]
    assert DeltaTable(str(data_dir / "t")).to_pyarrow_table().num_rows == 3


def test_a_removed_epoch_file_alone_stops_the_writer(tmp_path: Path) -> None:
    """Nobody can prove which writer holds a data dir whose epoch file is gone."""
    data_dir = tmp_path / "data"
    with data_dir_lock.hold(data_dir):
        sink = DeltaSink(DeltaSinkOptions(), data_dir, {"t": SCHEMA})
        commit(sink, 1)
        (data_dir / EPOCH_NAME).unlink()
        with pytest.raises(SinkError, match=f"its writer epoch file {EPOCH_NAME} was removed"):
            commit(sink, 2)


def test_an_epoch_file_of_the_previous_release_is_read(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / EPOCH_NAME).write_text("7\n")
    with data_dir_lock.hold(data_dir):
        holder = data_dir_lock.holder_of(data_dir)
        assert holder is not None and holder[0] == 8
        assert data_dir_lock.current_holder(data_dir) == holder


def test_a_commit_the_disk_cannot_hold_is_one_line_and_commits_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """delta-rs out of space mid-write printed a Rust panic first; refuse it before."""
    import shutil

    from telepipe.sinks import delta

    data_dir = tmp_path / "data"
    sink = DeltaSink(DeltaSinkOptions(), data_dir, {"t": SCHEMA})
    commit(sink, 1)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        delta.shutil, "disk_usage", lambda _: usage._replace(free=delta.ROOM_MARGIN)
    )
    with pytest.raises(SinkError) as raised:
        commit(sink, 2)
    message = str(raised.value)
    assert "\n" not in message and "no space left for table t's commit of checkpoint 2" in message
    assert DeltaTable(str(data_dir / "t")).to_pyarrow_table().num_rows == 3


def test_a_checkpoint_another_writer_committed_since_this_one_opened_is_refused(
    tmp_path: Path,
) -> None:
    """Two writers of one table (a lock removed, one of them stalled past its fence
    check): the one whose snapshot predates the other's commit of a checkpoint cannot
    commit that checkpoint again; its rows are not added a second time."""
    data_dir = tmp_path / "data"
    first = DeltaSink(DeltaSinkOptions(), data_dir, {"t": SCHEMA})
    commit(first, 1)
    second = DeltaSink(DeltaSinkOptions(), data_dir, {"t": SCHEMA})  # recovered at 1
    commit(first, 2)  # the stalled writer's commit lands first
    with pytest.raises(SinkError, match="another writer committed to it"):
        commit(second, 2)
    table = DeltaTable(str(data_dir / "t"))
    assert table.to_pyarrow_table().num_rows == 6 and table.transaction_version("telepipe") == 2


def test_two_writers_of_one_checkpoint_never_write_into_each_other_s_state(
    tmp_path: Path,
) -> None:
    """A fenced writer still writing its checkpoint k's state files cannot replace the
    files the newer writer committed for k: each hold's state goes under its token."""
    from telepipe.state import read_checkpoint

    data_dir = tmp_path / "data"
    with data_dir_lock.hold(data_dir):
        sink = DeltaSink(DeltaSinkOptions(), data_dir, {"t": SCHEMA})
        commit(sink, 1)
    with data_dir_lock.hold(data_dir):
        other = DeltaSink(DeltaSinkOptions(), data_dir, {"t": SCHEMA})
        path = other._save_state(other.tables["t"], CheckpointBarrier(1, {"1001:7": 1}))
    committed = [
        h["telepipe.state"]
        for h in DeltaTable(str(data_dir / "t")).history()
        if "telepipe.state" in h
    ]
    assert committed and committed[0] != path
    state = read_checkpoint(data_dir, committed[0], checkpoint_id=1, owner=("telepipe", "t"))
    assert state.checkpoint_id == 1
