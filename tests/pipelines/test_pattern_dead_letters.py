"""A pattern's dropped partial matches in a pipeline (issue 22 item 3): a ``CepPattern``
step with a small ``max_partial_matches`` sends each start reading a limit dropped
downstream as ``SideOutput("pattern_dropped", ...)``; routing writes it to
``dead_letters`` (reason ``pattern_partial_match_dropped``, ``where`` = table.step,
the first reading as the payload, ``received_ns`` its ts). They are what the logic
counts in its stats, exactly once across a SIGKILL at a commit and a restart, and a
pipeline with the default limits writes none."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from replay_faults_common import assert_same, checkpoints, replay, tables, two_session_capture

from telepipe.operators import CepPattern
from telepipe.operators.patterns.logic import PATTERN_DROPPED
from telepipe.sbe import SbeCodec

REASON = "pattern_partial_match_dropped"
STEP = """
      _target_: telepipe.operators.CepPattern
      name: up_then_never
      steps:
        - {name: up, condition: value > 60, contiguity: begin}
        - {name: never, condition: value < -1000000, contiguity: followed_by}
"""


def pipeline_yaml(base: Path, limit: int | None) -> Path:
    """The demo's readings, plus a pattern whose partial matches never complete (so
    every start stays partial): ``limit`` slots per sensor, or the defaults."""
    step = STEP + (f"      max_partial_matches: {limit}\n" if limit else "")
    path = base / f"patterns_{limit or 'default'}.yaml"
    path.write_text(f"name: patterns\noutputs:\n  readings: {{}}\n  spikes:\n    cep:{step}")
    return path


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pattern_dead_letters")
    capture = two_session_capture(base)
    small = pipeline_yaml(base, 4)
    reference = base / "reference"
    done = replay(str(small), capture, reference)
    assert done.returncode == 0, done.stderr
    return {"capture": capture, "reference": reference, "small": small, "base": base}


def letters(data_dir: Path) -> pl.DataFrame:
    frame = tables(data_dir)["dead_letters"]
    return frame.filter(frame["reason"] == REASON)


def test_dropped_starts_are_dead_letters_counted_as_the_logic_counts_them(
    recorded: dict[str, Path],
) -> None:
    got = letters(recorded["reference"])
    assert got.height > 100
    assert all("spikes.cep" in d and "max_partial_matches=4" in d for d in got["detail"])
    assert all("\n" not in d for d in got["detail"])
    assert got["id"].n_unique() == got.height
    # The same readings through the logic alone: its stats count the same start readings.
    readings = tables(recorded["reference"])["readings"].sort(["ts", "sensor_id"])
    op = CepPattern(
        "up_then_never",
        ({"name": "up", "condition": "value > 60", "contiguity": "begin"},  # type: ignore[arg-type]
         {"name": "never", "condition": "value < -1000000"}),
        max_partial_matches=4,
    )  # fmt: skip
    logic = op.build()
    logic.on_batch(_batch(readings))
    logic.on_watermark(2**63 - 1)
    stats = logic.stats()
    side = logic.take_side()
    assert {tag for tag, _ in side} == {PATTERN_DROPPED}
    assert stats["dead_letters"] == got.height == sum(b.num_rows for _, b in side)
    # Each letter is its first reading, encoded as a late row is, stamped with its ts.
    start = pa.concat_batches([b for _, b in side])
    assert sorted(t // 1000 for t in got["received_ns"].to_list()) == sorted(
        t // 1000 for t in start.column("start_ts").cast(pa.int64()).to_pylist()
    )  # the readings table keeps microseconds
    codec = SbeCodec.from_xml(Path(__file__).parents[2] / "conf/schema/telemetry.xml")
    decoded = pa.concat_batches(
        [codec.decode_one(p).batch for p in got.sort("received_ns")["payload"].to_list()]
    )
    assert decoded.column("ts").cast(pa.int64()).to_pylist() == sorted(got["received_ns"].to_list())
    assert all(v > 60 for v in decoded.column("value").to_pylist())


def _batch(frame: pl.DataFrame) -> pa.RecordBatch:
    table = frame.select("sensor_id", "ts", "value", "quality").to_arrow()
    schema = pa.schema(
        [("sensor_id", pa.int32()), ("ts", pa.timestamp("ns")), ("value", pa.float64()),
         ("quality", pa.uint8())]
    )  # fmt: skip
    return table.cast(schema).combine_chunks().to_batches()[0]


KILLS = ["after:dead_letters:3", "before:dead_letters:5", "after:spikes:4", "before:readings:end"]


@pytest.mark.parametrize("kill", KILLS)
def test_a_kill_then_a_restart_writes_each_dead_letter_once(
    recorded: dict[str, Path], tmp_path: Path, kill: str
) -> None:
    _, table, k = kill.split(":")
    if k != "end" and int(k) not in checkpoints(recorded["reference"], table):
        pytest.skip(f"{table} committed no checkpoint {k}")
    data_dir = tmp_path / "killed"
    small = str(recorded["small"])
    killed = replay(small, recorded["capture"], data_dir, kill)
    assert killed.returncode == -9, f"{kill}: not killed ({killed.returncode}): {killed.stderr}"
    done = replay(small, recorded["capture"], data_dir)
    assert done.returncode == 0, done.stderr
    assert_same(tables(recorded["reference"]), data_dir)
    got = letters(data_dir)
    assert got["id"].n_unique() == got.height == letters(recorded["reference"]).height


def test_the_default_limits_drop_nothing(recorded: dict[str, Path]) -> None:
    data_dir = recorded["base"] / "default"
    default = pipeline_yaml(recorded["base"], None)
    done = replay(str(default), recorded["capture"], data_dir)
    assert done.returncode == 0, done.stderr
    assert letters(data_dir).height == 0
    assert REASON not in tables(data_dir)["dead_letters"]["reason"].to_list()
