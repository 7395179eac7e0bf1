"""telepipe.api: docs/api.md's examples run; every input form gives the same tables;
bad inputs are one line; results do not depend on batch sizes; a data dir resumes
exactly (after a completed run and after a savepoint); a table decodes as the same
readings replayed from a capture."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from dead_letter_data import CODEC, T0, telemetry, write_capture
from helpers import ROOT

import telepipe
from telepipe.errors import ConfigError
from telepipe.sources import table as table_source

KEYS = {
    "readings": ["sensor_id", "ts"],
    "windows": ["sensor_id", "window_start"],
    "alarms": ["sensor_id", "ts"],
    "late_readings": ["sensor_id", "ts", "value"],
    "dead_letters": ["reason", "position", "detail"],
}


def readings(n: int = 4000, sensors: int = 4, seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "sensor_id": (np.arange(n) % sensors).astype(np.int32),
            "ts": (T0 + (np.arange(n) // sensors) * 1_000_000).astype("datetime64[ns]"),
            "value": rng.normal(60.0, 15.0, n),
            "quality": np.zeros(n, np.uint8),
        }
    )


def awkward(n: int = 4000) -> pl.DataFrame:
    """Readings with late rows and a ts out of the event-time range."""
    ts = (T0 + (np.arange(n) // 4) * 1_000_000).astype(np.int64)
    ts[[500, 1700, 2900]] -= 800_000_000  # 0.8 s behind: late
    ts[2000] = 2**62 + 1  # rejected
    return readings(n).with_columns(pl.Series("ts", ts))


def same(a: telepipe.Result, b: telepipe.Result) -> None:
    assert a.tables.keys() == b.tables.keys()
    for name, frame in a.tables.items():
        keys = [k for k in KEYS.get(name, frame.columns[:1]) if k in frame.columns]
        assert frame.sort(keys).equals(b[name].sort(keys)), name


@pytest.fixture(scope="module")
def demo() -> telepipe.Pipeline:
    return telepipe.load("demo")


def test_the_docs_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    for block in blocks:
        exec(compile(block, "docs/api.md", "exec"), namespace)
    assert not (tmp_path / "data" / "demo").exists()  # memory runs made nothing
    assert (tmp_path / "data" / "notebook" / "windows").is_dir()


def test_every_input_form_gives_the_same_tables(demo: telepipe.Pipeline, tmp_path: Path) -> None:
    df = readings()
    reference = demo.run(readings=df)
    assert reference.stats.received == 4000 and reference["alarms"].height > 0
    df.write_parquet(tmp_path / "r.parquet")
    df.write_csv(tmp_path / "r.csv")
    forms: list[object] = [
        df.to_arrow(),
        df.to_arrow().to_batches()[0],
        tmp_path / "r.parquet",
        str(tmp_path / "r.csv"),
    ]
    if importlib.util.find_spec("pandas") is not None:
        forms.append(df.to_pandas())
    for form in forms:
        same(reference, demo.run(readings=form))


def test_a_mapping_renames_other_columns(demo: telepipe.Pipeline) -> None:
    df = readings()
    theirs = df.rename({"sensor_id": "tag", "ts": "time", "value": "v", "quality": "q"})
    mapping = {"tag": "sensor_id", "time": "ts", "v": "value", "q": "quality"}
    same(demo.run(readings=df), demo.run(readings=theirs, columns=mapping))


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (lambda df: df.drop("value"), "readings: columns missing ['value']"),
        (lambda df: df.with_columns(pl.col("value").cast(pl.Utf8)), "column value must be"),
        (lambda df: df.head(0), "readings: the table has no rows"),
        (lambda df: df.with_columns(pl.lit("x").alias("ts")), "column ts must be a timestamp"),
    ],
)
def test_a_bad_table_is_one_line(demo: telepipe.Pipeline, bad: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        demo.run(readings=bad(readings(40)))
    assert "\n" not in str(error.value) and expected in str(error.value)


def test_bad_calls_are_one_line(demo: telepipe.Pipeline, tmp_path: Path) -> None:
    cases = [
        (lambda: telepipe.load("nope"), "pipeline=nope"),
        (lambda: telepipe.load(tmp_path / "none.yaml"), "no such file"),
        (lambda: telepipe.load("demo", ["limt.readings=3"]), "limt"),
        (lambda: demo.run(readings(40), sink="memory", data_dir=tmp_path), "leave out data_dir"),
        (lambda: demo.replay(tmp_path / "nothing"), "no such file or directory"),
        (lambda: demo.simulate(0), "readings must be an integer >= 1"),
    ]
    for call, expected in cases:
        with pytest.raises(ConfigError) as error:
            call()
        assert "\n" not in str(error.value) and expected in str(error.value)
    with pytest.raises(KeyError, match="tables: readings, windows"):
        demo.run(readings=readings(40))["nope"]


@pytest.mark.parametrize("batch_rows", [1, 300, 1_000_000])
def test_results_do_not_depend_on_batch_sizes(demo: telepipe.Pipeline, batch_rows: int) -> None:
    df = awkward()
    reference = demo.run(readings=df, overrides=["source.checkpoint_every_readings=700"])
    assert reference.stats.late == 3 and reference.stats.rejected == 1
    assert reference["late_readings"].height == 3
    assert sorted(reference["dead_letters"]["reason"]) == ["late_reading"] * 3 + ["ts_out_of_range"]
    other = demo.run(
        readings=df, batch_rows=batch_rows, overrides=["source.checkpoint_every_readings=700"]
    )
    same(reference, other)


def test_a_data_dir_resumes_exactly_and_a_fresh_one_gives_the_same_tables(
    demo: telepipe.Pipeline, tmp_path: Path
) -> None:
    df = awkward()
    memory = demo.run(readings=df)
    first = demo.run(readings=df, data_dir=tmp_path / "a")
    again = demo.run(readings=df, data_dir=tmp_path / "a")
    fresh = demo.run(readings=df, data_dir=tmp_path / "b", batch_rows=100)
    assert first.stats.received == 4000 - 1 and again.stats.received == 0
    assert again.stats.exit_reason.startswith("already committed up to checkpoint")
    for other in (first, again, fresh):
        same(memory, other)
    with pytest.raises(ConfigError, match="holds checkpoints of input table://sha256-"):
        demo.run(readings=readings(), data_dir=tmp_path / "a")


def test_a_savepoint_then_a_rerun_gives_the_tables_of_one_run(
    demo: telepipe.Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    df = readings(20_000)
    overrides = ["source.checkpoint_every_readings=1000"]
    whole = demo.run(readings=df, overrides=overrides, batch_rows=512)
    polls = 0
    poll = table_source.TableSource.poll

    def stopping_poll(self: table_source.TableSource) -> list[Any]:
        nonlocal polls
        polls += 1
        if polls == 17:  # a SIGINT mid-input, as Interrupt in a notebook
            os.kill(os.getpid(), signal.SIGINT)
        return poll(self)

    monkeypatch.setattr(table_source.TableSource, "poll", stopping_poll)
    handler = signal.getsignal(signal.SIGINT)
    stopped = demo.run(readings=df, data_dir=tmp_path, overrides=overrides, batch_rows=512)
    assert signal.getsignal(signal.SIGINT) is handler
    assert stopped.stats.exit_reason == "SIGINT" and stopped.stats.stopped_with == "savepoint"
    assert 0 < stopped.stats.received < 20_000
    monkeypatch.setattr(table_source.TableSource, "poll", poll)
    rest = demo.run(readings=df, data_dir=tmp_path, overrides=overrides, batch_rows=512)
    assert rest.stats.received == 20_000 - stopped.stats.received
    same(whole, rest)


def test_a_table_decodes_as_the_same_readings_replayed_from_a_capture(
    demo: telepipe.Pipeline, tmp_path: Path
) -> None:
    payloads = [telemetry(i, n=10) for i in range(300)]
    capture = tmp_path / "capture"
    write_capture(capture, payloads)
    replayed = demo.replay(capture)
    batches = [CODEC.decode(p).batch for p in payloads]
    table = pa.Table.from_batches(batches)
    from_table = demo.run(readings=table)
    assert replayed.stats.received == from_table.stats.received == 3000
    for name in ("readings", "windows", "alarms"):
        keys = KEYS[name]
        assert replayed[name].sort(keys).equals(from_table[name].sort(keys)), name


def test_a_pipeline_from_a_yaml_file_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\noutputs:\n  hot:\n    alarm:\n"
        "      _target_: telepipe.operators.ThresholdAlarm\n"
        "      threshold: 1000.0\n      consecutive: 1\n"
    )
    pipeline = telepipe.load(path, ["pipeline.outputs.hot.alarm.threshold=70"])
    assert pipeline.name == "mine"
    result = pipeline.run(readings=readings())
    assert set(result.tables) == {"hot", "late_readings", "dead_letters"}
    assert result["hot"].height > 0
    assert (result["hot"]["value"] > 70).all()


def test_simulate_runs_live_on_the_simulator(demo: telepipe.Pipeline) -> None:
    result = demo.simulate(5_000, overrides=["simulator.options.sensors=20"])
    assert result.stats.received >= 5_000
    assert result["readings"].height == result.stats.committed_by_table["readings"]
