"""telepipe captures: raw Aeron frames in append-only segment files, with a sparse index.

A capture directory holds segments ``<base>.tpcap`` (``base``: 20 decimal digits,
the logical offset of the segment's first record), ``index.tpidx`` and the
writer's ``writer.lock``. The *logical byte stream* is every segment's records
concatenated (file headers excluded); offsets below are in it unless said.

Segment file header (little-endian; written to a ``.tmp`` file then renamed, so
a segment never appears without its whole header)::

    0   8s   magic b"TPCAPv1\\0"
    8   u16  version (1)
    10  u16  header_length (bytes from the start of the file to the first record)
    12  u32  reserved (0)
    16  i64  created_ns (wall clock)
    24  i64  base_offset (as in the file name)
    32  i32  stream_id recorded
    36  u16  n, then n bytes: the channel, UTF-8
    38+n u32 CRC-32 of bytes [0, 38+n)

Record (little-endian, 64-byte header, then the fragment's payload)::

    0   u32  record_length (64 + payload length)
    4   u32  CRC-32 (zlib) of bytes [8, record_length)
    8   i64  received_ns (wall clock at receipt, clamped non-decreasing per capture)
    16  i64  position (Aeron Header.position: stream position just past the frame)
    24  i32  initial_term_id
    28  4s   marker b"TPCR" (lets a reader resync after damage)
    32  32 bytes: the Aeron data header fields as delivered (DataHeaderFlyweight layout):
        i32 frame_length, u8 version, u8 flags, i16 type, i32 term_offset,
        i32 session_id, i32 stream_id, i32 term_id, i64 reserved_value
    64  payload

A session's end is recorded as Aeron sends it, an end-of-stream heartbeat: a record
with frame_length 0, flags BEGIN|END|EOS (0xE0), type DATA, no payload, at the
position where the session ended (term_id and term_offset 0: the recorder does not
know them), written after the session's last fragment. It is the only heartbeat a
capture holds (recorders since 0.2.0 write it; older captures have none and read as
before). Readers before it take such a record for a repeated fragment (counted as
a gap), nothing else.

Index entry, 32 bytes, appended after the records it points to are flushed: at
each segment's first record, at the first record of each new session, and
whenever ``index_every_bytes`` of records passed since the previous entry::

    0 i64 logical offset of the record   8 i64 its position   16 i64 its received_ns
    24 i32 its session_id                28 u32 records since the previous entry

Crash safety: a writer killed mid-record leaves a torn last record; reopening the
directory for append cuts it (truncate) and rebuilds the index past the last
complete segment. Readers treat damage at the very end as a torn tail and damage
followed by valid records as corruption: counted, skipped, never raised.
"""

from __future__ import annotations

import fcntl
import os
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from telepipe.errors import SourceError
from telepipe.sources.capture_format import (
    _BODY,
    _INDEX,
    _PREFIX,
    _SEG_FIXED,
    INDEX_NAME,
    LOCK_NAME,
    MARKER,
    MAX_RECORD,
    RECORD_HEADER,
    SUFFIX,
    Damage,
    Segment,
    _at_record,
    _header,
    _segment_header,
    index_matches,
    list_segments,
    read_index,
    read_segment,
    scan,
    segment_name,
)
from telepipe.sources.frames import EOS_FLAG, TYPE_DATA, UNFRAGMENTED, DataFrame


@dataclass
class Recovery:
    """What reopening a capture for append found and repaired."""

    torn_bytes: int = 0
    index_dropped: int = 0
    index_rebuilt: int = 0
    malformed: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class WriterCounters:
    records: int = 0
    payload_bytes: int = 0
    record_bytes: int = 0
    segments_created: int = 0


