"""SBE codec: round trips, bulk decoding, the ``sbe`` package as reference, rejections."""

from __future__ import annotations

import struct
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pyarrow as pa
import pytest
import sbe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telepipe.errors import DecodeError, SchemaError
from telepipe.sbe import REASONS, DecodeResult, SbeCodec
from telepipe.schema import READINGS, TS_MAX, TS_MIN

SCHEMA = Path(__file__).resolve().parents[2] / "conf/schema/telemetry.xml"
CODEC = SbeCodec.from_xml(SCHEMA)
with SCHEMA.open("rb") as _fh:
    REF = sbe.Schema.parse(_fh)
REF_MSG = REF.messages[CODEC.template_id]

Columns = dict[str, np.ndarray]


def columns(n: int, seed: int = 0) -> Columns:
    rng = np.random.default_rng(seed)
    return {
        "sensor_id": rng.integers(-(2**31), 2**31, n, dtype=np.int32),
        "ts": rng.integers(TS_MIN, TS_MAX, n, dtype=np.int64),
        "value": rng.integers(0, 2**64 - 1, n, dtype=np.uint64).view(np.float64),
        "quality": rng.integers(0, 256, n, dtype=np.uint8),
    }


@st.composite
def column_sets(draw: st.DrawFn, max_n: int = 200) -> Columns:
    n = draw(st.integers(0, max_n))
    return {
        "sensor_id": draw(hnp.arrays(np.int32, n)),
        "ts": draw(hnp.arrays(np.int64, n, elements=st.integers(TS_MIN, TS_MAX - 1))),
        "value": draw(hnp.arrays(np.float64, n)),  # NaN, inf, -0.0, subnormals included
        "quality": draw(hnp.arrays(np.uint8, n)),
    }


def as_numpy(batch: pa.RecordBatch) -> Columns:
    out = {}
    for name in batch.schema.names:
        col = batch.column(name)
        out[name] = col.cast(pa.int64()).to_numpy() if name == "ts" else col.to_numpy()
    return out


def assert_columns_equal(got: Columns, want: Columns) -> None:
    assert set(got) == set(want)
    for name, expected in want.items():
        # Compare bit patterns so NaN payloads and -0.0 count.
        assert got[name].tobytes() == np.ascontiguousarray(expected).tobytes(), name


def concat(results: list[DecodeResult]) -> Columns:
    tables = [as_numpy(r.batch) for r in results]
    return {n: np.concatenate([t[n] for t in tables]) for n in CODEC.arrow_schema.names}


def pack(
    messages: list[bytes], gaps: list[int] | None = None
) -> tuple[bytes, np.ndarray, np.ndarray]:
    gaps = gaps or [0] * len(messages)
    buf, offsets = bytearray(), []
    for msg, gap in zip(messages, gaps, strict=True):
        buf += b"\xa5" * gap  # bytes between messages that no offset covers
        offsets.append(len(buf))
        buf += msg
    return bytes(buf), np.array(offsets, np.int64), np.array([len(m) for m in messages], np.int64)


def test_arrow_schema_is_readings() -> None:
    assert CODEC.arrow_schema.equals(READINGS)
    assert (CODEC.schema_id, CODEC.version, CODEC.template_id) == (7301, 1, 1)
    assert CODEC.header_dtype.itemsize == 8
    assert CODEC.root_dtype.itemsize == 12
    assert CODEC.group_header_dtype.itemsize == 4
    assert CODEC.entry_dtype.itemsize == 21
    assert CODEC.root_dtype.names == ("source_id", "batch_seq")


@given(column_sets(), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))
def test_round_trip(cols: Columns, source_id: int, batch_seq: int) -> None:
    payload = CODEC.encode(cols, source_id=source_id, batch_seq=batch_seq)
    assert len(payload) == 8 + 12 + 4 + 21 * len(cols["ts"])
    result = CODEC.decode(payload)
    assert result.rejected == []
    assert result.accepted.tolist() == [0]
    assert result.batch.schema.equals(READINGS)
    assert_columns_equal(as_numpy(result.batch), cols)
    assert result.root.tolist() == [(source_id, batch_seq)]


@pytest.mark.parametrize("n", [0, 1, 65535])
def test_round_trip_sizes(n: int) -> None:
    cols = columns(n, seed=n)
    result = CODEC.decode(CODEC.encode(cols, source_id=3, batch_seq=4))
    assert result.batch.num_rows == n
    assert_columns_equal(as_numpy(result.batch), cols)


