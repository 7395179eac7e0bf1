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
import re
import struct
from collections import Counter
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from telepipe.errors import SourceError
from telepipe.sources.frames import (
    FRAME_ALIGNMENT,
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


def received_at(info: RecordingInfo, position: int, reserved: int = 0) -> int:
    """A frame's receive time, derived: frames in ``.rec`` files carry none, so the time
    is the recording's start timestamp (catalog, ms) plus its share of the recording's
    span, by position (stop timestamp and position known), or plus 1 ns per byte (a
    recording in progress). Deterministic: every replay of the archive gives the same,
    and it grows with position. A publisher's stamp in the reserved value wins over
    it (``Message.stamp_ns``), and is the frame's time here too when it lies within the
    recording's span (a publisher's epoch-ns send time).
    """
    start_ns = max(info.start_timestamp, 0) * 1_000_000
    if (
        start_ns
        and start_ns <= reserved
        and (
            info.stop_timestamp < info.start_timestamp
            or reserved <= info.stop_timestamp * 1_000_000
        )
    ):
        return reserved
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
    state: str  # VALID, INVALID, DELETED
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
        self._noted: set[str] = set()
        catalog = self.directory / CATALOG_FILE
        if not catalog.is_file():
            raise SourceError(f"{self.directory}: not an Aeron Archive (no {CATALOG_FILE})")
        try:
            data = catalog.read_bytes()
        except OSError as error:
            raise SourceError(f"{catalog}: cannot read ({error.strerror})") from None
        self.catalog_version, self.catalog_format, self._recordings = self._parse(catalog, data)
        # Segment files of recordings the catalog does not list (a catalog cut or
        # damaged): their data cannot be read without it, counted, never silent.
        listed = {r.recording_id for r in self._recordings}
        found = {p.name.split("-", 1)[0] for p in self.directory.glob("*-*.rec")}
        unlisted = sorted(int(n) for n in found if n.isdigit() and int(n) not in listed)
        if unlisted:
            self.malformed["uncatalogued_recording"] += len(unlisted)
            self.notes.append(
                f"{catalog}: no entry for recording(s) {', '.join(map(str, unlisted[:10]))} "
                "whose segment files are here (a damaged catalog?): not read"
            )
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
        if version == 0 and fmt == "legacy":
            semantic = "0.0.0"  # Aeron before 1.22 wrote 0: segments named by index
        elif major not in (1, 2, 3):
            self.notes.append(
                f"{catalog}: catalog version {semantic}, expected 0 (Aeron before 1.22), "
                "1.x, 2.x or 3.x"
            )
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
        if state not in STATES:  # damaged: its recording is read (its data may be whole)
            self._note("bad_state", f"catalog entry at byte {offset}: state {state} "
                       "unknown; read as VALID")  # fmt: skip
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
            state=STATES.get(state, "VALID"),
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
            and (
                info.stop_position == NULL_POSITION
                or (info.stop_position >= info.start_position and info.stop_position % 32 == 0)
            )
        ):
            raise ValueError(
                f"recording {info.recording_id}: impossible term/segment lengths or positions"
            )
        return info

    def _note(self, reason: str, line: str) -> None:
        self.malformed[reason] += 1
        self.notes.append(line)

    # -- public -----------------------------------------------------------------

    def times_known(self) -> bool:
        """Whether the recordings read have times: frames carry none, the catalog's start
        timestamps give them (``received_at``)."""
        chosen = [
            r for r in self._recordings
            if (r.recording_id == self.recording_id if self.recording_id is not None else r.valid)
        ]  # fmt: skip
        return all(r.start_timestamp > 0 for r in chosen)

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

    def _segment(self, info: RecordingInfo, position: int) -> Path:
        """The segment file holding ``position``: named by its base position, or by its
        index for a catalog of version 0 (Aeron before 1.22)."""
        path = self.directory / info.segment_name(position)
        if not path.is_file() and self.catalog_version == "0.0.0":
            term_base = info.start_position - (info.start_position & (info.term_buffer_length - 1))
            index = (info.segment_base(position) - term_base) // info.segment_file_length
            older = self.directory / f"{info.recording_id}-{index}.rec"
            if older.is_file():
                return older
        return path

    def _segment_bases(self, info: RecordingInfo) -> list[int]:
        """Base positions of the segment files of ``info`` present, in order."""
        term_base = info.start_position - (info.start_position & (info.term_buffer_length - 1))
        bases = []
        for path in self.directory.glob(f"{info.recording_id}-*.rec"):
            suffix = path.stem.split("-", 1)[1]
            if not suffix.isdigit():
                continue
            n = int(suffix)
            if self.catalog_version == "0.0.0" and n < 1 << 20:  # named by index
                n = term_base + n * info.segment_file_length
            bases.append(n)
        return sorted(bases)

    def _frames(self, info: RecordingInfo) -> Iterator[DataFrame]:
        """The frames of one recording. A frame that cannot be genuine (its header does
        not match its position, its length is past the MTU, the recording's stop or its
        term, a PAD frame not at a term's end, a length the next frame does not follow)
        is skipped and counted, and reading goes on at the next genuine frame header
        (the first 32-byte aligned one that matches its position, found by a scan): it
        costs only the messages it carried (the assembler sees the gap). A missing or
        short segment costs what it held; the next one is read."""
        rid = info.recording_id
        position, stop = info.start_position, info.stop_position
        where = f"{self.directory}: recording {rid}"
        while stop == NULL_POSITION or position < stop:
            base = info.segment_base(position)
            path = self._segment(info, position)
            if not path.is_file():
                if stop == NULL_POSITION:
                    self.notes.append(f"{where}: in progress; read up to position {position}")
                    return
                # Go on at the next segment file there is (a stop position far past the
                # files, from a damaged catalog, must not be walked segment by segment).
                later = [b for b in self._segment_bases(info) if b > base]
                lost_to = min(stop, later[0]) if later else stop
                self._note(
                    "missing_segment",
                    f"{where}: segment {path.name} missing; positions {position} to "
                    f"{lost_to} of {stop} lost",
                )
                if not later:
                    return
                position = later[0]
                continue
            try:
                with path.open("rb") as f:
                    size = min(f.seek(0, 2), info.segment_file_length)
                    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            except OSError as error:
                self._note("unreadable_segment", f"{where}: {path.name}: {error.strerror}")
                position = base + info.segment_file_length
                continue
            try:
                walk = _SegmentWalk(info, mm, base, size)
                end_of_data = yield from walk.frames(position - base)
            finally:
                if isinstance(mm, mmap.mmap):
                    mm.close()
            for reason, first_at, count in walk.damage:
                self.malformed[reason] += count
                self._first_note(
                    reason,
                    f"{where}: {path.name}: {reason.replace('_', ' ')} at position "
                    f"{base + first_at}{f' of {stop}' if stop != NULL_POSITION else ''}"
                    f" ({count}x in this segment); read on past it",
                )
            if end_of_data is not None:  # a recording in progress: its writer is there
                self.notes.append(f"{where}: in progress; read up to position {base + end_of_data}")
                return
            segment_end = base + info.segment_file_length
            if base + size < (segment_end if stop == NULL_POSITION else min(stop, segment_end)):
                if stop == NULL_POSITION:
                    self.notes.append(f"{where}: in progress; read up to position {base + size}")
                    return
                self._note(
                    "truncated_segment",
                    f"{where}: {path.name}: truncated segment at position {base + size} "
                    f"of {stop}; positions up to {min(stop, segment_end)} lost",
                )
            position = segment_end

    def _first_note(self, reason: str, line: str) -> None:
        if reason not in self._noted:
            self._noted.add(reason)
            self.notes.append(line)


