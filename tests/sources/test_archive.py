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
from pathlib import Path

import pytest
from archive_builder import (
    MTU,
    SEGMENT,
    TERM,
    Recording,
    build_log,
    write_catalog,
    write_legacy_catalog,
    write_segments,
)

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


def test_truncated_segment_keeps_frames_before_the_cut(
    archive: tuple[Path, list[Recording]],
) -> None:
    directory, recs = archive
    r = recs[0]
    second = directory / f"0-{r.start - r.start % TERM + SEGMENT}.rec"
    cut = 50_001  # inside a frame
    os.truncate(second, cut)
    reader = ArchiveReader(directory)
    messages, _ = replay(reader, 0)
    cut_position = r.start - r.start % TERM + SEGMENT + cut
    whole = [p for pos, p in r.log.messages if r.start <= pos and pos + len(p) + 64 < cut_position]
    assert messages[: len(whole) - 2] == whole[: len(whole) - 2]
    assert messages == r.expected()[: len(messages)] and len(messages) < len(r.expected())
    assert reader.malformed["truncated_segment"] == 1
    assert any("truncated segment" in n for n in reader.notes)


def test_missing_segment_is_a_note(archive: tuple[Path, list[Recording]]) -> None:
    directory, recs = archive
    r = recs[0]
    (directory / f"0-{r.start - r.start % TERM + SEGMENT}.rec").unlink()
    reader = ArchiveReader(directory)
    messages, _ = replay(reader, 0)
    assert messages and messages == r.expected()[: len(messages)]
    assert reader.malformed["missing_segment"] == 1
    assert any("missing" in n for n in reader.notes)


def test_zeroed_data_before_stop_position_is_a_note(
    archive: tuple[Path, list[Recording]],
) -> None:
    directory, recs = archive
    r = recs[0]
    first = directory / f"0-{r.start - r.start % TERM}.rec"
    with first.open("r+b") as f:
        f.seek(100_000)
        f.write(bytes(SEGMENT - 100_000))  # never flushed before a crash
    reader = ArchiveReader(directory)
    messages, _ = replay(reader, 0)
    assert messages == r.expected()[: len(messages)] and 0 < len(messages) < len(r.expected())
    assert reader.malformed["zero_tail"] == 1


def test_corrupt_frame_header_stops_with_a_note(
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
    messages, _ = replay(reader, 0)
    assert messages == r.expected()[: 100 - 37]
    assert reader.malformed["bad_frame"] == 1


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
