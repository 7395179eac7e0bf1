"""The table source: readings checked and converted in one line, decoded as the same
readings over Aeron (late rows, out-of-range ts), checkpoints by rows whatever the
poll size, and an exact resume after a checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from telepipe.config import build, load
from telepipe.errors import ConfigError
from telepipe.markers import CheckpointBarrier, Item, Watermark
from telepipe.sbe import SbeCodec
from telepipe.sources.decoder import DecoderOptions
from telepipe.sources.replay import END_OF_INPUT, Resume
from telepipe.sources.table import TableSource, TableSourceOptions, as_readings

T0 = 1_767_225_600_000_000_000


@pytest.fixture(scope="module")
def codec() -> SbeCodec:
    built: SbeCodec = build(load([]).schema, "schema")
    return built


def frame(n: int = 1000, sensors: int = 4) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "sensor_id": np.arange(n) % sensors,
            "ts": T0 + (np.arange(n) // sensors) * 1_000_000,
            "value": np.linspace(0.0, 100.0, n),
            "quality": np.ones(n, np.uint8),
        }
    )


def drain(source: TableSource) -> list[Item]:
    items: list[Item] = []
    while not source.exhausted:
        items += source.poll()
    return items


def rows(items: list[Item]) -> pa.Table:
    batches = [i for i in items if isinstance(i, pa.RecordBatch)]
    return pa.Table.from_batches(batches)


def barriers(items: list[Item]) -> list[tuple[int, dict[str, int]]]:
    return [(i.checkpoint_id, i.positions) for i in items if isinstance(i, CheckpointBarrier)]


def test_the_reading_types_whatever_the_input_types() -> None:
    table = as_readings(
        pl.DataFrame(
            {
                "sensor_id": pl.Series([1, 2], dtype=pl.Int64),
                "ts": pl.Series([T0, T0 + 1])
                .cast(pl.Datetime("ns", "UTC"))
                .dt.cast_time_unit("us")
                .dt.convert_time_zone("Europe/Berlin"),
                "value": [1, None],
                "extra": ["a", "b"],
            }
        )
    )
    assert table.schema == pa.schema(
        [
            ("sensor_id", pa.int32()),
            ("ts", pa.timestamp("ns")),
            ("value", pa.float64()),
            ("quality", pa.uint8()),
        ]
    )
    assert table.column("quality").to_pylist() == [0, 0]  # left out: 0
    assert np.isnan(table.column("value").to_pylist()[1])  # null: NaN
    ts = table.column("ts").cast(pa.int64()).to_pylist()  # (us: truncated, as UTC)
    assert ts == [T0, T0]


def test_integer_ns_and_a_mapping() -> None:
    theirs = pa.table({"tag": [5], "time": [T0 + 7], "v": [1.5], "q": [3]})
    table = as_readings(theirs, {"tag": "sensor_id", "time": "ts", "v": "value", "q": "quality"})
    assert table.column("sensor_id").to_pylist() == [5]
    assert table.column("ts").cast(pa.int64()).to_pylist() == [T0 + 7]


@pytest.mark.parametrize(
    ("readings", "columns", "expected"),
    [
        (pa.table({"sensor_id": [1], "ts": [T0]}), None, "columns missing ['value']"),
        (pa.table({"sensor_id": [1], "ts": [T0]}), {"nope": "value"}, "names ['nope']"),
        (pa.table({"a": [1]}), {"a": "sensor"}, "maps to ['sensor']"),
        (pa.table({"sensor_id": pa.array([], pa.int32()), "ts": [], "value": []}), None, "no rows"),
        (
            pa.table({"sensor_id": ["x"], "ts": ["2026"], "value": ["1"]}),
            None,
            "column sensor_id must be an integer (int32), got string; column ts must be a "
            "timestamp or integer ns since the epoch, got string; column value must be numeric",
        ),
        (pa.table({"sensor_id": [2**40], "ts": [T0], "value": [1.0]}), None, "must fit int32"),
        (pa.table({"sensor_id": [1, None], "ts": [T0, T0], "value": [1.0, 2.0]}), None, "null"),
        (pa.table({"sensor_id": [1], "ts": [T0], "value": [1.0], "quality": [300]}), None, "uint8"),
        (42, None, "expected a polars or pandas DataFrame"),
        ("readings.txt", None, "expected a .parquet or .csv file"),
        ("missing.parquet", None, "no such file"),
    ],
)
def test_a_bad_table_is_one_line(
    readings: object, columns: dict[str, str] | None, expected: str
) -> None:
    with pytest.raises(ConfigError) as error:
        as_readings(readings, columns)
    message = str(error.value)
    assert "\n" not in message and message.startswith("readings")
    assert expected in message


def test_a_broken_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet")
    with pytest.raises(ConfigError, match=r"^readings=.*broken.parquet: cannot read it: "):
        as_readings(path)


def test_late_rows_and_out_of_range_ts_as_the_decoder_cuts_them(codec: SbeCodec) -> None:
    df = frame(40, sensors=1).with_columns(
        pl.when(pl.int_range(40) == 20).then(T0).otherwise(pl.col("ts")).alias("ts")  # late
    )
    ts = df["ts"].to_numpy().copy()
    ts[30] = 2**62 + 5  # beyond the event-time range
    df = df.with_columns(pl.Series("ts", ts))
    source = TableSource(
        TableSourceOptions(as_readings(df), DecoderOptions(out_of_orderness_ms=5)), codec
    )
    items = drain(source)
    assert rows(items).num_rows == 38
    (late,) = source.take_late()
    assert late.column("ts").cast(pa.int64()).to_pylist() == [T0]
    letters = source.take_dead_letters()
    assert sorted(d.reason for d in letters) == ["late_reading", "ts_out_of_range"]
    rejected = next(d for d in letters if d.reason == "ts_out_of_range")
    assert codec.decode(rejected.payload).batch.num_rows == 0  # the row alone, rejected
    assert source.counters.rejected == 1 and source.counters.late == 1
    assert any(isinstance(i, Watermark) for i in items)


@pytest.mark.parametrize("batch_rows", [1, 100, 999, 1_000_000])
def test_checkpoints_by_rows_whatever_the_poll_size(codec: SbeCodec, batch_rows: int) -> None:
    table = as_readings(frame(1000))
    options = TableSourceOptions(
        table, DecoderOptions(checkpoint_every_readings=300), 9, batch_rows
    )
    source = TableSource(options, codec)
    items = drain(source)
    assert barriers(items) == [(k, {"9:0": 300 * k}) for k in (1, 2, 3)]
    assert rows(items).to_pydict() == table.to_pydict()
    final = source.checkpoint()
    assert final.checkpoint_id == 4 and final.positions == {"9:0": 1000}
    decoder = final.state["decoder"]
    assert isinstance(decoder, dict) and decoder[END_OF_INPUT] is True


def test_a_resume_skips_what_a_checkpoint_covers_and_re_cuts_the_later_ones(
    codec: SbeCodec,
) -> None:
    table = as_readings(frame(1000))
    options = TableSourceOptions(table, DecoderOptions(checkpoint_every_readings=300), 9, 128)
    whole = drain(TableSource(options, codec))
    (at_1,) = [i for i in whole if isinstance(i, CheckpointBarrier) and i.checkpoint_id == 1]
    decoder = at_1.state["decoder"]
    assert isinstance(decoder, dict)
    # Tables that hold checkpoint 1, some 2 as well (a crash between two commits).
    resume = Resume(at_1.positions, decoder, {2: {"9:0": 600}})
    source = TableSource(options, codec, resume)
    assert source.recovering
    items = drain(source)
    assert not source.recovering
    assert barriers(items) == [(2, {"9:0": 600}), (3, {"9:0": 900})]
    assert rows(items).to_pydict() == table.slice(300).to_pydict()
