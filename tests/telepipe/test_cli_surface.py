"""The CLI's conventions (issue 20 items 1 and 7): "did you mean", a ``+key`` hint only
where telepipe reads the key, ``--help`` listing groups and keys, ``telepipe config``,
pipelines of one's own (``--config-dir`` / ``config_dir=``, ``pipeline=path.yaml``)
used from a directory outside the checkout, and the summary's next steps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from telepipe import cli
from telepipe.cli import COMMANDS
from telepipe.stats import RunStats, print_summary


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli._main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["limt.readings=1"],
            "unknown config key 'limt.readings' (did you mean 'limit.readings'?)",
        ),
        (
            ["+limt.readings=1"],
            "unknown config key 'limt.readings' (did you mean 'limit.readings'?)",
        ),
        (["limit.readngs=3"], "(did you mean 'limit.readings'?)"),
        (
            ["pipeline.outputs.alarms.alarm.threshhold=3"],
            "'pipeline.outputs.alarms.alarm.threshold'",
        ),
        (
            ["pipeline=dmeo"],
            "pipeline=dmeo: no such option (did you mean pipeline=demo? available:",
        ),
        (["sink=dleta"], "did you mean sink=delta?"),
        (["+bogus=1"], "unknown config key 'bogus' (keys there: source, "),
        (["pipeline.outputs.newt.x=1"], "use +pipeline.outputs.newt.x=..."),
    ],
)
def test_did_you_mean(args: list[str], expected: str, capsys) -> None:
    code, out, err = _cli(["validate", *args], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and expected in err, err
    if "did you mean" in expected:
        assert "+" not in err.split("(", 1)[1]  # never +key for a typo of a key that is there


def test_an_added_key_telepipe_reads_is_taken(capsys) -> None:
    step = "+pipeline.outputs.extra.w={_target_:telepipe.operators.TumblingWindow}"
    code, out, err = _cli(["validate", step], capsys)
    assert code == 0, err
    assert "readings, windows, alarms, extra" in out


@pytest.mark.parametrize(
    "command", [c for c, (_, kind, _) in COMMANDS.items() if kind == "overrides"]
)
def test_help_lists_groups_with_options_and_keys_with_defaults(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        cli._main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--config-dir DIR" in out
    if command == "capture":
        assert "out=???" in out and "aeron.dir=null" in out
        return
    assert "pipeline: demo (default), demo_publish, demo_threaded, equipment, press_line" in out
    assert "sink: delta (default), kudu" in out
    for key in ("limit.readings=null", "replay.speed=max", "ui=auto", "data_dir=data/"):
        assert key in out


def test_config_prints_the_composed_config(capsys) -> None:
    code, out, _ = _cli(["config", "pipeline=press_line", "sink=kudu", "limit.readings=5"], capsys)
    assert code == 0
    assert "name: press_line" in out and "KuduSinkOptions" in out and "readings: 5" in out
    assert "data_dir: data/press_line" in out  # resolved


PIPELINE = """\
name: mine
outputs:
  readings: {}
  fast_windows:
    window:
      _target_: telepipe.operators.TumblingWindow
      size_ms: 250
"""


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telepipe", *args],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )  # fmt: skip


def test_pipelines_of_ones_own_from_outside_the_checkout(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    (mine / "pipeline").mkdir(parents=True)
    (mine / "pipeline" / "mine.yaml").write_text(PIPELINE)
    work = tmp_path / "work"
    work.mkdir()

    for args in (["--config-dir", str(mine)], [f"config_dir={mine}"]):
        done = _run(work, "validate", *args, "pipeline=mine")
        assert done.returncode == 0, done.stderr
        assert "pipeline mine -> tables readings, fast_windows" in done.stdout
        # It adds to the packaged config: its pipelines are still there.
        done = _run(work, "validate", *args, "pipeline=press_line")
        assert done.returncode == 0, done.stderr

    done = _run(work, "validate", "pipeline=../mine/pipeline/mine.yaml")
    assert done.returncode == 0, done.stderr
    assert "pipeline mine -> tables readings, fast_windows" in done.stdout

    done = _run(work, "config", "pipeline=../mine/pipeline/mine.yaml", "limit.readings=7")
    assert done.returncode == 0, done.stderr
    assert "size_ms: 250" in done.stdout and "readings: 7" in done.stdout

    # Errors name the user's file (and line), not the package's conf/.
    bad = "pipeline.outputs.fast_windows.window.size_ms=-1"
    done = _run(work, "validate", f"config_dir={mine}", "pipeline=mine", bad)
    assert done.returncode == 2
    line = done.stderr.strip()
    assert "pipeline.outputs.fast_windows.window: TumblingWindow.size_ms" in line
    assert f"(in {mine / 'pipeline' / 'mine.yaml'} line 5)" in line
    (mine / "pipeline" / "broken.yaml").write_text("name: broken\noutputs: [\n")
    done = _run(work, "validate", "pipeline=../mine/pipeline/broken.yaml")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert str(mine / "pipeline" / "broken.yaml") in done.stderr
    assert "telepipe-conf-" not in done.stderr
    (mine / "pipeline" / "empty.yaml").write_text("")
    done = _run(work, "validate", f"config_dir={mine}", "pipeline=empty")
    assert done.returncode == 2
    assert f"{mine / 'pipeline' / 'empty.yaml'} must be a mapping" in done.stderr
    done = _run(work, "validate", "pipeline=nope/x.yaml")
    assert "pipeline=nope/x.yaml: no such file" in done.stderr
    done = _run(work, "validate", f"config_dir={tmp_path / 'absent'}")
    assert "no such directory" in done.stderr


def test_the_summary_names_late_readings_and_ends_with_next_steps() -> None:
    stats = RunStats(received=2_000_000, late=196, rejected=0, data_dir="/d/demo")
    stats.committed_by_table = {"readings": 1_999_804, "dead_letters": 185, "late_readings": 196}
    stats.output_rows_by_table = {"readings": 1_999_804}
    console = Console(record=True, width=400)
    print_summary(stats, console)
    text = console.export_text()
    assert "dead_letters=185" in text
    assert "(dead letters: 185 messages of late readings, 0 rejected)" in text
    last = text.strip().splitlines()[-1]
    assert last.startswith("telepipe: next: ")
    assert "notebooks/explore_demo.ipynb" in last
    assert "telepipe inspect" in last and "telepipe dlq list --data-dir /d/demo" in last
