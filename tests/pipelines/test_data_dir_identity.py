"""A data dir knows what wrote it (issue 20 item 5): every checkpoint commit names the
pipeline and a hash of its composed config (and the input); a run of another pipeline
into it is refused in one line (a live run unless fresh=true); a replay of an input
already committed to its end says so instead of "0 readings"; ``dlq replay`` runs the
pipeline that wrote the data dir; ``make demo`` starts from an empty data/demo."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from dead_letter_data import telemetry, write_capture
from deltalake import DeltaTable
from helpers import ROOT

from telepipe.config import load
from telepipe.errors import ConfigError
from telepipe.pipelines import dlq
from telepipe.pipelines.assembly import plan
from telepipe.pipelines.registry import pipeline_identity
from telepipe.pipelines.runner import run
from telepipe.sinks.dead_letter_store import DeadLetterStore
from telepipe.sinks.delta import PIPELINE, PIPELINE_HASH, written_by

pytest_plugins = ["dead_letter_fixtures"]


@pytest.fixture(autouse=True)
def _keep_signal_handlers() -> Iterator[None]:
    """The runner installs its stop handlers; this process goes on after it."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def replay(capture: Path, data_dir: Path, *more: str) -> int:
    overrides = [f"data_dir={data_dir}", f"input={capture}", "ui=never", *more]
    return run(load(overrides), overrides, str(capture))


@pytest.fixture
def replayed(tmp_path: Path) -> tuple[Path, Path]:
    capture = tmp_path / "capture"
    write_capture(capture, [telemetry(i, n=10) for i in range(30)])
    assert replay(capture, tmp_path / "data", "pipeline=demo") == 0
    return capture, tmp_path / "data"


def test_every_checkpoint_commit_names_the_pipeline_and_its_config_hash(
    replayed: tuple[Path, Path],
) -> None:
    capture, data_dir = replayed
    cfg = load(["pipeline=demo"])
    identity = pipeline_identity(cfg.pipeline)
    assert identity[PIPELINE] == "demo" and len(identity[PIPELINE_HASH]) == 16
    # Another option of a step is another hash; the same config, the same hash.
    other = load(["pipeline=demo", "pipeline.outputs.alarms.alarm.threshold=81"])
    assert pipeline_identity(other.pipeline)[PIPELINE_HASH] != identity[PIPELINE_HASH]
    assert pipeline_identity(load(["pipeline=demo"]).pipeline) == identity
    for table in ("readings", "windows", "alarms", "late_readings", "dead_letters"):
        commits = [
            c for c in DeltaTable(str(data_dir / table)).history() if "telepipe.checkpoint_id" in c
        ]
        assert commits, table
        for commit in commits:
            assert commit[PIPELINE] == "demo" and commit[PIPELINE_HASH] == identity[PIPELINE_HASH]
            assert commit["telepipe.input"] == str(capture.resolve())
    recorded = written_by(data_dir)
    assert recorded[PIPELINE] == "demo" and recorded[PIPELINE_HASH] == identity[PIPELINE_HASH]


def test_replaying_an_input_committed_to_its_end_says_so(
    replayed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    capture, data_dir = replayed
    rows = pl.read_delta(str(data_dir / "readings")).height
    version = DeltaTable(str(data_dir / "readings")).version()
    capsys.readouterr()
    assert replay(capture, data_dir, "pipeline=demo") == 0
    out = capsys.readouterr().out
    k = written_by(data_dir)["telepipe.checkpoint_id"]
    assert f"is already committed up to checkpoint {k} (its end)" in out, out
    assert "0 readings" not in out
    assert pl.read_delta(str(data_dir / "readings")).height == rows == 300
    assert DeltaTable(str(data_dir / "readings")).version() == version  # nothing committed


def test_a_replay_of_another_pipeline_is_refused_in_one_line(replayed: tuple[Path, Path]) -> None:
    capture, data_dir = replayed
    with pytest.raises(ConfigError) as caught:
        replay(capture, data_dir, "pipeline=press_line")
    text = str(caught.value)
    assert "\n" not in text
    assert "was written by pipeline demo" in text and "not press_line" in text, text
    assert "replay into another data_dir" in text
    assert not (data_dir / "stats_10s").exists()  # nothing of press_line written


def test_a_live_run_of_another_pipeline_is_refused_unless_fresh(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    done = subprocess.run(
        [sys.executable, "-m", "telepipe.cli", "run", "pipeline=demo", f"data_dir={data_dir}",
         "limit.readings=20000", "simulator.options.sensors=20", "ui=never"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert written_by(data_dir)[PIPELINE] == "demo"
    refused = subprocess.run(
        [sys.executable, "-m", "telepipe.cli", "run", "pipeline=press_line",
         f"data_dir={data_dir}", "limit.readings=1000", "ui=never"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "was written by pipeline demo" in lines[0], refused.stderr
    assert "fresh=true" in lines[0]
    # fresh=true: the plan goes ahead (its operators start empty); the same pipeline too.
    overrides = ["pipeline=press_line", f"data_dir={data_dir}", "fresh=true"]
    assert plan(load(overrides), overrides).fresh
    overrides = ["pipeline=demo", f"data_dir={data_dir}"]
    assert plan(load(overrides), overrides).recovery is not None


def test_dlq_replay_runs_the_pipeline_that_wrote_the_data_dir(store: DeadLetterStore) -> None:
    assert dlq.which_pipeline(store.data_dir, None) == "demo"
    first = store.list()["id"].to_list()[:1]
    with pytest.raises(ConfigError, match="was written by pipeline demo: --pipeline press_line"):
        dlq.replay(store, first, confirm=True, pipeline="press_line", actor="t")
    entry = dlq.replay(store, first, confirm=True, pipeline=None, actor="t")
    assert entry["detail"]["pipeline"] == "demo"
    assert not (store.data_dir / "stats_10s").exists()


def test_dlq_replay_without_a_record_needs_pipeline(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"records no pipeline.*--pipeline NAME"):
        dlq.which_pipeline(tmp_path, None)
    assert dlq.which_pipeline(tmp_path, "press_line") == "press_line"


def test_make_demo_starts_from_an_empty_data_dir() -> None:
    done = subprocess.run(
        ["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    lines = done.stdout.splitlines()
    wipe = next(i for i, line in enumerate(lines) if line.strip() == "rm -rf data/demo")
    run_line = next(i for i, line in enumerate(lines) if "telepipe run pipeline=demo" in line)
    assert wipe < run_line and "data_dir=data/demo" in lines[run_line]