class CaptureWriter:
    """Appends frames to a capture directory (one writer per directory, by file lock).

    Reopening a directory recovers first (``recovery``): cuts a torn last record
    and rebuilds the index past the last complete segment; then it appends.
    ``buffer_bytes`` is the file buffer: a record may reach the file in pieces.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        segment_bytes: int = 64 << 20,
        fsync: bool = False,
        index_every_bytes: int = 1 << 20,
        *,
        channel: str = "",
        stream_id: int = 0,
        buffer_bytes: int = 1 << 20,
    ) -> None:
        if min(segment_bytes, index_every_bytes, buffer_bytes) < 1:
            raise ValueError("segment_bytes, index_every_bytes and buffer_bytes must be >= 1")
        self.directory, self.fsync = Path(directory), fsync
        self.segment_bytes, self.index_every_bytes = segment_bytes, index_every_bytes
        self.channel, self.stream_id, self.buffer_bytes = channel, stream_id, buffer_bytes
        self.counters = WriterCounters()
        self._file: BinaryIO | None = None
        self._seg_size = self._offset = self._since_index = self._count_since = self._last_ns = 0
        self._sessions: set[int] = set()
        self._pending: list[bytes] = []
        self.dirty = False  # anything appended since the last flush
        self._lock = self._open_dir()
        try:
            self.recovery = self._recover()
            self._index = open(self.directory / INDEX_NAME, "ab", buffering=0)  # noqa: SIM115
            if not list_segments(self.directory):  # an empty capture is still a capture
                self._roll()
        except BaseException:
            self._lock.close()
            raise

    def _open_dir(self) -> BinaryIO:
        d = self.directory
        try:
            d.mkdir(parents=True, exist_ok=True)
            ours = (INDEX_NAME, LOCK_NAME)
            if not list_segments(d) and any(
                p.name not in ours and p.suffix != ".tmp" for p in d.iterdir()
            ):
                raise SourceError(f"{d}: directory is not empty and holds no telepipe capture")
            lock = open(d / LOCK_NAME, "wb")  # noqa: SIM115
        except OSError as error:
            raise SourceError(f"cannot open capture directory {d}: {error}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise SourceError(f"{d}: another recorder is writing this capture") from None
        return lock

    def _recover(self) -> Recovery:
        rec, d = Recovery(), self.directory
        for tmp in d.glob("*.tmp"):
            tmp.unlink()
        segments = list_segments(d)
        while segments and segments[-1][1].stat().st_size < _SEG_FIXED.size:
            rec.notes.append(f"removed {segments[-1][1].name}: shorter than a segment header")
            segments.pop()[1].unlink()
        entries = read_index(d)
        rec.index_dropped = len(entries)
        if not segments:
            (d / INDEX_NAME).write_bytes(b"")
            return rec
        last = read_segment(segments[-1][1], segments[-1][0])
        if last is None:
            raise SourceError(f"{segments[-1][1]}: not a telepipe capture segment (bad header)")
        headers: dict[int, Segment | None] = {}
        kept = entries[: int((entries["offset"] < last.base).sum())]
        if not index_matches(d, kept, headers):
            kept = kept[:0]  # the index does not match the segments: rebuild it all
        self._sessions = set(kept["session_id"].tolist())
        start = int(kept["offset"][-1]) if len(kept) else segments[0][0]
        bases, first, new, damage = {b for b, _ in segments}, len(kept) > 0, [], Damage()
        for offset, head, payload in scan(d, start, damage, headers):
            session = head[11]
            if not first and (
                offset in bases
                or session not in self._sessions
                or self._since_index >= self.index_every_bytes
            ):
                new.append(_INDEX.pack(offset, head[3], head[2], session, self._count_since))
                self._since_index = self._count_since = 0
            first = False
            self._sessions.add(session)
            self._since_index += RECORD_HEADER + len(payload)
            self._count_since += 1
            self._last_ns = max(self._last_ns, head[2])
        rec.malformed, rec.notes = sum(damage.malformed.values()), rec.notes + damage.notes
        if damage.torn_tail:
            rec.torn_bytes = damage.torn_tail
            os.truncate(last.path, last.path.stat().st_size - damage.torn_tail)
            rec.notes.append(f"cut the torn last record ({damage.torn_tail} bytes)")
        rec.index_dropped, rec.index_rebuilt = len(entries) - len(kept), len(new)
        with open(d / INDEX_NAME, "r+b" if (d / INDEX_NAME).exists() else "wb") as f:
            f.truncate(len(kept) * 32)
            f.seek(len(kept) * 32)
            f.write(b"".join(new))
        self._seg_size = last.record_bytes()
        self._offset = last.base + self._seg_size
        if (last.stream_id, last.channel) == (self.stream_id, self.channel):
            self._file = open(last.path, "ab", buffering=self.buffer_bytes)  # noqa: SIM115
        return rec

    def append(
        self,
        payload: Any,
        *,
        received_ns: int,
        position: int,
        initial_term_id: int = 0,
        frame_length: int | None = None,
        flags: int = 0xC0,
        term_offset: int = 0,
        session_id: int = 0,
        stream_id: int = 0,
        term_id: int = 0,
        reserved_value: int = 0,
        version: int = 0,
        frame_type: int = TYPE_DATA,
    ) -> None:
        """Append one frame (``payload``: any bytes-like object, copied before return)."""
        size = len(payload) if isinstance(payload, bytes) else memoryview(payload).nbytes
        length = RECORD_HEADER + size
        if length > MAX_RECORD:
            raise ValueError(f"frame of {size} bytes is larger than a capture record can hold")
        if self._file is None or (self._seg_size and self._seg_size + length > self.segment_bytes):
            self._roll()
        received_ns = max(received_ns, self._last_ns)
        body = _BODY.pack(
            received_ns, position, initial_term_id, MARKER,
            size + 32 if frame_length is None else frame_length, version, flags, frame_type,
            term_offset, session_id, stream_id, term_id, reserved_value,
        )  # fmt: skip
        if (
            not self._seg_size
            or session_id not in self._sessions
            or (self._since_index >= self.index_every_bytes)
        ):
            entry = _INDEX.pack(self._offset, position, received_ns, session_id, self._count_since)
            self._pending.append(entry)
            self._sessions.add(session_id)
            self._since_index = self._count_since = 0
        f = self._file
        assert f is not None
        f.write(_PREFIX.pack(length, zlib.crc32(payload, zlib.crc32(body))) + body)
        f.write(payload)
        self._offset += length
        self._seg_size += length
        self._since_index += length
        self._count_since += 1
        self._last_ns = received_ns
        self.dirty = True
        c = self.counters
        c.records, c.payload_bytes, c.record_bytes = (
            c.records + 1,
            c.payload_bytes + size,
            c.record_bytes + length,
        )

    def append_end(
        self, *, received_ns: int, position: int, session_id: int, stream_id: int
    ) -> None:
        """Record that a session ended at ``position`` (after its last fragment): an
        Aeron end-of-stream heartbeat (frame_length 0, flags BEGIN|END|EOS, no payload)."""
        self.append(
            b"",
            received_ns=received_ns,
            position=position,
            frame_length=0,
            flags=UNFRAGMENTED | EOS_FLAG,
            session_id=session_id,
            stream_id=stream_id,
        )

    def flush(self) -> None:
        """Make everything appended visible to readers (and durable if ``fsync``)."""
        self.dirty = False
        if self._file is not None:
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())
        if self._pending:  # index entries only after the records they point to
            self._index.write(b"".join(self._pending))
            self._pending.clear()
            if self.fsync:
                os.fsync(self._index.fileno())

    def _roll(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
        path = self.directory / segment_name(self._offset)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(_segment_header(self._offset, self.stream_id, self.channel))
            if self.fsync:
                os.fsync(f.fileno())
        os.rename(tmp, path)
        if self.fsync:
            fd = os.open(self.directory, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        self._file = open(path, "ab", buffering=self.buffer_bytes)  # noqa: SIM115
        self._seg_size = 0
        self.counters.segments_created += 1

    def segments(self) -> int:
        return len(list_segments(self.directory))

    def close(self) -> None:
        if self._lock.closed:
            return
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
        self._index.close()
        self._lock.close()

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CaptureReader:
    """Reads a capture (possibly while a recorder still writes it) as ``DataFrame``s.

    Damage never raises: damage at the very end of the last segment is a torn
    tail (``torn_tail``: bytes ignored), damage followed by valid records is
    counted in ``malformed[reason]`` (crc, length, truncated, header) and skipped;
    ``notes`` says where.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        d = self.directory = Path(directory)
        if not d.is_dir():
            what = "does not exist" if not d.exists() else "is not a directory"
            raise SourceError(f"capture directory {d} {what}")
        segments = list_segments(d)
        if not segments:
            raise SourceError(f"{d}: not a telepipe capture (no *{SUFFIX} segments)")
        self.notes: list[str] = []
        self.malformed: dict[str, int] = {}
        self.torn_tail = 0
        self._headers: dict[int, Segment | None] = {}
        # A damaged segment header costs no record (read from the first whole record);
        # refused only when no segment holds a header or a record.
        if read_segment(segments[0][1], segments[0][0]) is None and not any(
            _header(self._headers, b, p) for b, p in segments
        ):
            raise SourceError(f"{d}: not a telepipe capture ({segments[0][1].name}: bad header)")

    def segments(self) -> list[Segment]:
        found = (_header(self._headers, b, p) for b, p in list_segments(self.directory))
        return [s for s in found if s is not None]

    def _index(self, segments: list[Segment], notes: list[str] | None = None) -> np.ndarray:
        """The index entries, if every one matches its record; none (scan instead) if not:
        a damaged index must never hide a good record."""
        entries = read_index(self.directory)
        end = segments[-1].base + segments[-1].record_bytes() if segments else 0
        entries = entries[: int((entries["offset"] < end).sum())]  # (a torn capture)
        if index_matches(self.directory, entries, self._headers):
            return entries
        (self.notes if notes is None else notes).append(
            f"{self.directory / INDEX_NAME}: does not match the records (damaged?): "
            "not used, the records are scanned"
        )
        return entries[:0]

    def seek_offset(
        self,
        start_position: int | None = None,
        start_time_ns: int | None = None,
        session_id: int | None = None,
    ) -> int:
        """The logical offset where a read with these arguments starts scanning (index lookup)."""
        listing = list_segments(self.directory)
        offset = listing[0][0] if listing else 0  # (its header may be damaged)
        if start_position is None and start_time_ns is None:
            return offset
        entries = self._index(self.segments())
        if not len(entries):
            return offset
        times = entries["received_ns"]
        if start_time_ns is not None and np.all(times[1:] >= times[:-1]):
            k = int(np.searchsorted(times, start_time_ns, "left")) - 1
            offset = max(offset, int(entries["offset"][k])) if k >= 0 else offset
        if start_position is not None:
            sessions = np.unique(entries["session_id"]) if session_id is None else [session_id]
            starts = []
            for s in sessions:
                e = entries[entries["session_id"] == s]  # e[0]: the session's first record
                if not len(e):  # a session first seen after the last entry
                    starts.append(int(entries["offset"][-1]))
                    continue
                p = e["position"]
                k = int(np.searchsorted(p, start_position, "right")) - 1
                starts.append(int(e["offset"][max(k, 0) if np.all(p[1:] >= p[:-1]) else 0]))
            offset = max(offset, min(starts))
        return offset

    def frames(
        self,
        start_position: int | None = None,
        start_time_ns: int | None = None,
        follow: bool = False,
        stop: threading.Event | None = None,
        idle_timeout_s: float | None = None,
        session_id: int | None = None,
    ) -> Iterator[DataFrame]:
        """Frames in record order from the first one with ``position > start_position`` (of
        ``session_id`` if given) and ``received_ns >= start_time_ns``, then all after it.

        ``follow``: at the end, wait for more (new bytes, new segments) until ``stop``
        is set or nothing new came for ``idle_timeout_s``. A frame that starts the next
        term after a short previous one is preceded by a synthesized PAD frame
        (``padding`` > 0): Aeron subscribers never see PADs, so the recorder could not.
        A session's end-of-stream record is a frame without payload, flags with EOS.
        """
        offset = self.seek_offset(start_position, start_time_ns, session_id)
        first = list_segments(self.directory)[0][0]
        if offset > first and not _at_record(self.directory, offset, self._headers):
            self.notes.append(f"index entry {offset} is not a record start: reading from 0")
            offset = first
        matching = start_position is None and start_time_ns is None
        records = scan(self.directory, offset, self, self._headers, follow, stop, idle_timeout_s)
        last: dict[tuple[int, int], tuple[int, int, int]] = {}  # -> position, term id, offset
        for _, head, payload in records:
            if not matching:
                if start_position is not None and (
                    head[3] <= start_position or (session_id is not None and head[11] != session_id)
                ):
                    continue
                if start_time_ns is not None and head[2] < start_time_ns:
                    continue
                matching = True
            if head[6] == 0:  # a heartbeat: a session's end-of-stream (EOS flag), no data
                yield DataFrame(
                    head[12], head[11], head[13], head[10], head[8], head[3], head[2], b"", head[14]
                )
                continue
            key, aligned = (head[12], head[11]), (len(payload) + 63) & ~31
            prev = last.get(key)
            last[key] = (head[3], head[13], head[10] + aligned)
            # Aeron does not deliver PAD frames: a frame at the start of the next term
            # after a short previous one means the rest of that term was padding.
            if prev and head[10] == 0 and (head[13] - prev[1]) & 0xFFFFFFFF == 1:
                pad = head[3] - aligned - prev[0]
                if pad > 0:
                    yield DataFrame(
                        head[12], head[11], prev[1], prev[2], UNFRAGMENTED, prev[0] + pad,
                        head[2], b"", 0, padding=pad,
                    )  # fmt: skip
            yield DataFrame(
                head[12], head[11], head[13], head[10], head[8], head[3], head[2], payload, head[14]
            )

    def unreadable(self) -> dict[str, int]:
        """Beyond ``malformed``: the bytes of a torn last record (none: empty)."""
        return {"torn_tail_bytes": self.torn_tail} if self.torn_tail else {}

    def stop(self) -> None:
        """Nothing waits: ``frames(follow=True, stop=...)`` takes its own stop flag."""

    def describe(self) -> dict[str, Any]:
        """A summary from one scan of the records (the index has no checksum: its
        counts are not trusted)."""
        segments = self.segments()
        damage = Damage()
        entries = self._index(segments, damage.notes)
        listing = list_segments(self.directory)
        records, first_ns, last_ns = 0, None, None
        sessions: set[int] = set()
        streams = {s.stream_id for s in segments if not s.damaged}
        for _, head, _ in scan(self.directory, listing[0][0], damage, self._headers):
            records, last_ns = records + 1, head[2]
            first_ns = head[2] if first_ns is None else first_ns
            sessions.add(head[11])
            streams.add(head[12])
        return {
            "directory": str(self.directory),
            "segments": [s.summary() for s in segments],
            "bytes": sum(s.record_bytes() for s in segments),
            "records": records,
            "first_received_ns": first_ns,
            "last_received_ns": last_ns,
            "streams": sorted(streams),
            "sessions": sorted(sessions),
            "index_entries": len(entries),
            "torn_tail": damage.torn_tail,
            "malformed": damage.malformed,
            "notes": damage.notes,
        }
