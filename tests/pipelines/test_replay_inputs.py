"""Replay from each kind of recorded input, with filters, and tailing a capture as it grows."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from helpers import ROOT, free_udp_port
from pcap_builder import tcpdump_udp

from telepipe.sources.capture import CaptureReader
from telepipe.sources.frames import FrameAssembler

START = 1_767_225_600_000_000_000
SORT = {
    "readings": ["ts_ns", "sensor_id", "value"],
    "windows": ["window_start_ns", "sensor_id"],
    "alarms": ["ts_ns", "sensor_id"],
    "dead_letters": ["id"],
}


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telepipe.cli", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def assert_same(a: Path, b: Path) -> None:
    for name, keys in SORT.items():
        left, right = (
            pl.read_delta(str(a / name)).sort(keys),
            pl.read_delta(str(b / name)).sort(keys),
        )
        assert left.equals(right), name


def test_replay_of_a_tcpdump_pcap_equals_the_live_udp_run(tmp_path: Path) -> None:
    port = free_udp_port()
    pcap = tmp_path / "aeron.pcap"
    with tcpdump_udp(pcap, port):
        live = cli(
            "run", "source=aeron_udp", f"source.channel=aeron:udp?endpoint=127.0.0.1:{port}",
            "limit.readings=100000", f"data_dir={tmp_path / 'live'}", f"simulator.options.start_ns={START}",
            "simulator.options.rate=100000",
        )  # fmt: skip
        assert live.returncode == 0, live.stderr
    replayed = cli(
        "replay", f"input={pcap}", f"data_dir={tmp_path / 'replayed'}", "replay.stream=1001"
    )
    assert replayed.returncode == 0, replayed.stderr
    assert_same(tmp_path / "live", tmp_path / "replayed")
    again = cli("replay", f"input={pcap}", f"data_dir={tmp_path / 'again'}", "replay.stream=1001")
    assert again.returncode == 0, again.stderr
    assert_same(tmp_path / "replayed", tmp_path / "again")  # dead_letters.received_ns too


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("filters")
    done = cli(
        "run", "limit.readings=100000", f"data_dir={base / 'live'}", f"capture_dir={base / 'capture'}",
        f"simulator.options.start_ns={START}", "simulator.options.rate=200000",
        "simulator.options.late_fraction=0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return base / "capture"


def messages(capture: Path) -> list:
    return list(FrameAssembler().assemble(CaptureReader(capture).frames()))


def readings_after(capture: Path, tmp_path: Path, *extra: str) -> int:
    stats = tmp_path / f"stats-{len(list(tmp_path.iterdir()))}.json"
    done = cli(
        "replay",
        f"input={capture}",
        f"data_dir={tmp_path / stats.stem}",
        f"stats_file={stats}",
        *extra,
    )
    assert done.returncode == 0, done.stderr
    return int(json.loads(stats.read_text())["received"])


def test_from_and_to_by_position_and_time(capture: Path, tmp_path: Path) -> None:
    msgs = messages(capture)
    counts = [int.from_bytes(m.payload[22:24], "little") for m in msgs]  # numInGroup
    assert sum(counts) == 100_000
    mid = len(msgs) // 2
    position = msgs[mid].position
    assert readings_after(capture, tmp_path, f"replay.from={position}") == sum(counts[mid + 1 :])
    assert readings_after(capture, tmp_path, f"replay.to={position}") == sum(counts[: mid + 1])
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    moment = (epoch + timedelta(microseconds=msgs[mid].received_ns // 1000)).isoformat()
    expected = sum(
        c
        for m, c in zip(msgs, counts, strict=True)
        if m.received_ns >= msgs[mid].received_ns // 1000 * 1000
    )
    assert readings_after(capture, tmp_path, f"replay.from='{moment}'") == expected
    assert readings_after(capture, tmp_path, "replay.stream=4242") == 0


def test_a_torn_capture_replays_what_it_holds_and_says_what_it_lost(
    capture: Path, tmp_path: Path
) -> None:
    """Cut the last segment mid-record: the replay keeps every complete message before
    the cut, and its stats and summary name the damage (the torn tail's bytes)."""
    torn = tmp_path / "torn"
    shutil.copytree(capture, torn)
    last = sorted(torn.glob("*.tpcap"))[-1]
    size = last.stat().st_size
    with last.open("r+b") as f:
        f.truncate(size - 1000)
    kept = messages(torn)
    assert 0 < len(kept) < len(messages(capture))
    stats = tmp_path / "torn.json"
    done = cli("replay", f"input={torn}", f"data_dir={tmp_path / 'out'}", f"stats_file={stats}")
    assert done.returncode == 0, done.stderr
    got = json.loads(stats.read_text())
    assert got["received"] == sum(int.from_bytes(m.payload[22:24], "little") for m in kept)
    assert got["input_damage"]["torn_tail_bytes"] > 0
    line = next(x for x in done.stdout.splitlines() if "input damage" in x)
    assert "torn_tail_bytes=" in line and f"telepipe inspect {torn}" in line


def test_bad_replay_options_are_one_line(capture: Path, tmp_path: Path) -> None:
    for extra, expected in [
        ("replay.speed=fast", "replay.speed"),
        ("replay.speed=-2", "replay.speed"),
        ("replay.from=yesterday", "replay.from"),
        ("replay.batch_messages=0", "replay.batch_messages"),
        ("replay.follow=true", "replay.follow=true needs a telepipe capture"),
    ]:
        target = capture if "follow" not in extra else tmp_path / "x.pcap"
        if "follow" in extra:
            target.write_bytes(b"\xd4\xc3\xb2\xa1" + bytes(20))
        done = cli("replay", f"input={target}", f"data_dir={tmp_path / 'bad'}", extra)
        assert done.returncode == 2, (extra, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and expected in done.stderr, done.stderr


def test_tailing_a_capture_while_it_is_written_then_resuming(tmp_path: Path) -> None:
    driver = subprocess.Popen(
        [sys.executable, "-m", "telepipe.cli", "driver"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert driver.stdout is not None
    aeron_dir = driver.stdout.readline().strip().split("=", 1)[1]
    capture_dir, tail_dir = tmp_path / "capture", tmp_path / "tail"
    try:
        recorder = subprocess.Popen(
            [sys.executable, "-m", "telepipe.cli", "capture", f"aeron.dir={aeron_dir}", f"out={capture_dir}"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert recorder.stderr is not None and "recording" in recorder.stderr.readline()
        tail = subprocess.Popen(
            [sys.executable, "-m", "telepipe.cli", "replay", f"input={capture_dir}", "replay.follow=true",
             f"data_dir={tail_dir}", f"stats_file={tmp_path / 'tail.json'}"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        live = cli(
            "run", f"aeron.dir={aeron_dir}", "limit.readings=150000", f"data_dir={tmp_path / 'live'}",
            f"simulator.options.start_ns={START}", "simulator.options.rate=100000",
        )  # fmt: skip
        assert live.returncode == 0, live.stderr
        time.sleep(1.0)
        recorder.send_signal(signal.SIGTERM)
        recorder.wait(timeout=30)
        tail.send_signal(signal.SIGINT)  # stops tailing: drains, checkpoints, commits
        _, err = tail.communicate(timeout=60)
        assert tail.returncode == 0, err
    finally:
        driver.send_signal(signal.SIGTERM)
        driver.wait(timeout=30)
    tailed = json.loads((tmp_path / "tail.json").read_text())
    assert tailed["received"] > 0
    # Whatever the tail had not read yet, a resumed replay reads; nothing twice.
    resumed = cli("replay", f"input={capture_dir}", f"data_dir={tail_dir}")
    assert resumed.returncode == 0, resumed.stderr
    assert_same(tmp_path / "live", tail_dir)