class _SegmentWalk:
    """The frames of one segment file, checked one by one; damage by kind."""

    def __init__(self, info: RecordingInfo, mm: mmap.mmap | bytes, base: int, size: int) -> None:
        self.info = info
        self.mm = mm
        self.base = base
        self.size = size
        stop = info.stop_position
        self.limit = size if stop == NULL_POSITION else max(0, min(size, stop - base))
        self.mtu = info.mtu_length if info.mtu_length >= 2 * HEADER_LENGTH else 1 << 16
        self.damage: list[tuple[str, int, int]] = []  # (reason, first offset, count)

    def _damaged(self, reason: str, offset: int) -> None:
        for i, (r, first, n) in enumerate(self.damage):
            if r == reason:
                self.damage[i] = (r, first, n + 1)
                return
        self.damage.append((reason, offset, 1))

    def _header(self, offset: int) -> tuple | None:
        if offset + HEADER_LENGTH > self.size:
            return None
        return _FRAME.unpack_from(self.mm, offset)

    def check(self, offset: int, follow: bool = True) -> str | None:
        """Why the frame at ``offset`` cannot be genuine, or None."""
        info, term_length = self.info, self.info.term_buffer_length
        h = self._header(offset)
        if h is None:
            return "truncated_segment"
        flen, _, _, ftype, term_offset, _, _, term_id, _ = h
        if flen <= 0:
            return "zero_tail"
        aligned = align(flen)
        start = position_of(term_id, term_offset, info.initial_term_id, term_length)
        if (
            ftype not in (TYPE_DATA, TYPE_PAD)
            or flen < HEADER_LENGTH
            or start != self.base + offset
            or term_offset + aligned > term_length
        ):
            return "bad_frame"
        if ftype == TYPE_PAD and term_offset + aligned != term_length:
            return "pad_mid_term"  # padding only fills a term's end
        if ftype == TYPE_DATA and flen > self.mtu:
            return "frame_too_long"  # longer than the recording's MTU
        if offset + aligned > self.limit and self.limit < self.size:
            return "frame_too_long"  # past the recording's stop position
        if offset + flen > self.size:
            return "truncated_segment"
        after = offset + aligned
        if follow and after < self.limit:
            # Where the next frame is not where this one says it ends, either that one is
            # damaged or this length is: a genuine frame header inside this one says so.
            why = self.check(after, follow=False)
            if why is not None and not (why == "zero_tail" and self.open):
                for inner in range(offset + HEADER_LENGTH, after, FRAME_ALIGNMENT):
                    if self.check(inner, follow=False) is None:
                        return "bad_frame_length"
        return None

    @property
    def open(self) -> bool:
        return self.info.stop_position == NULL_POSITION

    def resync(self, offset: int) -> int:
        """The next offset after ``offset`` holding a genuine frame (``limit``: none)."""
        nonzero = _NONZERO.search(self.mm, offset + HEADER_LENGTH, self.limit)
        if nonzero is None:
            return self.limit
        at = max(offset + HEADER_LENGTH, nonzero.start() - nonzero.start() % FRAME_ALIGNMENT)
        while at < self.limit:
            if self.check(at) is None:
                return at
            at += FRAME_ALIGNMENT
        return self.limit

    def frames(self, offset: int) -> Generator[DataFrame, None, int | None]:
        """Frames from ``offset``; returns where a recording in progress ends (its zero
        tail), else None."""
        info = self.info
        while offset < self.limit:
            why = self.check(offset)
            if why == "zero_tail" and self.open:
                return offset
            if why == "truncated_segment":  # the file ends here: the reader says so
                return None
            if why is not None:
                if why == "zero_tail":
                    if _NONZERO.search(self.mm, offset, self.limit) is None:
                        self._damaged("zero_tail", offset)  # never written (or flushed)
                        return None
                    why = "zeroed_frame"  # zeros where a frame was, frames after it
                self._damaged(why, offset)
                offset = self.resync(offset)
                continue
            flen, _, flags, ftype, term_offset, _, _, term_id, reserved = _FRAME.unpack_from(
                self.mm, offset
            )
            aligned = align(flen)
            end = self.base + offset + aligned
            if ftype == TYPE_DATA:
                yield DataFrame(
                    info.stream_id, info.session_id, term_id, term_offset, flags,
                    end, received_at(info, end, reserved),
                    bytes(self.mm[offset + HEADER_LENGTH : offset + flen]), reserved,
                )  # fmt: skip
            else:  # PAD: the position moves on to the next term
                yield DataFrame(
                    info.stream_id, info.session_id, term_id, term_offset, flags,
                    end, received_at(info, end), b"", reserved, padding=aligned,
                )  # fmt: skip
            offset += aligned
        return None


_NONZERO = re.compile(rb"[^\x00]")
