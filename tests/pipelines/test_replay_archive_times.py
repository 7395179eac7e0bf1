"""Time on an Aeron Archive replay (issue 17 case 5): frames in ``.rec`` files carry no
receive time, the catalog's start and stop timestamps give one. Without them a time
bound or a speed is refused in one line; a bound that selects nothing says so; a speed
paces the replay over the recording's span."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from archive_builder import Log, Recording, write_catalog, write_segments
from helpers import SCHEMA_XML

from telepipe.sbe import SbeCodec
from telepipe.sources.decoder import DecoderOptions
from telepipe.sources.replay import ReplayOptions, ReplaySource

Cli = Callable[..., subprocess.CompletedProcess[str]]
START_MS = 1_767_225_600_000
SPAN_MS = 1_600


def archive(directory: Path, start_ms: int, stop_ms: int, n: int = 200) -> Path:
    log = Log(7, 42, 1001, term_length=64 << 10)
    for i in range(n):
        log.append(i.to_bytes(4, "little") * 50, reserved=0)  # no publisher stamp
    recording = Recording(log, 0, 0, len(log.buf), segment_length=256 << 10,
                          start_ms=start_ms, stop_ms=stop_ms)  # fmt: skip
    directory.mkdir(parents=True)
    write_segments(directory, recording)
    write_catalog(directory, [recording])
    return directory


def test_time_bounds_and_speed_need_the_catalogs_timestamps(
    tmp_path: Path, telepipe_cli: Cli
) -> None:
    """A catalog without start timestamps (0): a time bound would replay nothing
    (from) or everything (to), a speed would have no effect: each is refused in one
    line, exit 2. Position bounds still work."""
    path = archive(tmp_path / "archive", 0, 0)
    run = telepipe_cli
    for bound, key in [
        ("replay.from='2026-01-01T00:00:00'", "replay.from"),
        ("replay.to='2026-01-01T00:00:00'", "replay.to"),
        ("replay.speed=4", "replay.speed"),
    ]:
        done = run("replay", f"input={path}", f"data_dir={tmp_path / 'out'}", bound)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"telepipe: error: {key}: "), lines
        assert "no start time" in lines[0] and str(path) in lines[0]
    stats = tmp_path / "stats.json"
    done = run("replay", f"input={path}", f"data_dir={tmp_path / 'by-position'}",
               "replay.from=32768", f"stats_file={stats}")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(stats.read_text())["messages"] > 0


@pytest.mark.parametrize(
    ("bound", "name"),
    [("replay.from='2030-01-01T00:00:00'", "from"), ("replay.to='2020-01-01T00:00:00'", "to")],
)
def test_a_time_bound_that_selects_nothing_says_so(
    tmp_path: Path, telepipe_cli: Cli, bound: str, name: str
) -> None:
    """Before: 0 messages, exit 0 and no word of why. Now one note line naming the bound
    and the input's time range; still exit 0 (an empty selection is not an error)."""
    path = archive(tmp_path / "archive", START_MS, START_MS + SPAN_MS)
    stats = tmp_path / "stats.json"
    done = telepipe_cli(
        "replay", f"input={path}", f"data_dir={tmp_path / 'out'}", bound, f"stats_file={stats}"
    )
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if line.startswith("telepipe: note:")]
    assert len(notes) == 1, done.stderr
    assert f"replay.{name}=" in notes[0] and f"selects no message of {path}: " in notes[0]
    assert "were received 2026-01-01T00:00:00." in notes[0]  # the recording's span
    assert json.loads(stats.read_text())["messages"] == 0
    within = telepipe_cli(
        "replay", f"input={path}", f"data_dir={tmp_path / 'within'}",
        "replay.from='2026-01-01T00:00:00.800'",
    )  # fmt: skip
    assert within.returncode == 0 and "telepipe: note:" not in within.stderr, within.stderr


def replay_wall_time(path: Path, speed: float | None) -> tuple[float, int]:
    """(seconds to replay ``path`` at ``speed``, polls that held a message back)."""
    source = ReplaySource(
        path, ReplayOptions(speed=speed), SbeCodec.from_xml(SCHEMA_XML), DecoderOptions()
    )
    held, started = 0, time.monotonic()
    while not source.exhausted:
        source.poll()
        held += source._pending is not None
    return time.monotonic() - started, held


def test_speed_paces_an_archive_replay_over_the_recordings_span(tmp_path: Path) -> None:
    """Messages get times spread over the catalog's [start, stop] (1.6 s here), so
    replay.speed=4 takes at least 0.4 s, holding messages back until due; speed=max
    holds none and is faster. (Before 737d95b: no effect, every message at once.)"""
    path = archive(tmp_path / "archive", START_MS, START_MS + SPAN_MS)
    paced, held = replay_wall_time(path, 4.0)
    fastest, none_held = replay_wall_time(path, None)
    assert paced >= SPAN_MS / 1000 / 4 * 0.99  # pacing's lower bound (never an upper one)
    assert held > 0 and none_held == 0
    assert fastest < paced
