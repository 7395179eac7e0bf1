"""Write an Aeron Archive directory from recorded Aeron data frames (benchmark helper).

No Java Archive runs here, so the replay benchmark builds the directory the way
the Archive lays it out (aeron-archive-codecs.xml ``CatalogHeader`` /
``RecordingDescriptorHeader`` / ``RecordingDescriptor``, ``Catalog.java``,
``RecordingWriter.java``, ``AeronArchive.segmentFileBasePosition``), as summarised
in ``telepipe.sources.archive``'s module docstring:

* ``archive.catalog``, current format (catalog 3.x): a 32-byte header (version,
  length 32, nextRecordingId, alignment 64), then per recording a 32-byte
  descriptor header (length, state 1 = VALID, checksum 0) and the descriptor
  (7 x i64, 6 x i32, three u32-length-prefixed ASCII strings), each entry padded
  to the alignment; the file is pre-sized to 1 MiB as the Archive maps it.
* ``<recordingId>-<segmentBase>.rec``: the term log bytes of the recording, each
  frame (32-byte Aeron data header + payload, 32-byte aligned) at byte
  ``position - segmentBase``; PAD frames close terms a message did not fit in;
  files are pre-sized (sparse) to the segment length.

The frames come in stream order with their term id, term offset, flags and end
position (``DataFrame`` from any telepipe reader; a telepipe capture also yields
the PAD frames Aeron never delivers). One recording per (stream, session).
Nothing here imports the tests or telepipe's archive reader.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from telepipe.sources.frames import DataFrame

CATALOG_VERSION = (3 << 16) | (1 << 8)  # 3.1.0
CATALOG_CAPACITY = 1024 * 1024
CATALOG_ALIGNMENT = 64
SEGMENT_FILE_LENGTH = 128 * 1024 * 1024  # the Archive's default segment file length
VALID = 1
_HEADER = struct.Struct("<iBBhiiiiq")
_PAD_TYPE, _DATA_TYPE = 0, 1


def _align(n: int, alignment: int = 32) -> int:
    return (n + alignment - 1) & ~(alignment - 1)


def capture_initial_term_ids(directory: str | Path) -> dict[tuple[int, int], int]:
    """(stream, session) -> initial_term_id, from each session's first capture record.

    Walks the record headers of a telepipe capture (``telepipe.sources.capture``
    docstring: segment header length u16 @10; record: u32 length @0, i32
    initial_term_id @24, Aeron header @32 with session @44 and stream @48).
    """
    found: dict[tuple[int, int], int] = {}
    for path in sorted(Path(directory).glob("*.tpcap")):
        data = path.read_bytes()
        (at,) = struct.unpack_from("<H", data, 10)
        while at + 64 <= len(data):
            (length,) = struct.unpack_from("<I", data, at)
            if length < 64 or at + length > len(data):
                break
            (initial,) = struct.unpack_from("<i", data, at + 24)
            session, stream = struct.unpack_from("<ii", data, at + 44)
            found.setdefault((stream, session), initial)
            at += length
    return found


@dataclass
class _Recording:
    recording_id: int
    stream_id: int
    session_id: int
    initial_term_id: int
    start_position: int
    stop_position: int = 0
    term_length: int = 0
    mtu: int = 0
    first_ns: int = 0
    last_ns: int = 0
    files: dict[int, BinaryIO] = field(default_factory=dict)


@dataclass
class ArchiveSummary:
    directory: Path
    recordings: list[dict[str, int]]

    @property
    def log_bytes(self) -> int:
        return sum(r["stop_position"] - r["start_position"] for r in self.recordings)


def _term_length(frame: DataFrame, initial_term_id: int, default: int) -> int:
    """The term length implied by a frame in a later term than the first, else ``default``."""
    terms = (frame.term_id - initial_term_id) & 0xFFFFFFFF
    if terms == 0:
        return 0
    start = frame.start_position
    length, rest = divmod(start - frame.term_offset, terms)
    if rest or length <= 0 or length & (length - 1):
        raise ValueError(f"frame at position {start} does not fit any power-of-two term length")
    return length


def write_archive(
    frames: Iterable[DataFrame],
    directory: str | Path,
    initial_term_ids: dict[tuple[int, int], int],
    *,
    channel: str,
    default_term_length: int = 16 * 1024 * 1024,
    segment_file_length: int = SEGMENT_FILE_LENGTH,
) -> ArchiveSummary:
    """Write every (stream, session) of ``frames`` as one recording; returns a summary.

    ``frames`` are read once, in order. The term length is taken from the first
    frame of a later term (else ``default_term_length``); the segment length is
    ``max(segment_file_length, term length)``, as the Archive does.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    recordings: dict[tuple[int, int], _Recording] = {}
    pending: dict[tuple[int, int], list[DataFrame]] = {}  # frames before the term length is known
    try:
        for frame in frames:
            key = (frame.stream_id, frame.session_id)
            r = recordings.get(key)
            if r is None:
                r = recordings[key] = _Recording(
                    len(recordings), key[0], key[1], initial_term_ids[key], frame.start_position
                )
                r.first_ns = frame.received_ns
                pending[key] = []
            r.stop_position = frame.position
            r.last_ns = frame.received_ns or r.last_ns
            if not frame.padding:
                r.mtu = max(r.mtu, _align(32 + len(frame.payload)))
            if not r.term_length:
                r.term_length = _term_length(frame, r.initial_term_id, 0)
                if not r.term_length:
                    pending[key].append(frame)
                    continue
                for earlier in pending.pop(key):
                    _write_frame(out, r, earlier, segment_file_length)
            _write_frame(out, r, frame, segment_file_length)
        for key, held in pending.items():  # a recording within its first term
            r = recordings[key]
            r.term_length = default_term_length
            while r.term_length < r.stop_position:
                r.term_length *= 2
            for earlier in held:
                _write_frame(out, r, earlier, segment_file_length)
    finally:
        for r in recordings.values():
            for f in r.files.values():
                f.close()
    _write_catalog(out, list(recordings.values()), channel, segment_file_length)
    return ArchiveSummary(
        out,
        [
            {
                "recording_id": r.recording_id,
                "stream_id": r.stream_id,
                "session_id": r.session_id,
                "start_position": r.start_position,
                "stop_position": r.stop_position,
                "term_length": r.term_length,
                "segment_file_length": max(segment_file_length, r.term_length),
                "segments": len(list(out.glob(f"{r.recording_id}-*.rec"))),
            }
            for r in recordings.values()
        ],
    )


