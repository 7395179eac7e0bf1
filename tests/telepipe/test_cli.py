"""Bad command lines and bad configs: one readable line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import pytest

BAD = [
    (["run", "bogus=1"], "unknown config key 'bogus'"),
    (["run", "limit.readings"], "is not an override"),
    (["run", "source.stream_id=abc"], "source: stream_id"),
    (
        ["run", "pipeline=nope"],
        "pipeline=nope: no such option (available: demo, ",
    ),
    (["run", "sink.queue.policy=sometimes"], "policy must be one of"),
    (["run", "sink.queue.capacity=0"], "capacity must be >= 1"),
    (["run", "sink.compact_every_commits=-1"], "sink.compact_every_commits must be >= 0"),
    (["run", "sink.target_file_mb=0"], "sink.target_file_mb must be >= 1"),
    (["run", "sink.vacuum_retention_hours=-3"], "sink.vacuum_retention_hours must be null"),
    (["run", "sink.vacuum_retention_hours=soon"], "vacuum_retention_hours"),
    (["run", "sink.compression=lzma"], "sink.compression must be one of snappy, lz4_raw"),
    (["run", "pipeline.outputs.windows.window.size_ms=-5"], "pipeline.outputs.windows.window"),
    (["run", "pipeline.outputs.alarms.alarm.consecutive=0"], "pipeline.outputs.alarms.alarm"),
    (["run", "pipeline.outputs.alarms.alarm.bogus=1"], "unknown config key"),
    (["run", "+pipeline.outputs.alarms.alarm.bogus=1"], "unknown key 'bogus'"),
    (["run", "source.channel=tcp://x"], "source.channel must be an Aeron URI"),
    (["run", "simulator.options.sensors=0"], "simulator.sensors must be >= 1"),
    (["run", "simulator.options.late_fraction=2"], "late_fraction must be in [0, 1]"),
    (["run", "source.stream_id=[1"], "source.stream_id"),
    (["run", "aeron.dir=/nonexistent/aeron"], "no Aeron media driver is running there"),
    (["run", "schema.path=/nonexistent.xml"], "schema"),
    (["bench", "bench.readings=0"], "bench.readings must be an integer >= 1, got 0"),
    (["bench", "bench.repeats=-1"], "bench.repeats must be an integer >= 1, got -1"),
    (["bench", "bench.readings=lots"], "bench: readings: Value 'lots'"),
    (["bench", "bench.bogus=1"], "unknown config key 'bench.bogus'"),
    (["bench", "simulator=none"], "bench needs the simulator's options"),
    (["bench", "bench.out=/proc/nope/x.json"], "bench.out=/proc/nope/x.json: "),
    (["bench", "pipeline=nope"], "pipeline=nope: no such option"),
]


@pytest.mark.parametrize(("args", "expected"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(telepipe_cli, args, expected) -> None:
    done = telepipe_cli(*args, "aeron.driver_timeout_s=0.5", timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[0].startswith("telepipe: error: ")
    assert expected in lines[0]


def test_unknown_command_is_a_usage_error(telepipe_cli) -> None:
    done = telepipe_cli("frobnicate", timeout=60)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "invalid choice: 'frobnicate'" in done.stderr


def test_validate_names_the_tables(telepipe_cli) -> None:
    done = telepipe_cli("validate", "pipeline=demo", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "readings, windows, alarms" in done.stdout
