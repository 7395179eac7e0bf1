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


def test_an_ended_session_stops_holding_the_watermark_at_once() -> None:
    """An end-of-stream mark (``MessageBuffer.end``) drops its session from the watermark
    at once, not after idle_timeout_ms; it is kept across a restore."""
    decoder = TelemetryDecoder(
        CODEC,
        DecoderOptions(out_of_orderness_ms=0, checkpoint_every_readings=10**9),
    )
    chunks = list(TelemetryGenerator(OPTIONS).chunks(1000))
    buffer = MessageBuffer()
    second = 1_000_000_000

    def newest(chunk: dict) -> int:
        return int(np.asarray(chunk["ts"]).view(np.int64).max())

    def marks() -> list[int]:
        return [i.ts_ns for i in decoder.decode(buffer) if isinstance(i, Watermark)]

    buffer.add(CODEC.encode(chunks[0], source_id=0, batch_seq=0), 1001, 0, 100, second)
    buffer.add(CODEC.encode(chunks[5], source_id=1, batch_seq=0), 1001, 1, 100, second)
    assert marks() == [newest(chunks[0])]  # session 0 holds it back
    buffer.end(1001, 0, 100, second)  # its publication closed: no data needed to move on
    assert marks() == [newest(chunks[5])]
    restored = TelemetryDecoder(decoder.codec, decoder.options)
    restored.restore(decoder.snapshot())
    assert restored.snapshot() == decoder.snapshot()
    assert restored._holding() == [newest(chunks[5])]
    buffer.end(1001, 9, 0, second)  # a session never seen: nothing to end
    assert marks() == [] and decoder.snapshot()["ended"] == ["1001:0"]
    # The last active session's data and its end in one poll: the watermark its data
    # allowed still comes (then none is active, and the watermark stays).
    buffer.add(CODEC.encode(chunks[9], source_id=1, batch_seq=1), 1001, 1, 200, second)
    buffer.end(1001, 1, 200, second)
    assert marks() == [newest(chunks[9])] and decoder._holding() == []


def _sessions_coming_and_going() -> list[tuple[str, int, int, int]]:
    """(kind, session, chunk, stamp): session 0 starts; 1 joins; 0 goes quiet (idle
    after 1 s of stamps) while 1 runs ahead; 0 comes back behind the watermark; a new
    session 2 starts behind it; 1 ends; 0 and 2 go on."""
    ms = 1_000_000
    events = [("msg", 0, c, c * 100 * ms) for c in range(6)]
    events += [("msg", 1, c, (6 + c) * 100 * ms) for c in range(3, 40)]
    events += [("msg", 0, c, (50 + c) * 100 * ms) for c in range(6, 12)]
    events += [("msg", 2, c, 63 * 100 * ms) for c in range(20, 26)]
    events += [("end", 1, 0, 64 * 100 * ms)]
    for c in range(12, 30):
        events += [("msg", 0, c, (64 + c) * 100 * ms), ("msg", 2, c + 14, (64 + c) * 100 * ms)]
    return events


def _late_at_operators(cuts: list[int]) -> tuple[list[tuple[int, int]], list[int], int]:
    """Feed the events cut into polls at ``cuts``; the rows an operator would find behind
    the watermark it had seen (sensor, ts), the watermarks, the on-time row count."""
    decoder = TelemetryDecoder(
        CODEC,
        DecoderOptions(
            out_of_orderness_ms=30, checkpoint_every_readings=10**9, idle_timeout_ms=1000
        ),
    )
    chunks = list(TelemetryGenerator(OPTIONS).chunks(2000))
    events = _sessions_coming_and_going()
    buffer, position = MessageBuffer(), {0: 0, 1: 0, 2: 0}
    watermark, late, marks, on_time, start = -(2**63), [], [], 0, 0
    for stop in [*sorted(set(cuts)), len(events)]:
        for kind, session, chunk, stamp in events[start:stop]:
            if kind == "end":
                buffer.end(1001, session, position[session], stamp)
                continue
            payload = CODEC.encode(chunks[chunk], source_id=session, batch_seq=chunk)
            position[session] += len(payload)
            buffer.add(payload, 1001, session, position[session], stamp)
        start = stop
        for item in decoder.decode(buffer):
            if isinstance(item, Watermark):
                watermark = item.ts_ns
                marks.append(watermark)
            elif isinstance(item, pa.RecordBatch):
                ts = item.column("ts").to_numpy().view(np.int64)
                behind = ts < watermark
                sensors = item.column("sensor_id").to_numpy()[behind].tolist()
                late += zip(sensors, ts[behind].tolist(), strict=True)
                on_time += int((~behind).sum())
    return sorted(late), marks, on_time


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(0, 120), max_size=40))
def test_sessions_coming_back_or_new_behind_the_watermark_are_late_whatever_the_polls(
    cuts: list[int],
) -> None:
    """The watermark due before a session's (re)entry is emitted before its rows, so the
    rows an operator finds late do not depend on how polls grouped the messages (and an
    end mark anywhere after its session's last message changes none of them)."""
    one_poll = _late_at_operators([])
    each_message = _late_at_operators(list(range(len(_sessions_coming_and_going()))))
    other = _late_at_operators(cuts)
    assert one_poll[0]  # session 0 came back and session 2 started behind the watermark
    for run in (each_message, other):
        assert run[0] == one_poll[0]
        assert run[2] == one_poll[2]
        assert run[1][-1] == one_poll[1][-1]
        assert run[1] == sorted(set(run[1]))
