"""Aeron Archive directories built from the published format, for tests.

No Java Archive runs here, so tests build the files from the published format
(aeron-archive-codecs.xml CatalogHeader / RecordingDescriptorHeader /
RecordingDescriptor, Catalog.java, RecordingWriter.java, AeronArchive
.segmentFileBasePosition, and the term log rules of the Aeron publication: 32-byte
headers, 32-byte alignment, fragments of at most mtu - 32 bytes with BEGIN/END flags,
a PAD frame closing a term a message does not fit in). Only struct and those rules,
nothing from telepipe's reader.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

TERM = 64 * 1024
SEGMENT = 128 * 1024
MTU = 1408


@dataclass
class Log:
    """A publication's term log from position 0, written as Aeron's TermAppender does."""

    initial_term_id: int
    session_id: int
    stream_id: int
    term_length: int = TERM
    mtu: int = MTU
    buf: bytearray = field(default_factory=bytearray)
    messages: list[tuple[int, bytes]] = field(default_factory=list)  # (start position, payload)

    def _header(self, length: int, flags: int, ftype: int, position: int, reserved: int) -> bytes:
        term_id = self.initial_term_id + position // self.term_length
        offset = position % self.term_length
        return struct.pack(
            "<iBBhiiiiq", length, 0, flags, ftype, offset, self.session_id, self.stream_id,
            term_id, reserved,
        )  # fmt: skip

    def append(self, payload: bytes, reserved: int | None = None) -> None:
        """``reserved``: every fragment's reserved value (default: its position)."""
        max_payload = self.mtu - 32
        chunks = [payload[i : i + max_payload] for i in range(0, len(payload), max_payload)]
        chunks = chunks or [b""]
        required = sum(-(-(32 + len(c)) // 32) * 32 for c in chunks)
        position = len(self.buf)
        left = self.term_length - position % self.term_length
        if required > left:  # pad the rest of the term
            self.buf += self._header(left, 0xC0, 0, position, 0) + bytes(left - 32)
            position += left
        self.messages.append((position, payload))
        for i, chunk in enumerate(chunks):
            flags = (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0)
            value = position if reserved is None else reserved
            frame = self._header(32 + len(chunk), flags, 1, position, value) + chunk
            frame += bytes(-len(frame) % 32)
            self.buf += frame
            position += len(frame)

    def crc_sessions(self) -> None:
        """What record checksums do: every DATA frame's session_id becomes a CRC."""
        at = 0
        while at < len(self.buf):
            aligned = -(-struct.unpack_from("<i", self.buf, at)[0] // 32) * 32
            if self.buf[at + 6] == 1:
                crc = zlib.crc32(self.buf[at + 32 : at + aligned]) - (1 << 31)
                struct.pack_into("<i", self.buf, at + 12, crc)
            at += aligned


@dataclass
class Recording:
    log: Log
    recording_id: int
    start: int
    stop: int  # -1: in progress (the log's end is where the writer is)
    state: int = 1
    segment_length: int = SEGMENT
    channel: str = "aeron:udp?endpoint=localhost:40123"
    start_ms: int = 1_767_225_600_000  # the catalog's start/stop timestamps (0: none)
    stop_ms: int = 1_767_225_660_000

    def descriptor(self) -> bytes:
        fixed = struct.pack(
            "<7q6i", 11, 22, self.recording_id, self.start_ms,
            -1 if self.stop == -1 else self.stop_ms, self.start, self.stop,
            self.log.initial_term_id, self.segment_length, self.log.term_length, self.log.mtu,
            self.log.session_id, self.log.stream_id,
        )  # fmt: skip
        strings = (self.channel, self.channel + "|alias=x", "127.0.0.1:55555")
        return fixed + b"".join(struct.pack("<I", len(s)) + s.encode() for s in strings)

    def expected(self) -> list[bytes]:
        end = self.stop if self.stop != -1 else len(self.log.buf)
        return [p for pos, p in self.log.messages if self.start <= pos < end]


def write_catalog(directory: Path, recordings: list[Recording], alignment: int = 64) -> None:
    """Current format (catalog 3.x): 32-byte header, aligned variable-length entries."""
    out = bytearray(struct.pack("<iiqi", (3 << 16) | (1 << 8), 32, len(recordings), alignment))
    out += bytes(32 - len(out))
    for r in recordings:
        body = r.descriptor()
        size = -(-(32 + len(body)) // alignment) * alignment
        out += struct.pack("<iii", size - 32, r.state, 0) + bytes(20) + body
        out += bytes(size - 32 - len(body))
    out += bytes(1024 * 1024 - len(out))  # the Archive maps a 1 MiB catalog
    (directory / "archive.catalog").write_bytes(out)


def write_legacy_catalog(directory: Path, recordings: list[Recording]) -> None:
    """Legacy format (catalog 2.x): 8-byte header, entry n at (n + 1) * 1024."""
    out = bytearray(1024 * (len(recordings) + 4))
    struct.pack_into("<ii", out, 0, (2 << 16) | (1 << 8), 1024)
    for r in recordings:
        body = r.descriptor()
        at = (r.recording_id + 1) * 1024
        struct.pack_into("<ib", out, at, len(body), 1 if r.state == 1 else 0)
        out[at + 32 : at + 32 + len(body)] = body
    (directory / "archive.catalog").write_bytes(out)


def write_segments(directory: Path, r: Recording) -> list[Path]:
    """Segment files named by base position, pre-sized, holding [start, stop) of the log."""
    end = r.stop if r.stop != -1 else len(r.log.buf)
    start_term_base = r.start - r.start % r.log.term_length
    paths = []
    base = start_term_base
    while base < end or (base == start_term_base):
        lo, hi = max(base, r.start), min(base + r.segment_length, end)
        path = directory / f"{r.recording_id}-{base}.rec"
        with path.open("wb") as f:
            f.truncate(r.segment_length)
            f.seek(lo - base)
            f.write(r.log.buf[lo:hi])
        paths.append(path)
        base += r.segment_length
    return paths


def build_log(seed: int, n: int, initial_term_id: int, session_id: int, stream_id: int) -> Log:
    rng = random.Random(seed)
    log = Log(initial_term_id, session_id, stream_id)
    for i in range(n):
        size = rng.choice([0, 1, 60, 200, 1376, 1377, 3000, 9000])
        log.append(bytes([i % 251]) * 4 + rng.randbytes(size))
    return log


def archive_of(
    directory: Path,
    sessions: Iterable[tuple[int, int, Iterable[tuple[bytes, int]]]],
    term_length: int = 1 << 20,
    segment_length: int = 1 << 22,
) -> list[Recording]:
    """An Archive directory with one recording per publisher session, in this order:
    ``(stream_id, session_id, [(payload, reserved value)])``, each message laid out as
    a publication writes it (fragments, PAD at term ends) from position 0 of a term log
    of ``term_length``, in segments of ``segment_length``; recording ids 0, 1, ..."""
    directory.mkdir(parents=True, exist_ok=True)
    recordings = []
    for rid, (stream_id, session_id, messages) in enumerate(sessions):
        log = Log(1000 * rid - 3, session_id, stream_id, term_length=term_length)
        for payload, reserved in messages:
            log.append(payload, reserved)
        recording = Recording(log, rid, 0, len(log.buf), segment_length=segment_length)
        write_segments(directory, recording)
        recordings.append(recording)
    write_catalog(directory, recordings)
    return recordings


def write_catalog_v0(directory: Path, recordings: list[Recording]) -> None:
    """What Aeron 1.15.1 (before 1.22) writes: the legacy layout with catalog version 0
    (CatalogHeaderEncoder.version(0), entryLength 1024: Catalog.class of aeron-all
    1.15.1), and segments named ``<recordingId>-<segment index>.rec``."""
    write_legacy_catalog(directory, recordings)
    with (directory / "archive.catalog").open("r+b") as f:
        f.write(struct.pack("<ii", 0, 1024))
    for r in recordings:
        term_base = r.start - r.start % r.log.term_length
        for path in sorted(directory.glob(f"{r.recording_id}-*.rec")):
            base = int(path.stem.split("-")[1])
            path.rename(
                directory / f"{r.recording_id}-{(base - term_base) // r.segment_length}.rec"
            )
