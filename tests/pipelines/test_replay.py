"""Replay: a live run and replays of its capture give the same tables; crashes lose nothing.

A standalone driver (`telepipe driver`) is shared by the recorder (`telepipe
capture`) and the live run (`telepipe run`, with its simulator child), so the
capture holds exactly the frames the live pipeline read.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from helpers import ROOT

N = 200_000
START = 1_767_225_600_000_000_000
SORT = {
    "readings": ["ts_ns", "sensor_id", "value"],
    "windows": ["window_start_ns", "sensor_id"],
    "alarms": ["ts_ns", "sensor_id"],
    "late_readings": ["ts_ns", "sensor_id", "value"],
    # received_ns is the publisher's stamp in the frame, in live and replay alike
    "dead_letters": ["id"],
}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "telepipe.cli", *args]


def table(data_dir: Path, name: str) -> pl.DataFrame:
    return pl.read_delta(str(data_dir / name)).sort(SORT[name])


def assert_same_tables(a: Path, b: Path) -> None:
    for name in SORT:
        left, right = table(a, name), table(b, name)
        assert left.height == right.height, name
        assert left.equals(right), name


def wait_for_line(process: subprocess.Popen[str], text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    stream = process.stderr if text.startswith("telepipe capture") else process.stdout
    assert stream is not None
    while time.monotonic() < deadline:
        line = stream.readline()
        if text in line:
            return line
        if process.poll() is not None:
            raise AssertionError(f"process exited {process.returncode} before {text!r}")
    raise AssertionError(f"no {text!r} within {timeout} s")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A live demo run of N readings and the capture of the stream it read."""
    base = tmp_path_factory.mktemp("recorded")
    capture_dir, live_dir = base / "capture", base / "live"
    driver = subprocess.Popen(cli("driver"), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        aeron_dir = wait_for_line(driver, "aeron.dir=").strip().split("=", 1)[1]
        recorder = subprocess.Popen(
            cli("capture", f"aeron.dir={aeron_dir}", "channel=aeron:ipc", "stream=1001", f"out={capture_dir}"),
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_for_line(recorder, "telepipe capture: recording")
        live = subprocess.run(
            cli(
                "run", f"aeron.dir={aeron_dir}", f"limit.readings={N}", f"data_dir={live_dir}",
                f"simulator.options.start_ns={START}", "simulator.options.late_fraction=0.002",
                "simulator.options.rate=100000",
                "source.checkpoint_every_readings=20000",
            ),
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert live.returncode == 0, live.stderr
        time.sleep(0.5)
        recorder.send_signal(signal.SIGTERM)
        _, err = recorder.communicate(timeout=30)
        assert recorder.returncode == 0, err
    finally:
        driver.send_signal(signal.SIGTERM)
        driver.wait(timeout=30)
    return {"capture": capture_dir, "live": live_dir}


def replay(
    capture: Path, data_dir: Path, *extra: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli("replay", "pipeline=demo", f"input={capture}", f"data_dir={data_dir}", *extra),
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_replay_of_the_capture_equals_the_live_run(
    recorded: dict[str, Path], tmp_path: Path
) -> None:
    done = replay(recorded["capture"], tmp_path / "replayed", f"stats_file={tmp_path / 's.json'}")
    assert done.returncode == 0, done.stderr
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["received"] == N and stats["exit_reason"] == "end of input"
    assert table(tmp_path / "replayed", "late_readings").height > 0
    assert table(tmp_path / "replayed", "dead_letters").height > 0
    assert_same_tables(recorded["live"], tmp_path / "replayed")


@pytest.mark.parametrize(
    "extra", [["replay.batch_messages=1"], ["replay.batch_messages=7", "replay.speed=20"]]
)
def test_replays_with_other_batch_sizes_and_speeds_are_identical(
    recorded: dict[str, Path], tmp_path: Path, extra: list[str]
) -> None:
    done = replay(recorded["capture"], tmp_path / "replayed", *extra)
    assert done.returncode == 0, done.stderr
    assert_same_tables(recorded["live"], tmp_path / "replayed")


def test_compaction_keeps_every_row_once_in_fewer_files(
    recorded: dict[str, Path], tmp_path: Path
) -> None:
    data_dir = tmp_path / "compacted"
    extra = ["source.checkpoint_every_readings=10000", "sink.compact_every_commits=3",
             "replay.speed=1"]  # fmt: skip
    done = replay(recorded["capture"], data_dir, *extra)
    assert done.returncode == 0, done.stderr
    assert_same_tables(recorded["live"], data_dir)
    from deltalake import DeltaTable

    readings = DeltaTable(str(data_dir / "readings"))
    actions = [h.get("operation") for h in readings.history()]
    assert actions.count("OPTIMIZE") >= 2
    live = {Path(u).name for u in readings.file_uris()}
    assert len(live) < actions.count("WRITE") // 2
    # The default retention (168 h) kept the replaced files on disk.
    assert len(list((data_dir / "readings").glob("*.parquet"))) > len(live)
    # A second replay of the same input into it commits nothing new.
    again = replay(recorded["capture"], data_dir, *extra)
    assert again.returncode == 0, again.stderr
    assert_same_tables(recorded["live"], data_dir)


def test_parquet_settings_change_the_files_not_the_tables(
    recorded: dict[str, Path], tmp_path: Path
) -> None:
    """Values and timestamps are written without a dictionary, ids and quality with
    one; ``sink.compression`` picks the codec. The tables read back the same."""
    import pyarrow.parquet as pq

    data_dir = tmp_path / "zstd"
    done = replay(recorded["capture"], data_dir, "sink.compression=zstd")
    assert done.returncode == 0, done.stderr
    assert_same_tables(recorded["live"], data_dir)
    for directory, codec in ((recorded["live"], "SNAPPY"), (data_dir, "ZSTD")):
        meta = pq.ParquetFile(next((directory / "readings").glob("*.parquet"))).metadata
        columns = {}
        for j in range(meta.num_columns):
            column = meta.row_group(0).column(j)
            columns[column.path_in_schema] = column
        assert {c.compression for c in columns.values()} == {codec}
        for name in ("value", "ts", "ts_ns"):
            assert columns[name].dictionary_page_offset is None, name
        for name in ("sensor_id", "quality"):
            assert columns[name].dictionary_page_offset is not None, name


def test_vacuum_after_compaction_deletes_the_replaced_files(
    recorded: dict[str, Path], tmp_path: Path
) -> None:
    data_dir = tmp_path / "vacuumed"
    extra = ["source.checkpoint_every_readings=10000", "sink.compact_every_commits=3",
             "sink.vacuum_retention_hours=0", "replay.speed=1"]  # fmt: skip
    done = replay(recorded["capture"], data_dir, *extra)
    assert done.returncode == 0, done.stderr
    assert_same_tables(recorded["live"], data_dir)
    from deltalake import DeltaTable

    live = {Path(u).name for u in DeltaTable(str(data_dir / "readings")).file_uris()}
    on_disk = {p.name for p in (data_dir / "readings").glob("*.parquet")}
    # Only files written after the last vacuum are not live any more (none here, or
    # those the last compaction replaced).
    assert live <= on_disk and len(on_disk) <= len(live) + 3
    bad = replay(recorded["capture"], tmp_path / "x", "sink.vacuum_retention_hours=-1")
    assert bad.returncode == 2 and "vacuum_retention_hours" in bad.stderr


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    recorded: dict[str, Path], tmp_path: Path
) -> None:
    data_dir = tmp_path / "killed"
    rng = random.Random(5)
    kills = 0
    # The capture spans 2 s (100k readings/s); at 0.2x a replay takes 10 s, so
    # kills land mid-run and, with a checkpoint every 10k readings, often mid-commit.
    extra = [
        "source.checkpoint_every_readings=10000",
        "replay.batch_messages=4",
        "sink.compact_every_commits=3",  # kills also land mid-compaction
        "replay.speed=0.2",
    ]
    while kills < 12:
        process = subprocess.Popen(
            cli("replay", "pipeline=demo", f"input={recorded['capture']}", f"data_dir={data_dir}", *extra),
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(rng.uniform(1.0, 2.5))
        if process.poll() is not None:
            assert process.returncode == 0, process.stderr.read() if process.stderr else ""
            break  # it finished before the kill: the rest is checked below
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        kills += 1
    done = replay(recorded["capture"], data_dir, *extra[:3])
    assert done.returncode == 0, done.stderr
    assert kills >= 10
    assert_same_tables(recorded["live"], data_dir)


def test_replay_bad_inputs_are_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a capture at all")
    for path, expected in [
        (tmp_path / "missing", "no such file or directory"),
        (junk, "not a pcap/pcapng file"),
        (tmp_path, "neither a telepipe capture"),
    ]:
        done = subprocess.run(
            cli("replay", f"input={path}", f"data_dir={tmp_path / 'out'}"),
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2
        assert len(done.stderr.strip().splitlines()) == 1 and expected in done.stderr
    done = subprocess.run(
        cli("replay", f"data_dir={tmp_path}"), cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 2 and "replay needs input=PATH" in done.stderr


def test_inspect_reports_streams_and_counts(recorded: dict[str, Path]) -> None:
    done = subprocess.run(
        cli("inspect", str(recorded["capture"]), "--json"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["kind"] == "capture"
    assert [s["stream_id"] for s in report["streams"]] == [1001]
    assert report["gaps"] == [] and report["messages"] > N // 1024
    text = subprocess.run(
        cli("inspect", str(recorded["capture"])), cwd=ROOT, capture_output=True, text=True
    )
    assert text.returncode == 0 and "capture" in text.stdout and "1001" in text.stdout


@pytest.mark.parametrize("damage", ["garbage", "cut", "missing"])
def test_a_state_file_that_cannot_be_read_is_one_line(
    recorded: dict[str, Path], tmp_path: Path, damage: str
) -> None:
    data_dir = tmp_path / "d"
    assert replay(recorded["capture"], data_dir).returncode == 0
    for state in [p for p in (data_dir / "_telepipe_state").rglob("*") if p.is_file()]:
        if damage == "garbage":
            state.write_bytes(b"not a pickle")
        elif damage == "cut":
            state.write_bytes(state.read_bytes()[:20])
        else:
            state.unlink()
    done = replay(recorded["capture"], data_dir)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot be read" in lines[0] and "Traceback" not in done.stderr
