"""ArchiveReader on directories laid out as the Aeron Archive writes them.

No Java Archive runs here, so the tests build the files from the published
format (aeron-archive-codecs.xml CatalogHeader / RecordingDescriptorHeader /
RecordingDescriptor, Catalog.java, RecordingWriter.java, AeronArchive
.segmentFileBasePosition, and the term log rules of the Aeron publication: 32-byte
headers, 32-byte alignment, fragments of at most mtu - 32 bytes with BEGIN/END
flags, a PAD frame closing a term a message does not fit in). The builder
(tests/archive_builder.py) uses only struct and those rules, nothing from telepipe's
reader.
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import pytest
from archive_builder import (
    MTU,
    SEGMENT,
    TERM,
    Log,
    Recording,
    build_log,
    write_catalog,
    write_catalog_v0,
    write_legacy_catalog,
    write_segments,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telepipe.errors import SourceError
from telepipe.sources.archive import ArchiveReader
from telepipe.sources.frames import FrameAssembler


def replay(reader: ArchiveReader, recording_id: int | None = None) -> tuple[list[bytes], list]:
    assembler = FrameAssembler()
    messages = [m.payload for m in assembler.assemble(reader.frames(recording_id))]
    return messages, assembler.counters.gaps


def padded_only(gaps: list, term_length: int = TERM) -> bool:
    """PAD frames carry the position across term ends: an intact recording has no gap."""
    return not gaps


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, list[Recording]]:
    a = build_log(1, 400, initial_term_id=-7, session_id=101, stream_id=1001)
    b = build_log(2, 50, initial_term_id=5, session_id=202, stream_id=1001)
    c = build_log(3, 150, initial_term_id=1_000_000, session_id=303, stream_id=2002)
    c.crc_sessions()
    a_start = a.messages[37][0]  # joined mid-term, at a message boundary
    recs = [
        Recording(a, 0, a_start, a.messages[380][0]),
        Recording(b, 1, 0, len(b.buf), state=2),
        Recording(c, 2, 0, -1),
    ]
    for r in recs:
        write_segments(tmp_path, r)
    write_catalog(tmp_path, recs)
    return tmp_path, recs


# -- tests -----------------------------------------------------------------------------


def test_current_catalog_lists_every_entry(archive: tuple[Path, list[Recording]]) -> None:
    directory, recs = archive
    reader = ArchiveReader(directory)
    infos = reader.recordings()
    assert [i.recording_id for i in infos] == [0, 1, 2]
    assert [i.state for i in infos] == ["VALID", "DELETED", "VALID"]
    assert reader.catalog_format == "current" and reader.catalog_version == "3.1.0"
    first = infos[0]
    assert (first.start_position, first.stop_position) == (recs[0].start, recs[0].stop)
    assert (first.initial_term_id, first.term_buffer_length, first.segment_file_length) == (
        -7, TERM, SEGMENT,
    )  # fmt: skip
    assert (first.session_id, first.stream_id, first.mtu_length) == (101, 1001, MTU)
    assert first.original_channel.endswith("|alias=x") and first.source_identity
    assert infos[2].stop_position == -1


def test_each_recording_replays_its_exact_messages(
    archive: tuple[Path, list[Recording]],
) -> None:
    directory, recs = archive
    reader = ArchiveReader(directory)
    for r in (recs[0], recs[2]):
        messages, gaps = replay(reader, r.recording_id)
        assert messages == r.expected()
        assert padded_only(gaps)
    assert len(recs[0].expected()) == 380 - 37 and len(recs[2].expected()) == 150


def test_positions_and_sessions_come_from_the_catalog(
    archive: tuple[Path, list[Recording]],
) -> None:
    directory, recs = archive
    frames = list(ArchiveReader(directory).frames(2))  # record checksums: CRCs in session_id
    assert {(f.stream_id, f.session_id) for f in frames} == {(2002, 303)}
    assert frames[-1].position == len(recs[2].log.buf)
    assert all(f.term_id - 1_000_000 == (f.position - 1) // TERM for f in frames)


def test_all_valid_recordings_by_default_deleted_skipped(
    archive: tuple[Path, list[Recording]],
) -> None:
    directory, recs = archive
    messages, _ = replay(ArchiveReader(directory))
    assert messages == recs[0].expected() + recs[2].expected()
    only = ArchiveReader(directory, recording_id=0)
    assert replay(only)[0] == recs[0].expected()


def test_recording_in_progress_stops_at_the_zero_tail(
    archive: tuple[Path, list[Recording]],
) -> None:
    directory, _ = archive
    reader = ArchiveReader(directory)
    list(reader.frames(2))
    assert any("in progress" in n for n in reader.notes)
    assert not reader.malformed


def test_legacy_catalog(tmp_path: Path) -> None:
    a = build_log(4, 200, initial_term_id=42, session_id=9, stream_id=10)
    b = build_log(5, 20, initial_term_id=0, session_id=8, stream_id=10)
    recs = [Recording(a, 0, 0, len(a.buf)), Recording(b, 1, 0, len(b.buf), state=0)]
    for r in recs:
        write_segments(tmp_path, r)
    write_legacy_catalog(tmp_path, recs)
    reader = ArchiveReader(tmp_path)
    assert reader.catalog_format == "legacy" and reader.catalog_version == "2.1.0"
    assert [i.state for i in reader.recordings()] == ["VALID", "INVALID"]
    messages, gaps = replay(reader)
    assert messages == recs[0].expected() and padded_only(gaps)


def untouched(r: Recording, lo: int, hi: int) -> list[bytes]:
    """The messages of ``r`` none of whose frames' bytes lie in positions [lo, hi)."""
    step = r.log.mtu - 32
    out = []
    for pos, payload in r.log.messages:
        size = sum(-(-(32 + len(payload[i : i + step])) // 32) * 32
                   for i in range(0, max(len(payload), 1), step))  # fmt: skip
        if r.start <= pos and pos + size <= r.stop and (pos + size <= lo or pos >= hi):
            out.append(payload)
    return out


def test_truncated_segment_costs_only_what_it_lost(
    archive: tuple[Path, list[Recording]],
) -> None:
    directory, recs = archive
    r = recs[0]
    base = r.start - r.start % TERM + SEGMENT
    cut = 50_001  # inside a frame
    os.truncate(directory / f"0-{base}.rec", cut)
    reader = ArchiveReader(directory)
    messages, _ = replay(reader, 0)
    assert messages == untouched(r, base + cut - cut % 32, base + SEGMENT)
    assert len(messages) < len(r.expected())
    assert reader.malformed["truncated_segment"] == 1
    assert any("truncated segment" in n for n in reader.notes)


def test_missing_segment_costs_only_what_it_held(archive: tuple[Path, list[Recording]]) -> None:
    directory, recs = archive
    r = recs[0]
    base = r.start - r.start % TERM + SEGMENT
    (directory / f"0-{base}.rec").unlink()
    reader = ArchiveReader(directory)
    messages, _ = replay(reader, 0)
    assert messages == untouched(r, base, base + SEGMENT) and messages != r.expected()
    assert reader.malformed["missing_segment"] == 1
    assert any("missing" in n for n in reader.notes)


def test_zeroed_data_before_stop_position_costs_only_what_it_held(
    archive: tuple[Path, list[Recording]],
) -> None:
    directory, recs = archive
    r = recs[0]
    base = r.start - r.start % TERM
    with (directory / f"0-{base}.rec").open("r+b") as f:
        f.seek(100_000)
        f.write(bytes(SEGMENT - 100_000))  # never flushed before a crash
    reader = ArchiveReader(directory)
    messages, _ = replay(reader, 0)
    assert messages == untouched(r, base + 100_000, base + SEGMENT)
    assert 0 < len(messages) < len(r.expected())
    assert reader.malformed["zero_tail"] == 1


def test_corrupt_frame_header_costs_only_its_message(
    archive: tuple[Path, list[Recording]],
) -> None:
    directory, recs = archive
    r = recs[0]
    first = directory / f"0-{r.start - r.start % TERM}.rec"
    pos = r.log.messages[100][0]
    with first.open("r+b") as f:
        f.seek(pos - (r.start - r.start % TERM) + 8)
        f.write(struct.pack("<i", 4096 + 32))  # term offset no longer matches the position
    reader = ArchiveReader(directory)
    messages, gaps = replay(reader, 0)
    expected = r.expected()
    assert messages == expected[: 100 - 37] + expected[100 - 37 + 1 :]
    assert reader.malformed["bad_frame"] == 1 and len(gaps) == 1


def _bad_entry() -> bytes:
    header = struct.pack("<iiqi", 0x30100, 32, 1, 64) + bytes(12)
    body = struct.pack("<7q6i", 0, 0, 0, 0, 0, 0, 0, 0, SEGMENT, TERM, MTU, 1, 1)
    return header + struct.pack("<iii", 96, 1, 0) + bytes(20) + body + struct.pack("<I", 999)


@pytest.mark.parametrize(
    "content",
    [
        b"",  # empty
        b"\x00\x01\x03",  # shorter than a header
        struct.pack("<iiqi", 0x30100, 32, 1, 48) + bytes(4000),  # alignment not a power of 2
        struct.pack("<ii", 0x20100, 196608) + bytes(4000),  # legacy, impossible entry length
        _bad_entry() + bytes(1000),  # a string length overrunning its entry
    ],
    ids=["empty", "short", "alignment", "legacy_entry_length", "bad_descriptor"],
)
def test_bad_catalog_is_one_line_source_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "archive.catalog").write_bytes(content)
    with pytest.raises(SourceError) as error:
        ArchiveReader(tmp_path)
    assert "\n" not in str(error.value) and str(tmp_path) in str(error.value)


