"""TelemetryDecoder: results do not depend on how polls group the messages."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from helpers import SCHEMA_XML
from hypothesis import given, settings
from hypothesis import strategies as st

from telepipe.markers import CheckpointBarrier, Watermark
from telepipe.sbe import SbeCodec
from telepipe.sources.decoder import DecoderOptions, MessageBuffer, TelemetryDecoder
from telepipe.sources.simulator import SimulatorOptions, TelemetryGenerator

CODEC = SbeCodec.from_xml(SCHEMA_XML)
OPTIONS = SimulatorOptions(
    sensors=7, readings_per_message=13, start_ns=10**18, jitter_us=20_000, late_fraction=0.05,
    late_ms=80, nan_fraction=0.02, seed=11,
)  # fmt: skip


def messages(n_sessions: int) -> list[tuple[int, bytes]]:
    per_session = [
        [
            CODEC.encode(c, source_id=s, batch_seq=i)
            for i, c in enumerate(TelemetryGenerator(OPTIONS).chunks(400))
        ]
        for s in range(n_sessions)
    ]
    out = []
    for i in range(max(len(p) for p in per_session)):
        for s, payloads in enumerate(per_session):
            if i < len(payloads):
                out.append((s, payloads[i]))
    out.insert(5, (0, b"\x01\x02garbage"))
    return out


def run(
    msgs: list[tuple[int, bytes]], cuts: list[int]
) -> tuple[pa.Table, pa.Table, list[int], dict]:
    decoder = TelemetryDecoder(
        CODEC, DecoderOptions(out_of_orderness_ms=30, checkpoint_every_readings=10**9)
    )
    buffer = MessageBuffer()
    items = []
    position = {}
    start = 0
    for stop in [*sorted(set(cuts)), len(msgs)]:
        for session, payload in msgs[start:stop]:
            position[session] = position.get(session, 0) + len(payload)
            buffer.add(payload, 1001, session, position[session])
        items += decoder.decode(buffer)
        start = stop
    batches = [i for i in items if isinstance(i, pa.RecordBatch)]
    marks = [i.ts_ns for i in items if isinstance(i, Watermark)]
    assert not any(isinstance(i, CheckpointBarrier) for i in items)
    late = decoder.take_late()
    dead = sorted((d.session_id, d.position, d.reason, d.id) for d in decoder.take_dead_letters())
    return (
        pa.Table.from_batches(batches, schema=CODEC.arrow_schema),
        pa.Table.from_batches(late, schema=CODEC.arrow_schema),
        marks,
        {"dead": dead, "counters": decoder.counters, "positions": decoder.positions},
    )


def same_rows(a: pa.Table, b: pa.Table) -> bool:
    keys = [("ts", "ascending"), ("sensor_id", "ascending"), ("value", "ascending")]
    a, b = a.sort_by(keys), b.sort_by(keys)
    return a.num_rows == b.num_rows and all(
        np.array_equal(x.to_numpy(), y.to_numpy(), equal_nan=x.type == pa.float64())
        for x, y in zip(a.columns, b.columns, strict=True)
    )


@settings(max_examples=40, deadline=None)
@given(n_sessions=st.integers(1, 3), cuts=st.lists(st.integers(0, 200), max_size=30))
def test_poll_grouping_changes_nothing(n_sessions: int, cuts: list[int]) -> None:
    msgs = messages(n_sessions)
    one_poll = run(msgs, [])
    each_message = run(msgs, list(range(len(msgs))))
    random_cuts = run(msgs, [c for c in cuts if c < len(msgs)])
    for other in (each_message, random_cuts):
        # Per session, rows keep their order; across sessions only grouping differs.
        assert same_rows(other[0], one_poll[0])
        assert same_rows(other[1], one_poll[1])
        assert other[3]["dead"] == one_poll[3]["dead"]
        assert other[3]["positions"] == one_poll[3]["positions"]
        marks = other[2]
        assert marks == sorted(set(marks))  # strictly increasing
        assert marks[-1] == one_poll[2][-1]
    c = one_poll[3]["counters"]
    assert c.rejected == 1 and c.late > 0
    assert c.readings == one_poll[0].num_rows + one_poll[1].num_rows == 400 * n_sessions


def test_no_on_time_row_is_behind_an_earlier_watermark() -> None:
    msgs = messages(2)
    decoder = TelemetryDecoder(CODEC, DecoderOptions(out_of_orderness_ms=30))
    buffer = MessageBuffer()
    watermark = -(2**63)
    for i, (session, payload) in enumerate(msgs):
        buffer.add(payload, 1001, session, i)
        for item in decoder.decode(buffer):
            if isinstance(item, Watermark):
                watermark = item.ts_ns
            elif isinstance(item, pa.RecordBatch):
                assert int(np.min(item.column("ts").to_numpy().view(np.int64))) >= watermark


def test_late_rows_are_dead_letters_that_decode_to_exactly_those_rows() -> None:
    msgs = messages(2)
    decoder = TelemetryDecoder(CODEC, DecoderOptions(out_of_orderness_ms=30))
    buffer = MessageBuffer()
    sent: dict[tuple[int, int], bytes] = {}
    position = {0: 0, 1: 0}
    for session, payload in msgs:
        position[session] += len(payload)
        sent[session, position[session]] = payload
        buffer.add(payload, 1001, session, position[session])
    decoder.decode(buffer)
    late = pa.Table.from_batches(decoder.take_late(), schema=CODEC.arrow_schema)
    letters = [d for d in decoder.take_dead_letters() if d.reason == "late_reading"]
    assert late.num_rows > len(letters) > 0
    decoded = []
    for letter in letters:
        # At the position of the message the rows came in, with its root block.
        original = CODEC.decode_one(sent[letter.session_id, letter.position])
        again = CODEC.decode_one(letter.payload)
        assert (again.root == original.root).all()
        assert "\n" not in letter.detail and "more than 30 ms behind" in letter.detail
        assert letter.detail.startswith(f"{again.batch.num_rows} of {original.batch.num_rows} ")
        decoded.append(again.batch)
    assert same_rows(pa.Table.from_batches(decoded), late)
    assert len({d.id for d in letters}) == len(letters)


def test_a_message_outside_the_event_time_range_is_a_letter_and_later_rows_are_on_time() -> None:
    """A message whose ts are near int64's end is refused whole (``ts_out_of_range``); it
    does not move its session's event time, so the next message's rows are not late."""
    rows = 50
    bad = CODEC.encode(
        {
            "sensor_id": np.arange(rows, dtype=np.int32),
            "ts": -(2**63) + np.arange(rows, dtype=np.int64) * 1000,
            "value": np.ones(rows),
            "quality": np.zeros(rows, np.uint8),
        },
        source_id=1,
        batch_seq=1,
    )
    good = CODEC.encode(
        {
            "sensor_id": np.arange(rows, dtype=np.int32),
            "ts": 1_767_225_600_000_000_000 + np.arange(rows, dtype=np.int64) * 1000,
            "value": np.ones(rows),
            "quality": np.zeros(rows, np.uint8),
        },
        source_id=1,
        batch_seq=2,
    )
    decoder = TelemetryDecoder(CODEC, DecoderOptions(out_of_orderness_ms=50))
    buffer = MessageBuffer()
    buffer.add(bad, 1001, 7, len(bad))
    buffer.add(good, 1001, 7, len(bad) + len(good))
    items = decoder.decode(buffer)
    batches = [i for i in items if isinstance(i, pa.RecordBatch)]
    assert sum(b.num_rows for b in batches) == rows
    assert decoder.take_late() == []
    letters = decoder.take_dead_letters()
    assert [(d.reason, d.position) for d in letters] == [("ts_out_of_range", len(bad))]
    assert letters[0].detail == f"ts {-(2**63)} ns, expected in [{-(2**62)}, {2**62}) ns"
    assert decoder.counters.rejected_by_reason == {"ts_out_of_range": 1}


def test_an_idle_session_stops_holding_the_watermark_and_holds_it_again_when_back() -> None:
    """Session 0 goes quiet; once session 1's recorded receive times are past 0's last
    by idle_timeout_ms, the watermark follows session 1 alone (withIdleness); when 0
    sends again it holds the watermark again (no watermark until 1 is past it)."""
    decoder = TelemetryDecoder(
        CODEC,
        DecoderOptions(
            out_of_orderness_ms=0, checkpoint_every_readings=10**9, idle_timeout_ms=1000
        ),
    )
    chunks = list(TelemetryGenerator(OPTIONS).chunks(1000))
    buffer = MessageBuffer()
    positions = {0: 0, 1: 0}
    second = 1_000_000_000

    def poll(session: int, chunk: dict, received_ns: int) -> list[int]:
        payload = CODEC.encode(chunk, source_id=session, batch_seq=0)
        positions[session] += len(payload)
        buffer.add(payload, 1001, session, positions[session], received_ns)
        return [i.ts_ns for i in decoder.decode(buffer) if isinstance(i, Watermark)]

    def newest(chunk: dict) -> int:
        return int(np.asarray(chunk["ts"]).view(np.int64).max())

    poll(0, chunks[0], 1 * second)
    poll(1, chunks[1], 1 * second)
    held = poll(1, chunks[5], int(1.5 * second))  # 0 is behind, within its timeout
    assert held == []  # session 0's newest ts still holds it back
    moved = poll(1, chunks[7], int(2.5 * second))  # 0 quiet for 1.5 s > 1 s: idle
    assert moved == [newest(chunks[7])]
    back = poll(0, chunks[2], int(2.6 * second))  # 0 comes back, behind the watermark
    assert back == []
    assert poll(1, chunks[8], int(2.7 * second)) == []  # 0 holds it again
    # The decision is the recorded stamps', so a restored decoder decides alike.
    restored = TelemetryDecoder(decoder.codec, decoder.options)
    restored.restore(decoder.snapshot())
    assert restored._holding() == decoder._holding()


def test_without_recorded_receive_times_no_session_is_idle() -> None:
    decoder = TelemetryDecoder(CODEC, DecoderOptions(idle_timeout_ms=1))
    chunks = list(TelemetryGenerator(OPTIONS).chunks(1000))
    buffer = MessageBuffer()
    for session, chunk in ((0, chunks[0]), (1, chunks[4])):
        buffer.add(CODEC.encode(chunk, source_id=session, batch_seq=0), 1001, session, 100)
        decoder.decode(buffer)
    assert sorted(decoder._holding()) == sorted(decoder._max_ts.values())
