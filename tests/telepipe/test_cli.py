"""Bad command lines and bad configs: one readable line on stderr, exit code 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

RESAMPLE = "+pipeline.outputs.alarms.resample={_target_:telepipe.operators.Resample}"
ALARM = "+pipeline.outputs.alarms.alarm={_target_:telepipe.operators.ThresholdAlarm,threshold:80}"

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
    (["run", "source.channel=aeron:foo"], "source.channel must be an Aeron URI"),
    (["validate", "source.channel=aeron:tcp?endpoint=x"], "source.channel must be an Aeron URI"),
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
    # Top-level keys (telepipe/top_level.py): refused before anything starts.
    (["run", "limit.readings=abc"], "limit.readings must be a whole number >= 1"),
    (["run", "limit.readings=-5"], "limit.readings must be a whole number >= 1"),
    (["run", "limit.readings=1.5"], "limit.readings must be a whole number >= 1"),
    (["run", "limit.readings=true"], "limit.readings must be a whole number >= 1"),
    (["run", "limit.idle_s=abc"], "limit.idle_s must be a number of seconds > 0"),
    (["run", "metrics.port=abc"], "metrics.port must be a TCP port 1-65535"),
    (["run", "metrics.port=99999"], "metrics.port must be a TCP port 1-65535"),
    (["run", "source.stream_id=99999999999"], "source.stream_id must be an int32"),
    (["run", "ui=sometimes"], "ui must be one of auto, always, never"),
    (["run", "stats_file=/tmp"], "stats_file=/tmp is a directory"),
    (["run", "stats_file=/etc/hostname/s.json"], "stats_file=/etc/hostname/s.json: cannot"),
    (["run", "stats_file="], "stats_file must be a file path, got ''"),
    (["run", "data_dir="], "data_dir must be a directory path, got ''"),
    (["run", "data_dir=/etc/hostname/d"], "data_dir=/etc/hostname/d: cannot be made"),
    (["run", "capture_dir=/etc/hostname/c"], "capture_dir=/etc/hostname/c: cannot be made"),
    (["run", "capture_dir= "], "capture_dir must be a directory path, got ''"),
    (["run", "data_dir=/etc/hostname"], "data_dir=/etc/hostname exists and is not a directory"),
    (["run", "data_dir=null"], "data_dir must be a directory path, got null"),
    (["bench", "bench.out=/tmp"], "bench.out=/tmp is a directory"),
    (["validate", "limit.readings=abc"], "limit.readings must be a whole number >= 1"),
    (["validate", "replay.follow=maybe"], "replay.follow must be true or false"),
    (["simulate", "simulator=none"], "telepipe simulate needs a simulator"),
    # Sink settings for every table, replay settings, the schema through each chain.
    (["run", "pipeline=press_line", "sink=kudu"], "sink.primary_key has no entry for table"),
    (["run", "replay.speed=fast"], "replay.speed: 'max' or a factor > 0, got 'fast'"),
    (["run", "replay.from=yesterday"], "replay.from: expected a position (int) or a time"),
    (["replay", "input=/nonexistent/capture"], "no such file or directory"),
    (["replay", "input=/dev/null"], "not a regular file"),
    (
        ["run", "~pipeline.outputs.alarms.alarm", RESAMPLE, ALARM],
        "pipeline.outputs.alarms.alarm: ThresholdAlarm needs the columns ['sensor_id', 'ts', "
        "'value', 'quality'], but step 'resample' (Resample) gives ['sensor_id', 'ts', 'value', "
        "'filled'] (missing ['quality'], unknown ['filled'])",
    ),
    (["run", "simulator=none"], "nothing else can publish to it; give aeron.dir="),
    (
        ["validate", "pipeline=demo_publish", "pipeline.publish.alarms.schema=/nonexistent.xml"],
        "pipeline.publish.alarms: SBE schema /nonexistent.xml: cannot read",
    ),
    (
        ["validate", "pipeline=demo_publish", "pipeline.publish.alarms.rows_per_message=0"],
        "rows_per_message must be in 1..65535",
    ),
    (
        ["validate", "schema.path=/nonexistent.xml"],
        "schema: SBE schema /nonexistent.xml: cannot read",
    ),
    (
        ["validate", "pipeline=press_line", "pipeline.outputs.stuck.flatline.bogus=1"],
        "unknown config key",
    ),
]


@pytest.mark.parametrize(("args", "expected"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(telepipe_cli, args, expected, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    given = any(a.startswith("data_dir=") for a in args) or args[0] not in ("run", "replay")
    extra = [] if given else [f"data_dir={data_dir}"]
    done = telepipe_cli(*args, *extra, "aeron.driver_timeout_s=0.5", timeout=60)
    assert done.returncode == 2, done.stderr
    # Refused from the config alone: no data dir, no lock made (Aeron is tried later).
    assert not data_dir.exists() or "aeron.dir=" in args[1], sorted(data_dir.iterdir())
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


def test_driver_refuses_a_dir_it_would_delete(telepipe_cli, tmp_path) -> None:
    """The driver deletes its directory at start and at shutdown: a path holding anything
    but Aeron's files, or a file, is refused and left as it was."""
    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "a.txt").write_text("keep")
    a_file = tmp_path / "a_file"
    a_file.write_text("keep")
    for path, expected in [(precious, "is not an Aeron directory"), (a_file, "not a directory")]:
        done = telepipe_cli("driver", "--dir", str(path), timeout=60)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], done.stderr
    assert (precious / "a.txt").read_text() == "keep" and (precious / "sub").is_dir()
    assert a_file.read_text() == "keep"


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/nonexistent/capture", "no such file or directory"), ("/dev/null", "not a regular file")],
)
def test_inspect_and_replay_of_a_path_that_is_no_input_are_one_line_exit_2(
    telepipe_cli, tmp_path, path: str, expected: str
) -> None:
    for args in (["inspect", path], ["replay", f"input={path}", f"data_dir={tmp_path}"]):
        done = telepipe_cli(*args, timeout=60)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], done.stderr


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("telepipe.nonexistent.Mod", "._target_: cannot import 'telepipe.nonexistent.Mod'"),
        ("nonexistent.Mod", "._target_: 'nonexistent.Mod' is not a telepipe component"),
        ("os.system", "alarm._target_: 'os.system' is not a telepipe component"),
        ("subprocess.run", "alarm._target_: 'subprocess.run' is not a telepipe component"),
    ],
)
def test_a_bad_target_is_exactly_one_line(telepipe_cli, target: str, expected: str) -> None:
    done = telepipe_cli("validate", f"pipeline.outputs.alarms.alarm._target_={target}", timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert lines[0].count("pipeline.outputs.alarms.alarm") == 1


def test_a_table_of_other_columns_in_data_dir_is_refused_before_the_run(
    telepipe_cli, tmp_path
) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake

    write_deltalake(str(tmp_path / "windows"), pa.table({"a": [1], "b": ["x"]}))
    done = telepipe_cli("run", "limit.readings=20000", f"data_dir={tmp_path}", timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"table windows in {tmp_path} has columns ['a', 'b'], but this pipeline" in lines[0]
    assert not (tmp_path / "readings").exists()


def test_a_table_with_a_column_of_another_type_is_refused_before_the_run(
    telepipe_cli, tmp_path
) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake

    from telepipe.schema import WINDOWS
    from telepipe.sinks.delta_types import delta_schema

    schema = delta_schema(WINDOWS)
    columns = {f.name: pa.array([], f.type) for f in schema}
    columns["count"] = pa.array([], pa.float64())
    write_deltalake(str(tmp_path / "windows"), pa.table(columns))
    done = telepipe_cli("run", "limit.readings=20000", f"data_dir={tmp_path}", timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "column 'count' is double, but this pipeline writes int64" in lines[0]


def test_a_channel_the_driver_refuses_is_one_line_with_its_reason(telepipe_cli, tmp_path) -> None:
    done = telepipe_cli(
        "run", "source=aeron_udp", "source.channel=aeron:udp?endpoint=127.0.0.1:99999",
        "limit.readings=1000", f"data_dir={tmp_path}", timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "cannot subscribe to aeron:udp?endpoint=127.0.0.1:99999" in lines[0]
    assert "port out of range: '99999'" in lines[0]


def test_a_data_dir_another_process_writes_is_refused(telepipe_cli, tmp_path) -> None:
    """Two replays into one data dir each commit the rows once: one writer per data dir."""
    from telepipe.sinks import data_dir_lock

    with data_dir_lock.hold(tmp_path):  # as a running pipeline holds it
        done = telepipe_cli("run", "limit.readings=20000", f"data_dir={tmp_path}", timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "another telepipe process is writing it" in lines[0]
    assert not (tmp_path / "readings").exists()
    done = telepipe_cli("run", "limit.readings=20000", f"data_dir={tmp_path}", timeout=120)
    assert done.returncode == 0, done.stderr  # the lock goes with its holder


def test_a_nested_target_outside_telepipe_is_refused(telepipe_cli) -> None:
    """Hydra instantiates nested ``_target_`` nodes too: each one is checked."""
    done = telepipe_cli(
        "validate",
        "+schema.nested._target_=os.system",
        "+schema.nested._args_=[touch /tmp/telepipe-pwned]",
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "'os.system' is not a telepipe component" in done.stderr
    assert not Path("/tmp/telepipe-pwned").exists()


def test_a_reader_that_leaves_early_is_no_traceback() -> None:
    """``telepipe dlq list | head -1``: stdout's reader is gone before telepipe writes."""
    import subprocess
    import sys

    done = subprocess.Popen(
        [sys.executable, "-m", "telepipe", "validate"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert done.stdout is not None and done.stderr is not None
    done.stdout.close()
    err = done.stderr.read().decode()
    assert done.wait(timeout=120) == 141 and err == ""
