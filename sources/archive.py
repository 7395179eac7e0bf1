"""``ArchiveReader``: Aeron data frames from an Aeron Archive directory, read offline.

Layouts, checked against the Aeron sources (aeron-io/aeron: ``Catalog.java``,
``RecordingWriter.java``, ``AeronArchive.segmentFileBasePosition``,
``ArchiveMigration_2_3.java`` and ``aeron-archive-codecs.xml``, at 1.53.0-SNAPSHOT
and at the commit before the variable-length catalog, 0a57f056fc~1):

``archive.catalog``, little-endian.

* Current format (catalog version 3.x, Aeron 1.32.0 onwards; written by every
  release since, 1.41+ included): a 32-byte ``CatalogHeader`` (version i32,
  length i32 = 32, nextRecordingId i64, alignment i32 @16, the rest reserved),
  then entries back to back from offset 32, each a 32-byte
  ``RecordingDescriptorHeader`` (length i32 = entry size - 32, state i32:
  0 INVALID, 1 VALID, 2 DELETED, checksum i32, reserved) and a
  ``RecordingDescriptor``. Entry size = align(32 + length, alignment); alignment is
  64 for new catalogs. The walk stops at the first length <= 0.
* Legacy format (catalog version 2.x, Aeron before 1.32.0): an 8-byte header
  (version i32, entryLength i32, default 1024), alignment @16 reads 0; entry
  ``n`` at (n + 1) * entryLength; descriptor header (length i32 = encoded
  descriptor length, valid i8 @4: 1 VALID 0 INVALID).

``RecordingDescriptor`` (both): controlSessionId, correlationId, recordingId,
startTimestamp, stopTimestamp (epoch ms), startPosition, stopPosition i64;
initialTermId, segmentFileLength, termBufferLength, mtuLength, sessionId,
streamId i32; then strippedChannel, originalChannel, sourceIdentity, each a u32
length and ASCII bytes. stopPosition -1 (NULL_POSITION): still recording, or the
archive stopped without closing it.

Segments ``<recordingId>-<segmentBasePosition>.rec`` (since Aeron 1.22; older
archives named them by segment index). The base of the segment holding position
p is ``startTermBase + floor((p - startTermBase) / segmentFileLength) *
segmentFileLength`` with ``startTermBase = startPosition`` rounded down to the term
length, and p sits at byte ``p - base`` of that file; files are pre-sized
(sparse) to segmentFileLength, so the unwritten tail reads as zeros. They hold the
term frames as written to the log: 32-byte aligned DATA frames and PAD frames
filling term ends. With record checksums on, the archive overwrites each frame's
session_id with a CRC, so session and stream always come from the catalog.

Damage: a missing catalog or one that does not parse is a one-line
``SourceError``; a missing or short segment, a zero-filled tail before
stopPosition or a frame header that does not fit its position ends that
recording with a line in ``notes`` (and ``malformed[reason] += 1``), after
every frame before it was yielded.
"""

from __future__ import annotations

import mmap
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from telepipe.errors import SourceError
from telepipe.sources.frames import (
    HEADER_LENGTH,
    TYPE_DATA,
    TYPE_PAD,
    DataFrame,
    align,
    position_of,
)

__all__ = ["ArchiveReader", "RecordingInfo"]

CATALOG_FILE = "archive.catalog"
CATALOG_HEADER_LENGTH = 32
DESCRIPTOR_HEADER_LENGTH = 32
LEGACY_ENTRY_LENGTH = 1024
NULL_POSITION = -1
STATES = {0: "INVALID", 1: "VALID", 2: "DELETED"}

_DESCRIPTOR = struct.Struct("<7q6i")  # the fixed block of RecordingDescriptor, 80 bytes
_FRAME = struct.Struct("<iBBhiiiiq")