def test_non_finite_values_bit_exact() -> None:
    bits = np.array(
        [0x7FF8000000000000, 0xFFF8000000000001, 0x7FF0000000000001, 0x7FF0000000000000,
         0xFFF0000000000000, 0x8000000000000000, 0x0000000000000001],
        np.uint64,
    )  # fmt: skip
    cols = columns(len(bits))
    cols["value"] = bits.view(np.float64)
    result = CODEC.decode(CODEC.encode(cols, source_id=0, batch_seq=0))
    assert result.batch.column("value").to_numpy().view(np.uint64).tolist() == bits.tolist()


def test_encode_overflow_and_bad_input() -> None:
    with pytest.raises(SchemaError, match="65535"):
        CODEC.encode(columns(65536), source_id=1, batch_seq=1)
    cols = columns(3)
    with pytest.raises(SchemaError, match="quality"):
        CODEC.encode({k: v for k, v in cols.items() if k != "quality"}, source_id=1, batch_seq=1)
    with pytest.raises(SchemaError, match="batch_seq"):
        CODEC.encode(cols, source_id=1)
    with pytest.raises(SchemaError, match="source_id"):
        CODEC.encode(cols, source_id=-1, batch_seq=1)
    with pytest.raises(SchemaError, match="sensor_id"):
        CODEC.encode({**cols, "sensor_id": np.array([0, 1, 2**40])}, source_id=1, batch_seq=1)
    with pytest.raises(SchemaError, match="length"):
        CODEC.encode({**cols, "value": np.zeros(2)}, source_id=1, batch_seq=1)


def test_encode_accepts_datetime64_and_arrow() -> None:
    cols = columns(5)
    ts = cols["ts"] % 2**62
    given_cols = {**cols, "ts": ts.astype("datetime64[ns]"), "quality": pa.array(cols["quality"])}
    result = CODEC.decode(CODEC.encode(given_cols, source_id=1, batch_seq=1))
    assert_columns_equal(as_numpy(result.batch), {**cols, "ts": ts})


@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(column_sets(max_n=40), st.integers(0, 9)), max_size=12))
def test_decode_many_equals_per_message(parts: list[tuple[Columns, int]]) -> None:
    messages = [CODEC.encode(c, source_id=i, batch_seq=2 * i) for i, (c, _) in enumerate(parts)]
    buf, offsets, lengths = pack(messages, [gap for _, gap in parts])
    many = CODEC.decode_many(memoryview(buf), offsets, lengths)
    singles = [CODEC.decode(m) for m in messages]
    assert many.rejected == []
    assert many.accepted.tolist() == list(range(len(messages)))
    assert many.batch.schema.equals(READINGS)
    if messages:
        assert_columns_equal(as_numpy(many.batch), concat(singles))
        assert many.root.tolist() == [r.root[0].tolist() for r in singles]
    else:
        assert many.batch.num_rows == 0 and many.root.size == 0


@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(column_sets(max_n=40), max_size=12))
def test_encode_groups_equals_encode_per_message(parts: list[Columns]) -> None:
    roots = np.array([(i, 2 * i) for i in range(len(parts))], CODEC.root_dtype)
    joined = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]} if parts else {
        c: np.zeros(0, CODEC.entry_dtype[c]) for c in CODEC.entry_dtype.names or ()
    }  # fmt: skip
    counts = np.array([len(p["ts"]) for p in parts], np.int64)
    many = CODEC.encode_groups(joined, roots, counts)
    assert many == [CODEC.encode(c, source_id=i, batch_seq=2 * i) for i, c in enumerate(parts)]
    if parts:
        each = CODEC.encode_each(joined, source_id=3, batch_seq=4)
        one = {c: v[:1] for c, v in joined.items()}
        assert len(each) == counts.sum() and (
            not each or each[0] == CODEC.encode(one, source_id=3, batch_seq=4)
        )
    if parts:
        with pytest.raises(SchemaError, match="rows"):
            CODEC.encode_groups(joined, roots, counts + 1)


def ref_rows(cols: Columns) -> list[dict[str, object]]:
    keys = {"sensor_id": "sensorId", "ts": "ts", "value": "value", "quality": "quality"}
    n = len(cols["ts"])
    return [{keys[k]: v[i].item() for k, v in cols.items()} for i in range(n)]


