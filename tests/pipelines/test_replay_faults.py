"""Exactly-once under deterministic faults: the Delta writer SIGKILLed right before or
after each table's commit of each checkpoint (``TELEPIPE_FAULT_KILL``), the final one
(after the end-of-input flush) included, then restarted: every table equals an
uninterrupted replay, every column. The input is a capture with two publisher
sessions, one after the other (two ``telepipe run ... capture_dir=`` runs), so a
restart often resumes where one session has nothing left.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from deltalake import DeltaTable
from helpers import ROOT, Watched
from replay_faults_common import (
    EVERY,
    PIPELINES,
    REPLAY,
    assert_same,
    checkpoints,
    cli,
    replay,
    tables,
    two_session_capture,
)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    base = tmp_path_factory.mktemp("faults")
    capture = two_session_capture(base)
    out: dict[str, object] = {"capture": capture}
    for pipeline in PIPELINES:
        done = replay(pipeline, capture, base / pipeline)
        assert done.returncode == 0, done.stderr
        out[pipeline] = base / pipeline
    return out


def kill_and_recover(recorded: dict[str, object], pipeline: str, kill: str, tmp: Path) -> None:
    capture, reference = recorded["capture"], recorded[pipeline]
    assert isinstance(capture, Path) and isinstance(reference, Path)
    data_dir = tmp / "killed"
    killed = replay(pipeline, capture, data_dir, kill)
    assert killed.returncode == -9, f"{kill}: not killed ({killed.returncode}): {killed.stderr}"
    done = replay(pipeline, capture, data_dir)
    assert done.returncode == 0, done.stderr
    assert_same(tables(reference), data_dir)


# A representative few in the default run: the final checkpoint (after the flush),
# between tables of a middle checkpoint in the second session (the first has nothing
# left after the resume point), and the first checkpoint.
DEFAULT = [
    ("demo", "after:windows:end"),
    ("demo", "before:alarms:end"),
    ("demo", "after:readings:5"),
    ("demo", "before:windows:1"),
    ("press_line", "after:stats_10s:end"),
    ("press_line", "after:readings:5"),
]


@pytest.mark.parametrize(("pipeline", "kill"), DEFAULT)
def test_a_kill_at_a_commit_boundary_then_a_restart_equals_an_uninterrupted_replay(
    recorded: dict[str, object], tmp_path: Path, pipeline: str, kill: str
) -> None:
    kill_and_recover(recorded, pipeline, kill, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(("pipeline", "kill"), EVERY)
def test_kills_at_every_commit_boundary_of_every_table(
    recorded: dict[str, object], tmp_path: Path, pipeline: str, kill: str
) -> None:
    """Every checkpoint the reference committed (ids past its last are skipped)."""
    reference = recorded[pipeline]
    assert isinstance(reference, Path)
    _, table, k = kill.split(":")
    if k != "end" and int(k) not in checkpoints(reference, table):
        pytest.skip(f"{table} committed no checkpoint {k}")
    kill_and_recover(recorded, pipeline, kill, tmp_path)


def test_a_writer_whose_lock_file_was_deleted_is_fenced_and_nothing_is_duplicated(
    recorded: dict[str, object], tmp_path: Path
) -> None:
    """Two replays into one data_dir, the lock file removed between their starts: the
    second to start (a newer writer epoch) wins, the first stops in one line at its next
    commit, and the tables equal an uninterrupted replay."""
    capture, reference = recorded["capture"], recorded["demo"]
    assert isinstance(capture, Path) and isinstance(reference, Path)
    data_dir = tmp_path / "shared"
    args = [sys.executable, "-m", "telepipe.cli", "replay", "pipeline=demo", f"input={capture}",
            f"data_dir={data_dir}", *REPLAY]  # fmt: skip
    first = Watched([*args, "replay.speed=0.25"], cwd=ROOT)  # ~15 s: the capture spans seconds
    try:
        first.wait_for("telepipe: running:")
        log = data_dir / "readings" / "_delta_log"
        deadline = time.monotonic() + 120
        while not (log.is_dir() and any(log.glob("*.json"))):  # its first commit
            assert first.process.poll() is None, "".join(first.lines["stderr"])
            assert time.monotonic() < deadline, "no commit of the first replay"
            time.sleep(0.05)
        (data_dir / ".telepipe.lock").unlink()
        second = cli(*args[3:])
        assert second.returncode == 0, second.stderr
        _, err = first.finish()
    finally:
        if first.process.poll() is None:
            first.process.kill()
    assert first.process.returncode == 1, err
    errors = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1 and "fenced" in errors[0], err
    assert (data_dir / ".telepipe.epoch").read_text().split()[0] == "2"
    assert_same(tables(reference), data_dir)
    epochs = {
        h.get("telepipe.epoch")
        for h in DeltaTable(str(data_dir / "readings")).history()
        if "telepipe.checkpoint_id" in h
    }
    assert epochs <= {"1", "2"} and "2" in epochs


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("pipeline.outputs.windows.window.size_ms=2000", "size_ms"),
        (
            "+pipeline.outputs.readings.again={_target_: telepipe.operators.Dedup}",
            "steps with no saved state: again",
        ),
    ],
)
def test_a_replay_restart_with_a_changed_pipeline_is_refused_before_anything_is_written(
    recorded: dict[str, object], tmp_path: Path, change: str, named: str
) -> None:
    """A replay resumes exactly or not at all: other options, or a step renamed or
    gone, restored nothing (a new name started empty, exit 0, wrong windows) or failed
    inside its chain (found by review)."""
    capture = recorded["capture"]
    assert isinstance(capture, Path)
    data_dir = tmp_path / "killed"
    killed = replay("demo", capture, data_dir, "after:readings:3")
    assert killed.returncode == -9, killed.stderr
    before = {name: checkpoints(data_dir, name) for name in ("readings", "windows")}
    done = cli(
        "replay", "pipeline=demo", f"input={capture}", f"data_dir={data_dir}", *REPLAY, change
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "the pipeline changed since its last checkpoint" in lines[0]
    assert named in lines[0] and "another data_dir" in lines[0], lines[0]
    assert {name: checkpoints(data_dir, name) for name in before} == before