def received_at(info: RecordingInfo, position: int) -> int:
    """A frame's receive time, derived: frames in ``.rec`` files carry none, so the time
    is the recording's start timestamp (catalog, ms) plus its share of the recording's
    span, by position (stop timestamp and position known), or plus 1 ns per byte (a
    recording in progress). Deterministic: every replay of the archive gives the same,
    and it grows with position. A publisher's stamp in the reserved value wins over
    it (``Message.stamp_ns``).
    """
    start_ns = max(info.start_timestamp, 0) * 1_000_000
    done = position - info.start_position
    span = info.stop_position - info.start_position
    if (
        info.stop_position != NULL_POSITION
        and span > 0
        and info.stop_timestamp >= info.start_timestamp
    ):
        return start_ns + done * (info.stop_timestamp - info.start_timestamp) * 1_000_000 // span
    return start_ns + done


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    """One catalog entry: the RecordingDescriptor fields and the entry's state."""

    recording_id: int
    state: str  # VALID, INVALID, DELETED (or UNKNOWN(n))
    control_session_id: int
    correlation_id: int
    start_timestamp: int  # epoch ms
    stop_timestamp: int  # epoch ms, -1 if not stopped
    start_position: int
    stop_position: int  # -1 while recording (or not closed cleanly)
    initial_term_id: int
    segment_file_length: int
    term_buffer_length: int
    mtu_length: int
    session_id: int
    stream_id: int
    stripped_channel: str
    original_channel: str
    source_identity: str
    catalog_offset: int

    @property
    def valid(self) -> bool:
        return self.state == "VALID"

    def segment_base(self, position: int) -> int:
        """Base position of the segment file holding ``position`` (segmentFileBasePosition)."""
        start_term_base = self.start_position - (
            self.start_position & (self.term_buffer_length - 1)
        )
        from_base = position - start_term_base
        return start_term_base + from_base - (from_base & (self.segment_file_length - 1))

    def segment_name(self, position: int) -> str:
        return f"{self.recording_id}-{self.segment_base(position)}.rec"


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class ArchiveReader:
    """Recordings of an Aeron Archive directory, read without an Archive running."""

    def __init__(self, directory: str | Path, recording_id: int | None = None) -> None:
        self.directory = Path(directory)
        self.recording_id = recording_id
        self.notes: list[str] = []
        self.malformed: Counter[str] = Counter()
        catalog = self.directory / CATALOG_FILE
        if not catalog.is_file():
            raise SourceError(f"{self.directory}: not an Aeron Archive (no {CATALOG_FILE})")
        try:
            data = catalog.read_bytes()
        except OSError as error:
            raise SourceError(f"{catalog}: cannot read ({error.strerror})") from None
        self.catalog_version, self.catalog_format, self._recordings = self._parse(catalog, data)
        if recording_id is not None and not any(
            r.recording_id == recording_id for r in self._recordings
        ):
            raise SourceError(f"{catalog}: no recording {recording_id}")

    # -- catalog ----------------------------------------------------------------

    def _parse(self, catalog: Path, data: bytes) -> tuple[str, str, list[RecordingInfo]]:
        if len(data) < CATALOG_HEADER_LENGTH:
            raise SourceError(f"{catalog}: {len(data)} bytes, too short for a catalog header")
        version, length, _, alignment = struct.unpack_from("<iiqi", data, 0)
        major, minor, patch = (version >> 16) & 0xFF, (version >> 8) & 0xFF, version & 0xFF
        semantic = f"{major}.{minor}.{patch}"
        if alignment != 0:
            if not _pow2(alignment) or alignment < 32 or length != CATALOG_HEADER_LENGTH:
                raise SourceError(
                    f"{catalog}: bad catalog header (version {semantic}, length {length}, "
                    f"alignment {alignment})"
                )
            fmt, offset, stride = "current", CATALOG_HEADER_LENGTH, 0
        else:
            stride = length or LEGACY_ENTRY_LENGTH  # the header's entryLength
            if not _pow2(stride) or not 256 <= stride <= 1 << 20 or major > 2:
                raise SourceError(
                    f"{catalog}: bad catalog header (version {semantic}, entry length {length})"
                )
            fmt, offset, alignment = "legacy", stride, stride
        if major not in (2, 3):
            self.notes.append(f"{catalog}: catalog version {semantic}, expected 2.x or 3.x")
        recordings = []
        while offset + DESCRIPTOR_HEADER_LENGTH <= len(data):
            entry_length, state = struct.unpack_from("<ii", data, offset)
            if entry_length <= 0:
                break
            size = stride or align(DESCRIPTOR_HEADER_LENGTH + entry_length, alignment)
            if fmt == "legacy":
                state &= 0xFF  # an int8 'valid' flag
            end = offset + DESCRIPTOR_HEADER_LENGTH + entry_length
            try:
                recordings.append(self._descriptor(data, offset, min(end, len(data)), state))
            except (struct.error, ValueError) as error:
                if not recordings:
                    raise SourceError(f"{catalog}: bad recording descriptor ({error})") from None
                self._note("bad_descriptor", f"{catalog}: entry at byte {offset}: {error}")
            offset += size
        return semantic, fmt, recordings

    def _descriptor(self, data: bytes, offset: int, end: int, state: int) -> RecordingInfo:
        at = offset + DESCRIPTOR_HEADER_LENGTH
        if at + _DESCRIPTOR.size > end:
            raise ValueError("descriptor shorter than its fixed fields")
        f = _DESCRIPTOR.unpack_from(data, at)
        at += _DESCRIPTOR.size
        strings = []
        for _ in range(3):
            if at + 4 > end:
                raise ValueError("descriptor cut inside its channel strings")
            (n,) = struct.unpack_from("<I", data, at)
            if at + 4 + n > end:
                raise ValueError(f"string of {n} bytes overruns the entry")
            strings.append(data[at + 4 : at + 4 + n].decode("ascii", "replace"))
            at += 4 + n
        info = RecordingInfo(
            recording_id=f[2],
            state=STATES.get(state, f"UNKNOWN({state})"),
            control_session_id=f[0],
            correlation_id=f[1],
            start_timestamp=f[3],
            stop_timestamp=f[4],
            start_position=f[5],
            stop_position=f[6],
            initial_term_id=f[7],
            segment_file_length=f[8],
            term_buffer_length=f[9],
            mtu_length=f[10],
            session_id=f[11],
            stream_id=f[12],
            stripped_channel=strings[0],
            original_channel=strings[1],
            source_identity=strings[2],
            catalog_offset=offset,
        )
        if info.valid and not (
            _pow2(info.term_buffer_length)
            and _pow2(info.segment_file_length)
            and info.segment_file_length >= info.term_buffer_length
            and info.start_position >= 0
            and info.start_position % 32 == 0
        ):
            raise ValueError(
                f"recording {info.recording_id}: impossible term/segment lengths or positions"
            )
        return info

    def _note(self, reason: str, line: str) -> None:
        self.malformed[reason] += 1
        self.notes.append(line)

    # -- public -----------------------------------------------------------------

    def recordings(self) -> list[RecordingInfo]:
        """Every catalog entry in catalog order, valid or not."""
        return list(self._recordings)

    def recording(self, recording_id: int) -> RecordingInfo:
        for r in self._recordings:
            if r.recording_id == recording_id:
                return r
        raise SourceError(f"{self.directory}: no recording {recording_id}")

    def frames(self, recording_id: int | None = None) -> Iterator[DataFrame]:
        """DATA frames of one recording, or of every valid recording in catalog order."""
        rid = recording_id if recording_id is not None else self.recording_id
        if rid is not None:
            info = self.recording(rid)
            if not info.valid:
                self.notes.append(f"{self.directory}: recording {rid} is {info.state}")
            yield from self._frames(info)
            return
        for info in self._recordings:
            if info.valid:
                yield from self._frames(info)

    def unreadable(self) -> dict[str, int]:
        """Nothing beyond ``malformed``."""
        return {}

    def stop(self) -> None:
        """A recording is read to its end: nothing waits."""

    def describe(self) -> dict[str, object]:
        """Catalog summary (no segment is read beyond a directory listing)."""
        present = {p.name for p in self.directory.glob("*.rec")}
        out = []
        for r in self._recordings:
            d = asdict(r)
            d["segments"] = sorted(
                (n for n in present if n.startswith(f"{r.recording_id}-")),
                key=lambda n: int(n.rsplit("-", 1)[1][:-4] or 0),
            )
            if r.stop_position != NULL_POSITION:
                d["bytes"] = r.stop_position - r.start_position
            out.append(d)
        return {
            "kind": "archive",
            "path": str(self.directory),
            "catalog_format": self.catalog_format,
            "catalog_version": self.catalog_version,
            "recordings": out,
            "notes": list(self.notes),
        }

    # -- segments ---------------------------------------------------------------

    def _frames(self, info: RecordingInfo) -> Iterator[DataFrame]:
        rid, term_length = info.recording_id, info.term_buffer_length
        position, stop = info.start_position, info.stop_position
        where = f"{self.directory}: recording {rid}"
        while stop == NULL_POSITION or position < stop:
            base = info.segment_base(position)
            path = self.directory / info.segment_name(position)
            if not path.is_file():
                if stop != NULL_POSITION:
                    self._note(
                        "missing_segment",
                        f"{where}: segment {path.name} missing; stopped at position "
                        f"{position} of {stop}",
                    )
                else:
                    self.notes.append(f"{where}: in progress; read up to position {position}")
                return
            try:
                with path.open("rb") as f:
                    size = min(f.seek(0, 2), info.segment_file_length)
                    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            except OSError as error:
                self._note("unreadable_segment", f"{where}: {path.name}: {error.strerror}")
                return
            reason = None
            try:
                limit = size if stop == NULL_POSITION else min(size, stop - base)
                offset = position - base
                while offset < limit:
                    if offset + HEADER_LENGTH > size:
                        reason = "truncated_segment"
                        break
                    flen, _, flags, ftype, term_offset, _, _, term_id, reserved = (
                        _FRAME.unpack_from(mm, offset)
                    )
                    if flen <= 0:
                        reason = "zero_tail"
                        break
                    aligned = align(flen)
                    start = position_of(term_id, term_offset, info.initial_term_id, term_length)
                    if (
                        ftype not in (TYPE_DATA, TYPE_PAD)
                        or flen < HEADER_LENGTH
                        or start != base + offset
                        or term_offset + aligned > term_length
                    ):
                        reason = "bad_frame"
                        break
                    if offset + flen > size:
                        reason = "truncated_segment"
                        break
                    end = base + offset + aligned
                    if ftype == TYPE_DATA:
                        yield DataFrame(
                            info.stream_id, info.session_id, term_id, term_offset, flags,
                            end, received_at(info, end),
                            bytes(mm[offset + HEADER_LENGTH : offset + flen]), reserved,
                        )  # fmt: skip
                    else:  # PAD: the position moves on to the next term
                        yield DataFrame(
                            info.stream_id, info.session_id, term_id, term_offset, flags,
                            end, received_at(info, end), b"", reserved, padding=aligned,
                        )  # fmt: skip
                    offset += aligned
            finally:
                if isinstance(mm, mmap.mmap):
                    mm.close()
            position = base + offset
            if stop != NULL_POSITION and position >= stop:
                return
            if reason is None and offset < info.segment_file_length:
                reason = "truncated_segment"  # the file is shorter than a segment
            if reason is None:
                continue  # on to the next segment
            if stop == NULL_POSITION and reason == "zero_tail":
                self.notes.append(f"{where}: in progress; read up to position {position}")
            else:
                of = f" of {stop}" if stop != NULL_POSITION else ""
                self._note(
                    reason,
                    f"{where}: {path.name}: {reason.replace('_', ' ')} at position "
                    f"{position}{of}; stopped there",
                )
            return
