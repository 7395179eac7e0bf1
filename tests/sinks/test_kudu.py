"""KuduSink against an in-memory Kudu (fake_kudu): mapping, keys, partitions, batching,
idempotent replay, per-row errors, retries, back-pressure. No real Kudu is used."""

from __future__ import annotations

import datetime as dt
import decimal
import sys
import threading

import numpy as np
import pyarrow as pa
import pytest
import yaml
from fake_kudu import SOFT_MEMORY, FakeKudu
from helpers import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from telepipe.boundary import BoundaryOptions
from telepipe.config import build
from telepipe.errors import ConfigError, SchemaError, SinkError
from telepipe.markers import CheckpointBarrier
from telepipe.schema import READINGS, WINDOWS
from telepipe.sinks.kudu import KuduSink, KuduSinkOptions, RetryOptions
from telepipe.sinks.kudu_types import (
    kudu_columns,
    parse_operation,
    table_spec,
    to_kudu_rows,
)

DAY_US = 86_400_000_000
T0 = 1_700_000_000_000_000_000  # ns, 2023-11-14T22:13:20Z


def readings(n: int, start: int = 0, sensors: int = 4, value: float = 0.0) -> pa.RecordBatch:
    i = np.arange(start, start + n)
    return pa.RecordBatch.from_arrays(
        [
            pa.array(i % sensors, pa.int32()),
            pa.array(T0 + i * 1_000_000, pa.timestamp("ns")),
            pa.array(i * 0.5 + value, pa.float64()),
            pa.array(i % 256, pa.uint8()),
        ],
        schema=READINGS,
    )


def options(**kw: object) -> KuduSinkOptions:
    kw.setdefault("retries", RetryOptions(max_attempts=4, initial_backoff_ms=100, jitter=0.0))
    return KuduSinkOptions(**kw)  # type: ignore[arg-type]


def sink_for(cluster: FakeKudu, sleeps: list[float] | None = None, **kw: object) -> KuduSink:
    log = sleeps if sleeps is not None else []
    return KuduSink(
        options(**kw), {"readings": READINGS}, cluster.connect, sleep=log.append
    ).start()


def run(sink: KuduSink, *items: object, table: str = "readings") -> None:
    observer = sink.observer(table)
    for item in items:
        observer.on_next(item)  # type: ignore[arg-type]
    observer.on_completed()
    sink.join(timeout=20)


# -- type mapping ----------------------------------------------------------------------------

MAPPING = [
    (pa.int8(), "int8"),
    (pa.int16(), "int16"),
    (pa.int32(), "int32"),
    (pa.int64(), "int64"),
    (pa.uint8(), "int16"),
    (pa.uint16(), "int32"),
    (pa.uint32(), "int64"),
    (pa.uint64(), "int64"),
    (pa.float16(), "float"),
    (pa.float32(), "float"),
    (pa.float64(), "double"),
    (pa.bool_(), "bool"),
    (pa.string(), "string"),
    (pa.large_string(), "string"),
    (pa.binary(), "binary"),
    (pa.large_binary(), "binary"),
    (pa.binary(4), "binary"),
    (pa.timestamp("s"), "unixtime_micros"),
    (pa.timestamp("ms"), "unixtime_micros"),
    (pa.timestamp("us", "UTC"), "unixtime_micros"),
    (pa.date32(), "date"),
    (pa.date64(), "date"),
    (pa.decimal128(12, 3), "decimal"),
    (pa.dictionary(pa.int32(), pa.string()), "string"),
]


@pytest.mark.parametrize(("arrow", "kudu"), MAPPING, ids=[str(a) for a, _ in MAPPING])
def test_every_arrow_type_maps_explicitly(arrow: pa.DataType, kudu: str) -> None:
    schema = pa.schema([pa.field("k", pa.int64(), False), pa.field("c", arrow)])
    columns = kudu_columns(schema, ["k"])
    assert [(c.name, c.type, c.nullable, c.key) for c in columns] == [
        ("k", "int64", False, True),
        ("c", kudu, True, False),
    ]
    if kudu == "decimal":
        assert (columns[1].precision, columns[1].scale) == (12, 3)


def test_ns_timestamp_becomes_micros_plus_exact_ns_twin_in_the_key() -> None:
    columns = kudu_columns(READINGS, ["sensor_id", "ts"])
    assert [(c.name, c.type, c.key) for c in columns] == [
        ("sensor_id", "int32", True),
        ("ts", "unixtime_micros", True),
        ("ts_ns", "int64", True),
        ("value", "double", False),
        ("quality", "int16", False),
    ]