def test_no_catalog_and_unknown_recording(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"no archive\.catalog"):
        ArchiveReader(tmp_path)
    write_catalog(tmp_path, [])
    assert ArchiveReader(tmp_path).recordings() == []
    with pytest.raises(SourceError, match="no recording 5"):
        ArchiveReader(tmp_path, recording_id=5)


def test_describe(archive: tuple[Path, list[Recording]]) -> None:
    directory, recs = archive
    d = ArchiveReader(directory).describe()
    assert d["kind"] == "archive" and d["catalog_format"] == "current"
    rows = d["recordings"]
    assert [r["state"] for r in rows] == ["VALID", "DELETED", "VALID"]
    assert rows[0]["bytes"] == recs[0].stop - recs[0].start
    assert rows[0]["segments"][0] == f"0-{recs[0].start - recs[0].start % TERM}.rec"


# -- issue 17: damage costs only the messages it carried ----------------------------------


def _frame_at(r: Recording, index: int) -> int:
    """The byte offset in segment 0 of message ``index``'s first frame (start 0)."""
    return r.log.messages[index][0]


@pytest.fixture
def plain(tmp_path: Path) -> tuple[Path, Recording]:
    log = build_log(7, 101, initial_term_id=3, session_id=55, stream_id=1001)
    r = Recording(log, 0, 0, len(log.buf))
    write_segments(tmp_path, r)
    write_catalog(tmp_path, [r])
    return tmp_path, r


