"""``telepipe bench``: the pipeline's own operators over the source's decoded items."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
from rich.console import Console

from telepipe.config import build, load
from telepipe.pipelines.bench import _print, bench, decode_all, encoded_messages

READINGS = 120_000


def test_bench_times_every_output_and_counts_what_they_emit(tmp_path) -> None:
    out = tmp_path / "figures" / "bench.json"
    cfg = load(
        [
            "pipeline=demo",
            f"bench.readings={READINGS}",
            "bench.repeats=2",
            f"bench.out={out}",
            "simulator.options.start_ns=1700000000000000000",
            "simulator.options.late_fraction=0.001",
        ]
    )
    console = Console(record=True, width=120)
    figures = bench(cfg, console)
    assert json.loads(out.read_text()) == figures

    # What the operators saw, decoded again here: the source's items.
    codec = build(cfg.schema, "schema")
    messages = encoded_messages(codec, build(cfg.simulator.options, "simulator.options"), READINGS)
    items, decoder = decode_all(codec, build(cfg.source, "source"), messages, 64)
    batches = [i for i in items if isinstance(i, pa.RecordBatch)]
    sid = np.concatenate([b.column("sensor_id").to_numpy() for b in batches])
    ts = np.concatenate([b.column("ts").cast(pa.int64()).to_numpy() for b in batches])
    assert decoder.counters.late > 0
    assert figures["late_at_source"] == decoder.counters.late
    assert figures["readings_to_operators"] == READINGS - decoder.counters.late == len(ts)

    outputs = figures["outputs"]
    assert list(outputs) == ["readings", "windows", "alarms"]
    assert outputs["readings"]["rows_out"] == len(ts)
    assert outputs["readings"]["readings_per_s"] is None  # nothing to time
    # One 1 s window per sensor and second that holds a reading (none is late here:
    # the source cut every row behind its bound).
    windows = set(zip(sid.tolist(), (ts // 10**9).tolist(), strict=True))
    assert outputs["windows"]["rows_out"] == len(windows)
    assert outputs["windows"]["steps"] == ["window: TumblingWindow"]
    for name in ("windows", "alarms"):
        assert outputs[name]["readings_per_s"] > 0
    assert figures["decoder_readings_per_s"] > 0 and figures["all_outputs_readings_per_s"] > 0

    text = console.export_text()
    assert "telepipe bench: pipeline demo" in text
    assert "all outputs" in text and "TumblingWindow" in text


def test_bench_runs_a_pipeline_of_detectors(telepipe_cli) -> None:
    done = telepipe_cli("bench", "pipeline=press_line", "bench.readings=60000", "bench.repeats=1")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    for name in ("HysteresisAlarm", "Flatline", "EwmaZScore", "all outputs"):
        assert name in done.stdout


def test_a_chain_of_steps_reads_whole_at_80_columns() -> None:
    """Each step on its own line: joined on one, names were cut where the cell wrapped."""
    console = Console(record=True, width=80)
    chain = ["dedup: Dedup", "hysteresis: HysteresisAlarm", "flatline: Flatline"]
    figures = {
        "pipeline": "press_line",
        "readings": 2_000_000,
        "sensors": 1_000,
        "repeats": 3,
        "readings_to_operators": 1_999_000,
        "decoder_readings_per_s": 2.2e7,
        "outputs": {
            "alarms_hysteresis": {"steps": chain, "rows_out": 1_234, "readings_per_s": 2.5e7},
            "readings": {"steps": [], "rows_out": 1_999_000, "readings_per_s": None},
        },
        "all_outputs_readings_per_s": 3.9e6,
    }
    _print(console, figures)
    lines = console.export_text().splitlines()
    for step in chain:
        assert any(step in line for line in lines), step
    assert all(len(line) <= 80 for line in lines)