REFUSED = [pa.time64("us"), pa.duration("ns"), pa.list_(pa.int32()), pa.decimal256(50, 2)]


@pytest.mark.parametrize("arrow", REFUSED, ids=[str(a) for a in REFUSED])
def test_types_without_a_kudu_mapping_are_refused_in_one_line(arrow: pa.DataType) -> None:
    schema = pa.schema([pa.field("k", pa.int64(), False), pa.field("odd", arrow)])
    with pytest.raises(SchemaError, match=r"^column 'odd': Arrow type .* has no Kudu mapping"):
        kudu_columns(schema, ["k"])


@pytest.mark.parametrize(
    ("fields", "key", "message"),
    [
        ([("a", pa.int32()), ("k", pa.int32())], ["k"], "column 'k': primary key columns must"),
        ([("k", pa.float64())], ["k"], "column 'k': Kudu key columns cannot be double"),
        ([("k", pa.bool_())], ["k"], "column 'k': Kudu key columns cannot be bool"),
        ([("k", pa.int32())], ["nope"], "column 'nope': primary key column not in schema"),
        ([("t", pa.timestamp("ns")), ("t_ns", pa.int64())], ["t"], "column 't_ns': name taken"),
        ([("k", pa.int32())], [], "needs a primary key"),
    ],
)
def test_key_validation(fields: list, key: list[str], message: str) -> None:
    with pytest.raises(SchemaError) as error:
        kudu_columns(pa.schema(fields), key)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_sink_rejects_a_bad_key_before_connecting() -> None:
    opts = options(primary_key={"readings": ["value"]})
    with pytest.raises(SchemaError, match="table 'readings': column 'value'"):
        KuduSink(opts, {"readings": READINGS}, FakeKudu().connect)
    with pytest.raises(ConfigError, match="no entry for table 'other'"):
        KuduSink(options(), {"other": READINGS}, FakeKudu().connect)