def _poke(directory: Path, r: Recording, at: int, fmt: str, value: int) -> None:
    with (directory / f"0-{at - at % r.segment_length}.rec").open("r+b") as f:
        f.seek(at % r.segment_length)
        f.write(struct.pack(fmt, value))


def test_a_frame_length_past_the_mtu_or_stop_costs_only_its_message(
    plain: tuple[Path, Recording],
) -> None:
    """Issue 17 case 3: frame length 0x7fff. Before: one invented 32 KB message and the
    messages it covered silently gone; now that message only, counted."""
    directory, r = plain
    k = next(i for i in range(40, 101) if len(r.log.messages[i][1]) < 1000)
    _poke(directory, r, _frame_at(r, k), "<i", 0x7FFF)
    reader = ArchiveReader(directory)
    messages, gaps = replay(reader)
    expected = r.expected()
    assert messages == expected[:k] + expected[k + 1 :]
    assert reader.malformed == {"frame_too_long": 1} and len(gaps) == 1


def test_padding_in_the_middle_of_a_term_costs_only_its_message(
    plain: tuple[Path, Recording],
) -> None:
    """Issue 17 case 4: a DATA frame's type turned into PAD mid-term. Before: the message
    silently gone; now counted (pad_mid_term) and a gap."""
    directory, r = plain
    k = next(i for i in range(40, 101) if len(r.log.messages[i][1]) < 1000)
    _poke(directory, r, _frame_at(r, k) + 6, "<h", 0)
    reader = ArchiveReader(directory)
    messages, gaps = replay(reader)
    expected = r.expected()
    assert messages == expected[:k] + expected[k + 1 :]
    assert reader.malformed == {"pad_mid_term": 1} and len(gaps) == 1