def _write_frame(out: Path, r: _Recording, frame: DataFrame, segment_file_length: int) -> None:
    segment = max(segment_file_length, r.term_length)
    start = frame.start_position
    start_term_base = r.start_position - r.start_position % r.term_length
    base = start_term_base + (start - start_term_base) // segment * segment
    f = r.files.get(base)
    if f is None:
        f = r.files[base] = (out / f"{r.recording_id}-{base}.rec").open("wb")
        f.truncate(segment)  # pre-sized (sparse), as RecordingWriter creates segments
    f.seek(start - base)
    if frame.padding:
        f.write(
            _HEADER.pack(
                frame.padding, 0, frame.flags, _PAD_TYPE, frame.term_offset, r.session_id,
                r.stream_id, frame.term_id, 0,
            )
        )  # fmt: skip
    else:
        f.write(
            _HEADER.pack(
                32 + len(frame.payload), 0, frame.flags, _DATA_TYPE, frame.term_offset,
                r.session_id, r.stream_id, frame.term_id, frame.reserved_value,
            )
        )  # fmt: skip
        f.write(frame.payload)


def _write_catalog(
    out: Path, recordings: list[_Recording], channel: str, segment_file_length: int
) -> None:
    catalog = bytearray(
        struct.pack("<iiqi", CATALOG_VERSION, 32, len(recordings), CATALOG_ALIGNMENT)
    )
    catalog += bytes(32 - len(catalog))
    for r in recordings:
        fixed = struct.pack(
            "<7q6i", 0, 0, r.recording_id, r.first_ns // 1_000_000, r.last_ns // 1_000_000,
            r.start_position, r.stop_position, r.initial_term_id,
            max(segment_file_length, r.term_length), r.term_length, r.mtu, r.session_id,
            r.stream_id,
        )  # fmt: skip
        strings = (channel, channel, "telepipe-benchmark")
        body = fixed + b"".join(struct.pack("<I", len(s)) + s.encode("ascii") for s in strings)
        size = _align(32 + len(body), CATALOG_ALIGNMENT)
        catalog += struct.pack("<iii", size - 32, VALID, 0) + bytes(20) + body
        catalog += bytes(size - 32 - len(body))
    catalog += bytes(max(0, CATALOG_CAPACITY - len(catalog)))
    (out / "archive.catalog").write_bytes(catalog)
