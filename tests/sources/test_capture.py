"""telepipe captures: format round trip, seeks, tailing, damage, and the recorder process
on a real embedded Aeron media driver (SIGTERM, SIGKILL + torn tail + restart)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyaeron
import pytest
from helpers import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telepipe.aeron import start_driver
from telepipe.errors import SourceError
from telepipe.sources.capture import (
    INDEX_NAME,
    RECORD_HEADER,
    CaptureReader,
    CaptureWriter,
    list_segments,
    read_segment,
)
from telepipe.sources.frames import DataFrame, FrameAssembler, align

MTU_PAYLOAD = 1376


def synth(
    sizes: list[int], session: int = 7, stream: int = 77, t0: int = 1_000, fragment: bool = True
) -> list[DataFrame]:
    """Frames as Aeron would deliver them: messages cut into <= 1376-byte fragments."""
    rng = random.Random(len(sizes) * 31 + session)
    frames, pos, t = [], 0, t0
    for size in sizes:
        payload = rng.randbytes(size)
        step = MTU_PAYLOAD if fragment else max(size, 1)
        chunks = [payload[i : i + step] for i in range(0, size, step)] or [b""]
        for k, chunk in enumerate(chunks):
            flags = (0x80 if k == 0 else 0) | (0x40 if k == len(chunks) - 1 else 0)
            start, pos = pos, pos + align(len(chunk) + 32)
            frames.append(DataFrame(stream, session, 3, start, flags, pos, t, chunk, size))
            t += rng.choice((0, 1, 1000))
    return frames


def write(writer: CaptureWriter, frames: list[DataFrame]) -> None:
    for f in frames:
        writer.append(
            f.payload, received_ns=f.received_ns, position=f.position, flags=f.flags,
            term_offset=f.term_offset, session_id=f.session_id, stream_id=f.stream_id,
            term_id=f.term_id, reserved_value=f.reserved_value,
        )  # fmt: skip


def capture_of(directory: Path, frames: list[DataFrame], **kw: int) -> None:
    with CaptureWriter(directory, channel="aeron:ipc", stream_id=77, **kw) as w:  # type: ignore[arg-type]
        write(w, frames)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(
        st.one_of(st.integers(0, 3000), st.sampled_from([0, 1, 1376, 1377, 9000])), max_size=40
    ),
    segment_bytes=st.sampled_from([256, 5000, 1 << 20]),
    index_every=st.sampled_from([1, 3000, 1 << 20]),
)
def test_round_trip_rolls_segments_and_reopens(
    sizes: list[int], segment_bytes: int, index_every: int
) -> None:
    frames = synth(sizes, fragment=False)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "cap"
        capture_of(d, frames, segment_bytes=segment_bytes, index_every_bytes=index_every)
        reader = CaptureReader(d)
        assert list(reader.frames()) == frames
        assert (reader.notes, reader.malformed, reader.torn_tail) == ([], {}, 0)
        info = reader.describe()
        assert info["records"] == len(frames)
        assert info["bytes"] == sum(RECORD_HEADER + len(f.payload) for f in frames)
        if frames:
            assert info["first_received_ns"] == frames[0].received_ns
            assert info["last_received_ns"] == frames[-1].received_ns
        rolls, size = 1, 0  # a record never straddles segments; a big one has its own
        for f in frames:
            n = RECORD_HEADER + len(f.payload)
            rolls, size = (rolls + 1, n) if size and size + n > segment_bytes else (rolls, size + n)
        assert len(info["segments"]) == rolls
        expected_base = 0
        for seg in info["segments"]:  # named by the logical offset of their first record
            assert seg["base_offset"] == expected_base == int(seg["name"].split(".")[0])
            expected_base += seg["bytes"]
        index = (d / INDEX_NAME).read_bytes()
        with CaptureWriter(
            d, segment_bytes, False, index_every, channel="aeron:ipc", stream_id=77
        ) as w:
            assert w.recovery.torn_bytes == w.recovery.malformed == 0
        assert (d / INDEX_NAME).read_bytes() == index  # recovery rebuilds the same index
        more = synth([100, 2000], session=8, t0=frames[-1].received_ns if frames else 0)
        capture_of(d, more, segment_bytes=segment_bytes, index_every_bytes=index_every)
        assert list(CaptureReader(d).frames()) == frames + more


def interleaved() -> list[DataFrame]:
    a, b, c = synth([700] * 40, session=1), synth([90] * 80, session=2), synth([3000] * 10, 3)
    merged = [a[i // 2] if i % 2 == 0 else b[i // 2] for i in range(80)] + b[40:]
    merged = merged[:60] + [x for pair in zip(merged[60:], c, strict=False) for x in pair]
    merged += a[40:] + c[len(merged[60:]) :]
    for i, f in enumerate(merged):  # non-decreasing times with ties
        object.__setattr__(f, "received_ns", 10_000 + (i // 3) * 100)
    return merged


def test_seek_by_position_and_time_equals_a_linear_scan(tmp_path: Path) -> None:
    frames = interleaved()
    capture_of(tmp_path, frames, segment_bytes=6000, index_every_bytes=700)
    reader = CaptureReader(tmp_path)
    assert list(reader.frames()) == frames
    rng = random.Random(5)

    def after(pred: object) -> list[DataFrame]:
        i = next((i for i, f in enumerate(frames) if pred(f)), len(frames))  # type: ignore[operator]
        return frames[i:]

    positions = sorted({f.position for f in frames})
    for p in [
        -1,
        0,
        10**12,
        *rng.sample(positions, 25),
        *(x + 1 for x in rng.sample(positions, 10)),
    ]:
        assert list(reader.frames(start_position=p)) == after(lambda f, p=p: f.position > p)
        s = rng.choice((1, 2, 3))
        want = after(lambda f, p=p, s=s: f.session_id == s and f.position > p)
        assert list(reader.frames(start_position=p, session_id=s)) == want
    times = sorted({f.received_ns for f in frames})
    for t in [0, 10**18, *rng.sample(times, 25), *(x + 1 for x in rng.sample(times, 10))]:
        assert list(reader.frames(start_time_ns=t)) == after(lambda f, t=t: f.received_ns >= t)
    total = reader.describe()["bytes"]
    assert reader.seek_offset(start_time_ns=times[-1]) > total // 2  # the index is used
    assert reader.seek_offset(start_position=positions[-1], session_id=1) > total // 2
    assert (reader.malformed, reader.torn_tail) == ({}, 0)


def follow_into(
    reader: CaptureReader, out: list[DataFrame], stop: threading.Event
) -> threading.Thread:
    def run() -> None:
        out.extend(reader.frames(follow=True, stop=stop, idle_timeout_s=30))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_follow_while_a_writer_appends_gets_every_record_once(tmp_path: Path) -> None:
    frames = synth([random.Random(i).randint(0, 5000) for i in range(600)])
    # buffer_bytes=100: each record's header reaches the file before its payload
    writer = CaptureWriter(tmp_path, segment_bytes=50_000, buffer_bytes=100, stream_id=77)
    write(writer, frames[:1])
    writer.flush()
    got: list[DataFrame] = []
    stop = threading.Event()
    reader = CaptureReader(tmp_path)
    thread = follow_into(reader, got, stop)
    for i, f in enumerate(frames[1:]):
        write(writer, [f])
        if i % 50 == 0:
            writer.flush()
            time.sleep(0.002)
    writer.close()
    stop.set()
    thread.join(30)
    assert got == frames
    assert len(list_segments(tmp_path)) > 5
    assert (reader.malformed, reader.torn_tail, reader.notes) == ({}, 0, [])


def test_follow_sees_records_split_at_any_byte(tmp_path: Path) -> None:
    frames = synth([random.Random(i).randint(0, 3000) for i in range(150)])
    capture_of(tmp_path / "ref", frames)
    ((_, ref_path),) = list_segments(tmp_path / "ref")
    seg = read_segment(ref_path, 0)
    assert seg is not None
    data = ref_path.read_bytes()
    live = tmp_path / "live"
    live.mkdir()
    target = live / ref_path.name
    target.write_bytes(data[: seg.header_length])
    got: list[DataFrame] = []
    stop = threading.Event()
    reader = CaptureReader(live)
    thread = follow_into(reader, got, stop)
    rng, at = random.Random(1), seg.header_length
    with open(target, "ab", buffering=0) as f:
        while at < len(data):
            n = rng.choice((1, 7, 60, 64, 65, 500, 4000))
            f.write(data[at : at + n])
            at += n
            if rng.random() < 0.3:
                time.sleep(0.002)
    stop.set()
    thread.join(30)
    assert got == frames
    assert (reader.malformed, reader.torn_tail, reader.notes) == ({}, 0, [])


@pytest.mark.parametrize(
    ("where", "value", "reason"),
    [("payload", 20, "crc"), ("length", 0, "length"), ("length", 16, "crc"), ("crc", 4, "crc")],
)
def test_damage_in_the_middle_is_counted_and_skipped(
    tmp_path: Path, where: str, value: int, reason: str
) -> None:
    frames = synth([500] * 100)
    capture_of(tmp_path, frames)
    ((_, path),) = list_segments(tmp_path)
    seg = read_segment(path, 0)
    assert seg is not None
    start = seg.header_length + sum(RECORD_HEADER + len(f.payload) for f in frames[:40])
    data = bytearray(path.read_bytes())
    if where == "payload":
        data[start + RECORD_HEADER + value] ^= 0xFF
    elif where == "length":
        data[start : start + 4] = (
            (value or 0xFFFFFFFF).to_bytes(4, "little")
            if value == 0
            else (int.from_bytes(data[start : start + 4], "little") + value).to_bytes(4, "little")
        )
    else:
        data[start + value] ^= 0x01
    path.write_bytes(bytes(data))
    reader = CaptureReader(tmp_path)
    assert list(reader.frames()) == frames[:40] + frames[41:]
    assert reader.malformed == {reason: 1}
    assert reader.torn_tail == 0 and len(reader.notes) == 1
    # the last record damaged: a torn tail, not corruption
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    reader = CaptureReader(tmp_path)
    assert list(reader.frames()) == frames[:40] + frames[41:-1]
    assert reader.torn_tail == RECORD_HEADER + 500 and reader.malformed == {reason: 1}


def test_not_a_capture_is_a_one_line_source_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hello")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / f"{0:020d}.tpcap").write_bytes(b"garbage" * 10)
    (tmp_path / "file").write_text("x")
    for name in ("missing", "empty", "other", "bad", "file"):
        with pytest.raises(SourceError) as error:
            CaptureReader(tmp_path / name)
        assert str(tmp_path / name) in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(SourceError, match="not empty"):
        CaptureWriter(tmp_path / "other")
    with CaptureWriter(tmp_path / "cap"), pytest.raises(SourceError, match="another recorder"):
        CaptureWriter(tmp_path / "cap")


# --- the recorder process on a real media driver ----------------------------------------


def recorder(*overrides: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.pop("TELEPIPE_CONF", None)
    return subprocess.Popen(
        [sys.executable, "-m", "telepipe.pipelines.capture", *overrides],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )  # fmt: skip


def connected(pub: pyaeron.ExclusivePublication, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while not pub.is_connected:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the recorder never subscribed"
        time.sleep(0.01)


def offer(pub: pyaeron.ExclusivePublication, payload: bytes) -> None:
    deadline = time.monotonic() + 20
    while not pub.offer(payload):
        assert time.monotonic() < deadline, "publication stuck"
        time.sleep(0.0005)


def messages(frames: list[DataFrame], session: int | None = None) -> list[bytes]:
    return [
        m.payload
        for m in FrameAssembler().assemble(frames)
        if session is None or m.session_id == session
    ]


def wait_for(out: Path, session: int, count: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, proc.communicate()
        if (
            list_segments(out)
            and len(messages(list(CaptureReader(out).frames()), session)) >= count
        ):
            return
        assert time.monotonic() < deadline, "the recorder did not write every message"
        time.sleep(0.05)


def stop(proc: subprocess.Popen[str]) -> dict[str, object]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def aeron_dir() -> object:
    driver = start_driver()
    client = pyaeron.Aeron(dir=driver.dir)
    yield driver.dir, client
    client.close()
    driver.close()


def test_recorder_records_a_live_stream_and_can_be_tailed(
    tmp_path: Path, aeron_dir: tuple[str, pyaeron.Aeron]
) -> None:
    directory, client = aeron_dir
    out, stats_file = tmp_path / "cap", tmp_path / "stats.json"
    channel = "aeron:ipc?term-length=262144"  # term rotations: PAD frames at term ends
    proc = recorder(f"aeron.dir={directory}", f"channel={channel}", "stream=77", f"out={out}",
                    f"stats_file={stats_file}", "segment_bytes=65536")  # fmt: skip
    pub = client.add_exclusive_publication(channel, 77)
    connected(pub, proc)
    rng = random.Random(3)
    sizes = [0, 1, 100, 1376, 1377, 5000, 21_000, 32_768] + [
        rng.randint(0, 30_000) for _ in range(60)
    ]
    sent = [rng.randbytes(n) for n in sizes]
    offer(pub, sent[0])
    deadline = time.monotonic() + 30
    while not list_segments(out):  # the recorder opened the capture
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.01)
    got: list[DataFrame] = []
    halt = threading.Event()
    tail = follow_into(CaptureReader(out), got, halt)
    for payload in sent[1:]:
        offer(pub, payload)
    wait_for(out, pub.session_id, len(sent), proc)
    deadline = time.monotonic() + 10
    while len(messages(got)) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = stop(proc)
    halt.set()
    tail.join(10)
    reader = CaptureReader(out)
    frames = list(reader.frames())
    assert messages(frames) == sent and messages(got) == sent  # the tail saw it live
    assert any(f.flags == 0x80 for f in frames)
    pads = [f for f in frames if f.padding]  # synthesized: Aeron does not deliver PAD frames
    assert pads and stats["frames"] == len(frames) - len(pads)
    assembler = FrameAssembler()
    assert [m.payload for m in assembler.assemble(frames)] == sent
    assert assembler.counters.gaps == [] and assembler.counters.dropped_fragments == 0
    assert json.loads(stats_file.read_text()) == stats and stats["segments"] > 1
    assert (reader.malformed, reader.torn_tail) == ({}, 0)
    assert {f.session_id for f in frames} == {pub.session_id}
    pub.close()


def test_recorder_killed_mid_stream_then_restarted(
    tmp_path: Path, aeron_dir: tuple[str, pyaeron.Aeron]
) -> None:
    directory, client = aeron_dir
    out = tmp_path / "cap"
    args = (f"aeron.dir={directory}", "channel=aeron:ipc", "stream=77", f"out={out}")
    proc = recorder(*args)
    pub = client.add_exclusive_publication("aeron:ipc", 77)
    connected(pub, proc)
    sent: list[bytes] = []
    halt = threading.Event()

    def publish() -> None:
        i = 0
        while not halt.is_set():
            payload = i.to_bytes(4, "little") * (1 + (i * 977) % 1000)
            while not pub.offer(payload) and not halt.is_set():
                time.sleep(0.0002)
            sent.append(payload)
            i += 1
            if i % 20 == 0:
                time.sleep(0.0005)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    deadline = time.monotonic() + 30
    while not (list_segments(out) and list_segments(out)[-1][1].stat().st_size > 400_000):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.01)
    proc.kill()  # SIGKILL mid-stream
    proc.wait(10)
    halt.set()
    publisher.join(10)
    pub.close()

    before = CaptureReader(out)
    frames = list(before.frames())
    assert before.malformed == {} and len(frames) > 100
    ((_, path),) = list_segments(out)
    boundary = path.stat().st_size - before.torn_tail
    os.truncate(path, boundary - 5)  # tear the last whole record too
    torn_record = RECORD_HEADER + len(frames[-1].payload)
    torn = CaptureReader(out)
    kept = list(torn.frames())
    assert kept == frames[:-1]
    assert torn.torn_tail == torn_record - 5 and torn.malformed == {}
    assert torn.notes and "torn" in torn.notes[0]
    old = messages(kept)
    assert old == sent[: len(old)] and len(old) > 50

    proc = recorder(*args)
    pub2 = client.add_exclusive_publication("aeron:ipc", 77)
    connected(pub2, proc)
    new = [bytes([i]) * (i * 397) for i in range(40)]
    for payload in new:
        offer(pub2, payload)
    wait_for(out, pub2.session_id, len(new), proc)
    stats = stop(proc)
    assert stats["recovered"]["torn_bytes"] == torn.torn_tail  # type: ignore[index]
    final = CaptureReader(out)
    frames = list(final.frames())
    assert frames[: len(kept)] == kept
    assert messages(frames[len(kept) :], pub2.session_id) == new
    assert (final.malformed, final.torn_tail, final.notes) == ({}, 0, [])
    seg = read_segment(path, 0)
    assert seg is not None
    cut = seg.header_length + sum(RECORD_HEADER + len(f.payload) for f in kept)
    assert cut == boundary - torn_record  # the torn bytes were cut, the file went on from there
    data, first_new = path.read_bytes(), frames[len(kept)]
    assert int.from_bytes(data[cut + 16 : cut + 24], "little") == first_new.position
    assert int.from_bytes(data[cut + 44 : cut + 48], "little") == first_new.session_id % 2**32
    assert final.describe()["records"] == len(frames)
    pub2.close()


@pytest.mark.parametrize(
    ("overrides", "key"), [(["stream=1"], "out"), (["out={}", "stream=abc"], "stream")]
)
def test_recorder_bad_config_is_one_line_exit_2(
    tmp_path: Path, overrides: list[str], key: str
) -> None:
    proc = recorder(*(o.format(tmp_path / "cap") for o in overrides))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"telepipe: error: {key}")
    assert not (tmp_path / "cap").exists()


def test_a_sessions_end_is_recorded_and_read_back_in_its_place(tmp_path: Path) -> None:
    """``append_end`` writes an Aeron end-of-stream heartbeat record after the session's
    last frame; the reader gives it back in its place, the assembler turns it into the
    session's end mark (only when asked: other readers see messages alone), with no gap."""
    with CaptureWriter(tmp_path / "c") as writer:
        for i, session in enumerate((7, 8, 7)):
            writer.append(b"x" * 40, received_ns=i, position=(i // 2 + 1) * 96, session_id=session)
        writer.append_end(received_ns=5, position=192, session_id=7, stream_id=0)
        writer.append(b"y" * 40, received_ns=6, position=192, session_id=8)
    frames = list(CaptureReader(tmp_path / "c").frames())
    end = frames[3]
    assert (end.session_id, end.position, end.payload, end.padding) == (7, 192, b"", 0)
    assert end.flags & 0x20
    assembler = FrameAssembler()
    messages = list(assembler.assemble(frames, ends=True))
    assert [(m.session_id, m.end_of_stream) for m in messages] == [
        (7, False), (8, False), (7, False), (7, True), (8, False),
    ]  # fmt: skip
    assert assembler.counters.gaps == [] and assembler.counters.messages == 4
    assert not any(m.end_of_stream for m in FrameAssembler().assemble(frames))