def test_an_aeron_1_15_catalog_is_read_without_a_version_note(tmp_path: Path) -> None:
    """Issue 17 case 6: Aeron 1.15.1 writes catalog version 0 and names segments by
    index; before: 'catalog version 0.0.0, expected 2.x or 3.x'."""
    log = build_log(8, 300, initial_term_id=0, session_id=5, stream_id=10)
    r = Recording(log, 0, 0, len(log.buf))
    assert len(log.buf) > 2 * SEGMENT  # several segments: index names 0, 1, 2
    write_segments(tmp_path, r)
    write_catalog_v0(tmp_path, [r])
    assert (tmp_path / "0-2.rec").is_file()
    reader = ArchiveReader(tmp_path)
    assert (reader.catalog_format, reader.catalog_version) == ("legacy", "0.0.0")
    messages, gaps = replay(reader)
    assert messages == r.expected() and not gaps
    assert not reader.notes and not reader.malformed


_GOOD = build_log(9, 120, initial_term_id=11, session_id=66, stream_id=1001)


def _extents(log: Log) -> list[tuple[int, int, bytes]]:
    step = log.mtu - 32
    out = []
    for pos, payload in log.messages:
        size = sum(-(-(32 + len(payload[i : i + step])) // 32) * 32
                   for i in range(0, max(len(payload), 1), step))  # fmt: skip
        out.append((pos, pos + size, payload))
    return out


def _frame_starts(buf: bytes) -> list[int]:
    at, out = 0, []
    while at < len(buf):
        out.append(at)
        at += -(-struct.unpack_from("<i", buf, at)[0] // 32) * 32
    return out


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.sampled_from(["flip", "cut", "overwrite", "duplicate", "reorder", "zero"]), st.data())
def test_any_single_damage_loses_no_message_it_did_not_touch(
    tmp_path: Path, kind: str, data: st.DataObject
) -> None:
    """Issue 17: random single damage of a good recording; every message none of whose
    bytes were damaged is delivered, once, in order, and the damage is counted."""
    log = _GOOD
    buf = bytearray(log.buf)
    starts = _frame_starts(bytes(buf))
    touched: tuple[int, int]
    if kind == "flip":
        at = data.draw(st.integers(0, len(buf) - 1))
        buf[at] ^= 1 << data.draw(st.integers(0, 7))
        touched = (at, at + 1)
    elif kind == "cut":
        at = data.draw(st.integers(0, len(buf) - 1))
        touched = (at, len(buf))
    elif kind == "zero":
        at = data.draw(st.integers(0, len(buf) - 1))
        n = data.draw(st.integers(1, 4096))
        buf[at : at + n] = bytes(len(buf[at : at + n]))
        touched = (at, at + n)
    else:
        i = data.draw(st.integers(0, len(starts) - 2))
        a, b = starts[i], starts[i + 1]
        c = starts[i + 2] if i + 2 < len(starts) else len(buf)
        if kind == "overwrite":  # another frame's bytes over this one's place
            j = data.draw(st.integers(0, len(starts) - 1))
            src = buf[starts[j] : starts[j] + (b - a)]
            buf[a : a + len(src)] = src
            touched = (a, b)
        elif kind == "duplicate":  # this frame again over the next one
            buf[b : b + min(b - a, c - b)] = buf[a : a + min(b - a, c - b)]
            touched = (b, c)
        else:  # reorder: two frames swapped
            buf[a:c] = buf[b:c] + buf[a:b]
            touched = (a, c)
    directory = Path(tempfile.mkdtemp(dir=tmp_path))
    r = Recording(log, 0, 0, len(log.buf), segment_length=1 << 20)
    with (directory / "0-0.rec").open("wb") as f:
        f.truncate(1 << 20)
        f.write(buf[: touched[0]] if kind == "cut" else buf)
    if kind == "cut":
        os.truncate(directory / "0-0.rec", touched[0])
    write_catalog(directory, [r])
    reader = ArchiveReader(directory)
    assembler = FrameAssembler()
    got = [m.payload for m in assembler.assemble(reader.frames())]
    lo, hi = touched
    untouched = [p for s, e, p in _extents(log) if e <= lo or s >= hi]
    assert [p for p in got if p in set(untouched)] == untouched
    k = assembler.counters
    damage = sum(reader.malformed.values()) + len(k.gaps) + k.dropped_fragments + k.out_of_place
    if len(got) < len(log.messages):  # a message lost: said so (a payload byte changed is
        assert damage > 0  # not seen: archive frames carry no checksum)