@settings(max_examples=60, deadline=None)
@given(
    ints=st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=20),
    u64=st.lists(st.integers(0, 2**64 - 1), min_size=20, max_size=20),
    ns=st.lists(st.integers(-(2**62), 2**62), min_size=20, max_size=20),
    text=st.lists(st.text(max_size=8), min_size=20, max_size=20),
    f32=st.lists(st.floats(width=32, allow_nan=False), min_size=20, max_size=20),
)
def test_values_round_trip_through_the_fake_cluster(ints, u64, ns, text, f32) -> None:
    n = len(ints)
    batch = pa.RecordBatch.from_pydict(
        {
            "k": pa.array(ints, pa.int64()),
            "u": pa.array(u64[:n], pa.uint64()),
            "t": pa.array(ns[:n], pa.timestamp("ns")),
            "s": pa.array(text[:n], pa.string()),
            "f": pa.array(f32[:n], pa.float32()),
            "d": pa.array(
                [decimal.Decimal(i % 10**9).scaleb(-3) for i in ints], pa.decimal128(12, 3)
            ),
        }
    )
    columns = kudu_columns(batch.schema, ["k"])
    rows, refused = to_kudu_rows(batch, columns)
    cluster = FakeKudu()
    client = cluster.connect([])
    client.create_table(table_spec("t", columns, hash_buckets=2, n_replicas=1))
    table, session = (
        client.open_table("t"),
        client.new_session(timeout_ms=1, mutation_buffer_bytes=10**9, flush_interval_ms=1),
    )
    for row in rows:
        if row is not None:
            client.upsert(session, table, row)
    client.flush(session)
    expected = {}
    for i in range(n):
        if u64[i] > 2**63 - 1:
            assert "above 2**63-1" in refused[i]
            continue
        expected[ints[i]] = {
            "k": ints[i],
            "u": u64[i],
            "t": (abs(ns[i]) // 1000) * (1 if ns[i] >= 0 else -1),  # truncated toward zero
            "t_ns": ns[i],
            "s": text[i],
            "f": float(np.float32(f32[i])),
            "d": decimal.Decimal(ints[i] % 10**9).scaleb(-3),
        }
    assert {r["k"]: r for r in cluster.content("t")} == expected


def test_date_and_binary_and_timestamp_us_values() -> None:
    batch = pa.RecordBatch.from_pydict(
        {
            "k": pa.array([b"a", b"b"], pa.binary()),
            "day": pa.array([dt.date(1970, 1, 2), None], pa.date32()),
            "at": pa.array([1, -1], pa.timestamp("us", "UTC")),
        }
    )
    columns = kudu_columns(batch.schema, ["k"])
    rows, _ = to_kudu_rows(batch, columns)
    cluster = FakeKudu()
    client = cluster.connect([])
    client.create_table(table_spec("t", columns, hash_buckets=2, n_replicas=1))
    session = client.new_session(timeout_ms=1, mutation_buffer_bytes=10**6, flush_interval_ms=1)
    for row in rows:
        client.upsert(session, client.open_table("t"), row)  # type: ignore[arg-type]
    client.flush(session)
    assert cluster.content("t") == [
        {"k": b"a", "day": 1, "at": 1},
        {"k": b"b", "day": None, "at": -1},
    ]


# -- partitions ------------------------------------------------------------------------------


def test_hash_and_range_partition_spec() -> None:
    columns = kudu_columns(READINGS, ["sensor_id", "ts"])
    spec = table_spec(
        "r", columns, hash_buckets=8, n_replicas=3, range_column="ts",
        range_start_us=T0 // 1000, range_interval_us=DAY_US, range_count=3,
    )  # fmt: skip
    assert spec.primary_key == ("sensor_id", "ts", "ts_ns")
    assert spec.hash_columns == ("sensor_id",) and spec.hash_buckets == 8
    start = T0 // 1000 // DAY_US * DAY_US
    assert spec.range is not None and spec.range.column == "ts"
    assert spec.range.bounds == tuple(
        (start + i * DAY_US, start + (i + 1) * DAY_US) for i in range(3)
    )
    plain = table_spec("r", columns, hash_buckets=4, n_replicas=1)
    assert plain.range is None and plain.hash_columns == ("sensor_id", "ts", "ts_ns")
    with pytest.raises(SchemaError, match="column 'sensor_id': range partitions need a timestamp"):
        table_spec("r", columns, hash_buckets=4, n_replicas=1, range_column="sensor_id",
                   range_start_us=0, range_count=1)  # fmt: skip


def test_sink_creates_tables_with_ranges_from_the_first_row_and_rejects_rows_outside() -> None:
    cluster = FakeKudu()
    sink = sink_for(cluster, range_partition_column="ts", range_partitions=2, hash_buckets=3)
    late = readings(1, start=0)
    far = pa.RecordBatch.from_arrays(
        [pa.array([9], pa.int32()), pa.array([T0 + 5 * DAY_US * 1000], pa.timestamp("ns")),
         pa.array([1.0]), pa.array([1], pa.uint8())], schema=READINGS,
    )  # fmt: skip
    run(sink, late, far, CheckpointBarrier(1))
    spec = cluster.tables["telepipe_readings"].spec
    assert spec.hash_columns == ("sensor_id",) and spec.range is not None
    assert spec.range.bounds[0][0] == T0 // 1000 // DAY_US * DAY_US
    (letter,) = sink.take_dead_letters()
    assert letter.reason == "kudu_row_error" and letter.position == 1
    assert letter.detail == "Not found: No tablet covering the requested range partition"
    assert letter.payload.startswith(b"telepipe_readings: UPSERT int32 sensor_id=9, ")
    assert sink.committed() == {"readings": 1} and sink.checkpoints() == {"readings": 1}


# -- batching, idempotence -------------------------------------------------------------------


def test_rows_are_flushed_at_each_barrier_and_at_the_pending_bound() -> None:
    cluster = FakeKudu()
    sink = sink_for(cluster, max_pending_rows=100)
    run(sink, readings(60), CheckpointBarrier(1), readings(250, start=60), CheckpointBarrier(2))
    assert cluster.flushes == [60, 100, 100, 50]
    assert sink.peak_pending == 100 and cluster.max_buffered == 100
    assert sink.committed() == {"readings": 310} and sink.checkpoints() == {"readings": 2}
    assert len(cluster.content("telepipe_readings")) == 310
    assert cluster.closed == 1


def test_replay_is_idempotent_and_upsert_is_last_write_wins() -> None:
    batches = [readings(100, start=s) for s in (0, 100, 200)]
    once, twice = FakeKudu(), FakeKudu()
    run(sink_for(once), *batches, CheckpointBarrier(1))
    run(sink_for(twice), *batches, CheckpointBarrier(1))
    run(sink_for(twice), *batches[1:], CheckpointBarrier(1))  # replay after a restart
    assert twice.content("telepipe_readings") == once.content("telepipe_readings")
    run(sink_for(twice), readings(10, value=1000.0))
    rows = {r["ts_ns"]: r["value"] for r in twice.content("telepipe_readings")}
    assert rows[T0] == 1000.0 and len(rows) == 300


def test_two_readings_in_one_microsecond_stay_two_rows() -> None:
    batch = pa.RecordBatch.from_arrays(
        [pa.array([1, 1], pa.int32()), pa.array([T0, T0 + 1], pa.timestamp("ns")),
         pa.array([1.0, 2.0]), pa.array([0, 0], pa.uint8())], schema=READINGS,
    )  # fmt: skip
    cluster = FakeKudu()
    run(sink_for(cluster), batch)
    assert [r["value"] for r in cluster.content("telepipe_readings")] == [1.0, 2.0]


# -- per-row errors --------------------------------------------------------------------------


def test_per_row_errors_become_dead_letters_while_other_rows_land() -> None:
    schema = pa.schema([pa.field("k", pa.int32()), pa.field("n", pa.uint64())])
    batch = pa.RecordBatch.from_pydict(
        {
            "k": pa.array([1, None, 3, 4], pa.int32()),
            "n": pa.array([1, 2, 2**64 - 1, 4], pa.uint64()),
        },
        schema=schema,
    )
    cluster = FakeKudu()
    sink = KuduSink(options(primary_key={"t": ["k"]}), {"t": schema}, cluster.connect).start()
    run(sink, batch, batch, CheckpointBarrier(1), table="t")
    assert [r["k"] for r in cluster.content("telepipe_t")] == [1, 4]
    letters = sink.take_dead_letters()
    assert [(d.reason, d.position) for d in letters] == [
        ("kudu_row_error", p) for p in (1, 2, 5, 6)
    ]
    assert letters[0].detail == "Invalid argument: column not nullable: k (key column)"
    assert "uint64 value 18446744073709551615 above 2**63-1" in letters[1].detail
    assert letters[1].payload == b"telepipe_t: UPSERT int32 k=3, uint64 n=18446744073709551615"
    assert len({d.id for d in letters}) == 4 and sink.take_dead_letters() == []
    assert {d.received_ns for d in letters} == {0}  # not the clock: replays agree
    assert sink.committed() == {"t": 4} and sink.dead_lettered() == {"t": 4}


def test_the_fake_refuses_what_kudu_refuses_at_apply_and_the_sink_dead_letters_it() -> None:
    schema = pa.schema([pa.field("k", pa.int32(), False), pa.field("v", pa.int8())])
    cluster = FakeKudu()
    sink = KuduSink(options(primary_key={"t": ["k"]}), {"t": schema}, cluster.connect).start()
    sink.observer("t").on_next(pa.RecordBatch.from_pydict({"k": [1], "v": [1]}, schema=schema))
    sink.close("t")
    sink.join(timeout=10)
    client = cluster.connect([])
    session = client.new_session(timeout_ms=1, mutation_buffer_bytes=10**6, flush_interval_ms=1)
    with pytest.raises(Exception, match="value too large to convert to int8"):
        client.upsert(session, client.open_table("telepipe_t"), (2, 300))
    with pytest.raises(Exception, match="column not nullable: k INT32 NOT NULL"):
        client.upsert(session, client.open_table("telepipe_t"), (None, 1))


def test_failed_operation_strings_parse_back_to_cells() -> None:
    text = 'UPSERT int32 sensor_id=7, unixtime_micros ts=2023-11-14T22:13:20.000000Z, string s="a, \\"b"'
    assert parse_operation(text) == {
        "sensor_id": "7",
        "ts": "2023-11-14T22:13:20.000000Z",
        "s": '"a, \\"b"',
    }


# -- retries ---------------------------------------------------------------------------------


def test_transient_flush_errors_are_retried_with_backoff_then_succeed() -> None:
    cluster = FakeKudu()
    cluster.fail_flushes = 2
    sleeps: list[float] = []
    sink = sink_for(cluster, sleeps)
    run(sink, readings(50), CheckpointBarrier(1))
    assert cluster.flushes == [50, 50, 50]  # every failed row re-applied, then flushed
    assert sleeps == [0.1, 0.2]
    assert len(cluster.content("telepipe_readings")) == 50
    assert sink.committed() == {"readings": 50} and sink.take_dead_letters() == []


def test_transient_connect_and_apply_errors_are_retried() -> None:
    cluster = FakeKudu()
    cluster.fail_connects, cluster.fail_applies = 2, 3
    sleeps: list[float] = []
    run(sink_for(cluster, sleeps), readings(5))
    assert len(sleeps) == 5 and len(cluster.content("telepipe_readings")) == 5


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    import random

    retry = RetryOptions(max_attempts=9, initial_backoff_ms=100, max_backoff_ms=1000, jitter=0.5)
    waits = [retry.backoff_s(a, random.Random(1)) for a in range(1, 7)]
    caps = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert all(cap / 2 <= w <= cap for w, cap in zip(waits, caps, strict=True))


def test_retries_exhausted_is_one_line() -> None:
    cluster = FakeKudu()
    cluster.fail_flushes = 10
    sink = sink_for(cluster)
    with pytest.raises(SinkError) as error:
        run(sink, readings(5), CheckpointBarrier(1))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("Kudu sink failed: Kudu flush failed after 4 attempts: Timed out")
    assert SOFT_MEMORY in message
    cluster.fail_connects = 10
    with pytest.raises(SinkError, match=r"^Kudu connect failed after 4 attempts: Network error"):
        sink_for(cluster)


def test_full_mutation_buffer_flushes_and_goes_on() -> None:
    cluster = FakeKudu()
    sink = sink_for(cluster, mutation_buffer_bytes=20 * 56)  # 20 readings of 56 bytes
    run(sink, readings(100), CheckpointBarrier(1))
    assert len(cluster.content("telepipe_readings")) == 100
    assert cluster.max_buffered == 20 and len(cluster.flushes) == 5


# -- back-pressure ---------------------------------------------------------------------------


def test_a_slow_cluster_blocks_the_producer_instead_of_growing_memory() -> None:
    cluster = FakeKudu()
    cluster.flush_delay_s = 0.01
    bound, batch_rows, batches = 200, 100, 20  # 10x the bound pushed
    sink = sink_for(cluster, max_pending_rows=bound, queue=BoundaryOptions(capacity=2))
    observer = sink.observer("readings")
    depth: list[int] = []

    def produce() -> None:
        for b in range(batches):
            observer.on_next(readings(batch_rows, start=b * batch_rows))
            depth.append(sink.queue.counters.depth)
        observer.on_completed()

    producer = threading.Thread(target=produce)
    producer.start()
    producer.join(timeout=20)
    sink.join(timeout=20)
    assert sink.committed() == {"readings": batch_rows * batches}
    assert sink.peak_pending <= bound and cluster.max_buffered <= bound
    assert sink.queue.counters.peak_depth <= 2 and max(depth) <= 3
    assert sink.queue.counters.blocked_s > 0.05


# -- config, missing client ------------------------------------------------------------------


def test_yaml_builds_the_options() -> None:
    node = OmegaConf.create(yaml.safe_load((ROOT / "conf/sink/kudu.yaml").read_text()))
    built = build(node, "sink")
    assert built == KuduSinkOptions()
    node.range_partition_interval = "1w"
    with pytest.raises(ConfigError, match=r"^sink: sink\.range_partition_interval"):
        build(node, "sink")
    node2 = OmegaConf.create({"_target_": "telepipe.sinks.kudu.KuduSinkOptions", "masters": []})
    with pytest.raises(ConfigError, match="masters must list at least one"):
        build(node2, "sink")


def test_missing_kudu_module_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kudu", None)  # import kudu -> ImportError
    with pytest.raises(SinkError) as error:
        KuduSink(KuduSinkOptions(), {"readings": READINGS}).start()
    assert str(error.value) == (
        "KuduSink needs kudu-python: pip install 'telepipe[kudu]' (needs the Kudu C++ client)"
    )


def test_windows_schema_gets_its_default_key() -> None:
    cluster = FakeKudu()
    sink = KuduSink(options(), {"windows": WINDOWS}, cluster.connect).start()
    sink.close("windows")
    sink.join(timeout=10)
    spec = cluster.tables["telepipe_windows"].spec
    assert spec.primary_key == ("sensor_id", "window_start", "window_start_ns")