@settings(max_examples=50)
@given(column_sets(max_n=30), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))
def test_against_sbe_package(cols: Columns, source_id: int, batch_seq: int) -> None:
    ours = CODEC.encode(cols, source_id=source_id, batch_seq=batch_seq)
    theirs = REF.encode(
        REF_MSG, {"sourceId": source_id, "batchSeq": batch_seq, "readings": ref_rows(cols)}
    )
    assert ours == theirs
    # Their flyweight decoder reads our bytes (Schema.decode cannot handle primitive-typed fields).
    wrapped = REF.wrap(ours)
    assert wrapped.header["schemaId"] == 7301 and wrapped.header["blockLength"] == 12
    assert (wrapped.body["sourceId"], wrapped.body["batchSeq"]) == (source_id, batch_seq)
    group = wrapped.body["readings"]
    got = [(e["sensorId"], e["ts"], struct.pack("<d", e["value"]), e["quality"]) for e in group]
    want = [(r["sensorId"], r["ts"], struct.pack("<d", r["value"]), r["quality"])
            for r in ref_rows(cols)]  # fmt: skip
    assert got == want
    assert_columns_equal(as_numpy(CODEC.decode(theirs).batch), cols)


GOOD = CODEC.encode(columns(4, seed=1), source_id=9, batch_seq=1)


def patched(msg: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(msg)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


BAD: dict[str, bytes] = {
    "truncated_header": GOOD[:5],
    "wrong_schema_id": patched(GOOD, 4, "<H", 7302),
    "wrong_template_id": patched(GOOD, 2, "<H", 2),
    "unsupported_version": patched(GOOD, 6, "<H", 0),
    "bad_block_length": patched(GOOD, 0, "<H", 11),
    "truncated_block": GOOD[:14],
    "truncated_group": GOOD[: 8 + 12 + 2],
    "bad_group_block_length": patched(GOOD, 20, "<H", 20),
    "trailing_bytes": GOOD + b"\x00",
    "ts_out_of_range": patched(GOOD, 8 + 12 + 4 + 21 + 4, "<q", TS_MAX),  # 2nd entry's ts
}


@pytest.mark.parametrize("reason", REASONS)
def test_each_rejection_keeps_neighbours(reason: str) -> None:
    left, right = columns(3, seed=2), columns(5, seed=3)
    messages = [
        CODEC.encode(left, source_id=1, batch_seq=1),
        BAD[reason],
        CODEC.encode(right, source_id=2, batch_seq=2),
    ]
    result = CODEC.decode_many(*pack(messages, [1, 2, 3]))
    assert result.accepted.tolist() == [0, 2]
    assert [(i, r) for i, r, _ in result.rejected] == [(1, reason)]
    detail = result.rejected[0][2]
    assert "\n" not in detail and "expected" in detail
    assert_columns_equal(
        as_numpy(result.batch), {k: np.concatenate([left[k], right[k]]) for k in left}
    )
    assert result.root.tolist() == [(1, 1), (2, 2)]
    with pytest.raises(DecodeError) as err:
        CODEC.decode_one(BAD[reason])
    assert err.value.reason == reason


def test_entries_past_end_is_truncated_group() -> None:
    result = CODEC.decode(GOOD[:-1])
    assert [r for _, r, _ in result.rejected] == ["truncated_group"]
    assert "107 bytes, expected 108" in result.rejected[0][2]


def extended(cols: Columns, version: int, root_extra: int, entry_extra: int) -> bytes:
    """A message from a newer schema version that appended fields to both blocks."""
    n = len(cols["ts"])
    entry = np.dtype(
        {
            "names": ["sensor_id", "ts", "value", "quality"],
            "formats": ["<i4", "<i8", "<f8", "u1"],
            "offsets": [0, 4, 12, 20],
            "itemsize": 21 + entry_extra,
        }
    )
    entries = np.full(n, 0xEE, np.uint8).repeat(entry.itemsize).view(entry)
    for k, v in cols.items():
        entries[k] = v
    head = struct.pack("<HHHHIQ", 12 + root_extra, 1, 7301, version, 5, 6) + b"\xee" * root_extra
    return head + struct.pack("<HH", entry.itemsize, n) + entries.tobytes()


@pytest.mark.parametrize("n", [6, 300])  # few large groups and many small take different paths
@pytest.mark.parametrize(("root_extra", "entry_extra"), [(0, 0), (4, 0), (0, 7), (3, 11)])
def test_newer_version_with_extensions(n: int, root_extra: int, entry_extra: int) -> None:
    cols, neighbour = columns(n, seed=4), columns(2, seed=5)
    messages = [
        extended(cols, 2, root_extra, entry_extra),
        CODEC.encode(neighbour, source_id=1, batch_seq=2),
    ]
    result = CODEC.decode_many(*pack(messages))
    assert result.rejected == []
    assert result.root.tolist() == [(5, 6), (1, 2)]
    want = {k: np.concatenate([cols[k], neighbour[k]]) for k in cols}
    assert_columns_equal(as_numpy(result.batch), want)
    assert_columns_equal(as_numpy(CODEC.decode(messages[0]).batch), cols)


def test_many_small_and_few_large_groups_agree() -> None:
    sizes = [0, 1, 3, 0, 700, 2, 1, 0, 5]
    cols = [columns(n, seed=i) for i, n in enumerate(sizes)]
    messages = [CODEC.encode(c, source_id=i, batch_seq=i) for i, c in enumerate(cols)]
    for picked in (slice(None), slice(3, 6), slice(0, 4)):
        result = CODEC.decode_many(*pack(messages[picked]))
        expected = {k: np.concatenate([c[k] for c in cols[picked]]) for k in cols[0]}
        assert_columns_equal(as_numpy(result.batch), expected)


@given(st.binary(max_size=200))
def test_fuzz_single(payload: bytes) -> None:
    result = CODEC.decode(payload)
    assert len(result.accepted) + len(result.rejected) == 1
    assert result.batch.schema.equals(READINGS)
    assert {r for _, r, _ in result.rejected} <= set(REASONS)


@given(st.binary(min_size=0, max_size=400), st.data())
def test_fuzz_many(buf: bytes, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(buf)), max_size=10)))
    bounds = [0, *cuts, len(buf)]
    offsets = np.array(bounds[:-1], np.int64)
    lengths = np.diff(np.array(bounds, np.int64))
    result = CODEC.decode_many(buf, offsets, lengths)
    assert sorted([*result.accepted.tolist(), *(i for i, _, _ in result.rejected)]) == list(
        range(len(offsets))
    )


@given(st.integers(0, len(GOOD) - 1), st.integers(0, 255))
def test_fuzz_byte_flips(position: int, byte: int) -> None:
    mutated = bytearray(GOOD)
    mutated[position] = byte
    result = CODEC.decode(bytes(mutated))
    assert len(result.accepted) + len(result.rejected) == 1


def test_result_does_not_alias_input() -> None:
    cols = columns(10, seed=6)
    buf = bytearray(CODEC.encode(cols, source_id=1, batch_seq=1))
    result = CODEC.decode(buf)
    buf[:] = b"\xff" * len(buf)
    assert_columns_equal(as_numpy(result.batch), cols)
    assert result.root.tolist() == [(1, 1)]


def test_offsets_outside_buffer_is_caller_error() -> None:
    with pytest.raises(ValueError, match="outside"):
        CODEC.decode_many(GOOD, np.array([0]), np.array([len(GOOD) + 1]))


def test_big_endian_schema(tmp_path: Path) -> None:
    path = tmp_path / "be.xml"
    path.write_text(SCHEMA.read_text().replace('"littleEndian"', '"bigEndian"'))
    codec = SbeCodec.from_xml(path)
    cols = columns(7, seed=7)
    payload = codec.encode(cols, source_id=1, batch_seq=2)
    assert payload[:8] == struct.pack(">HHHH", 12, 1, 7301, 1)
    assert codec.arrow_schema.equals(READINGS)
    assert_columns_equal(as_numpy(codec.decode(payload).batch), cols)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "cannot read"),
        ("not xml <", "not XML"),
        ("<sbe:messageSchema xmlns:sbe='http://fixprotocol.io/2016/sbe' id='1' version='0'>"
         "<types/><foo/></sbe:messageSchema>", "invalid"),
        (SCHEMA.read_text().replace('"TelemetryBatch"', '"Other"'), "no message 'TelemetryBatch'"),
    ],
)  # fmt: skip
def test_bad_schema_file(tmp_path: Path, content: str | None, match: str) -> None:
    path = tmp_path / "schema.xml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SchemaError, match=match) as err:
        SbeCodec.from_xml(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_message_name() -> None:
    with pytest.raises(SchemaError, match="no message 'Nope'"):
        SbeCodec.from_xml(SCHEMA, message="Nope")


@pytest.mark.parametrize("ts", [TS_MIN - 1, TS_MAX, -(2**63), 2**63 - 1])
def test_a_timestamp_outside_the_event_time_range_rejects_its_message(ts: int) -> None:
    cols = columns(6, seed=4)
    cols["ts"][2] = ts
    cols["ts"][4] = ts
    inside = columns(3, seed=5)
    inside["ts"][:] = [TS_MIN, 0, TS_MAX - 1]  # the range's own ends are in it
    result = CODEC.decode_many(*pack([CODEC.encode(cols, source_id=1, batch_seq=1),
                                      CODEC.encode(inside, source_id=2, batch_seq=2)]))  # fmt: skip
    assert result.accepted.tolist() == [1]
    assert [(i, r) for i, r, _ in result.rejected] == [(0, "ts_out_of_range")]
    assert result.rejected[0][2] == f"ts {ts} ns, expected in [{TS_MIN}, {TS_MAX}) ns"
    assert_columns_equal(as_numpy(result.batch), inside)
    assert result.root.tolist() == [(2, 2)]
