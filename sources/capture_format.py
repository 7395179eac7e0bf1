"""The telepipe capture format on disk: segments, records, index, and the scan that checks them.

See ``telepipe.sources.capture`` for the layout; this module holds the byte-level
parts the writer and the reader share.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"TPCAPv1\0"
VERSION = 1
MARKER = b"TPCR"
SUFFIX = ".tpcap"
INDEX_NAME = "index.tpidx"
LOCK_NAME = "writer.lock"
_SEGMENT_RE = re.compile(r"^(\d{20})\.tpcap$")
_SEG_FIXED = struct.Struct("<8sHHIqqiH")  # up to and including the channel length
_RECORD = struct.Struct("<IIqqi4siBBhiiiiq")
_PREFIX = struct.Struct("<II")
_BODY = struct.Struct("<qqi4siBBhiiiiq")
_INDEX = struct.Struct("<qqqiI")
RECORD_HEADER = _RECORD.size
assert RECORD_HEADER == 64 and _INDEX.size == 32 and _SEG_FIXED.size == 38
MAX_RECORD = 1 << 26
INDEX_DTYPE = np.dtype(
    [("offset", "<i8"), ("position", "<i8"), ("received_ns", "<i8"),
     ("session_id", "<i4"), ("count", "<u4")]
)  # fmt: skip
_CHUNK = 1 << 20
INCOMPLETE, BAD_LENGTH, BAD_CRC = -1, -2, -3
_REASONS = {INCOMPLETE: "truncated", BAD_LENGTH: "length", BAD_CRC: "crc"}
Record = tuple[int, tuple[Any, ...], bytes]  # logical offset, _RECORD fields, payload


def segment_name(base: int) -> str:
    return f"{base:020d}{SUFFIX}"


@dataclass(frozen=True)
class Segment:
    path: Path
    base: int
    header_length: int
    created_ns: int
    stream_id: int
    channel: str
    # The header did not check out (its CRC): read from the first whole record found in
    # the file; ``header_length`` is where that record starts.
    damaged: bool = False

    def record_bytes(self) -> int:
        return max(0, self.path.stat().st_size - self.header_length)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.path.name, "base_offset": self.base, "bytes": self.record_bytes(),
            "stream_id": self.stream_id, "channel": self.channel, "created_ns": self.created_ns,
        }  # fmt: skip


def _segment_header(base: int, stream_id: int, channel: str) -> bytes:
    raw = channel.encode()[:65535]
    size = _SEG_FIXED.size + len(raw) + 4
    head = _SEG_FIXED.pack(MAGIC, VERSION, size, 0, time.time_ns(), base, stream_id, len(raw))
    return head + raw + struct.pack("<I", zlib.crc32(head + raw))


def read_segment(path: Path, base: int) -> Segment | None:
    """The header of segment ``path``, or None if it is not a valid segment file."""
    try:
        with open(path, "rb") as f:
            data = f.read(_SEG_FIXED.size + 65535 + 4)
        magic, version, size, _, created, hbase, stream_id, n = _SEG_FIXED.unpack_from(data)
    except (OSError, struct.error):
        return None
    if (magic, version, size, hbase) != (MAGIC, VERSION, _SEG_FIXED.size + n + 4, base):
        return None
    if len(data) < size or data[size - 4 : size] != struct.pack("<I", zlib.crc32(data[: size - 4])):
        return None
    channel = data[_SEG_FIXED.size : size - 4].decode(errors="replace")
    return Segment(path, base, size, created, stream_id, channel)


def salvage_segment(path: Path, base: int) -> Segment | None:
    """A segment whose header is damaged, read from its first whole record (None: the
    file holds none). Its stream id is that record's; its channel is unknown."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    first = resync(data, -1, len(data))
    if first is None:
        return None
    stream_id = _RECORD.unpack_from(data, first)[12]
    return Segment(path, base, first, 0, stream_id, "", damaged=True)


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """(base offset, path) of every segment file, in order."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if m := _SEGMENT_RE.match(entry.name):
                found.append((int(m.group(1)), Path(entry.path)))
    return sorted(found)


def check_record(buf: Any, pos: int, end: int) -> int:
    """Length of the valid record at ``buf[pos:end]``, or INCOMPLETE/BAD_LENGTH/BAD_CRC."""
    if end - pos < 8:
        return INCOMPLETE
    length, crc = _PREFIX.unpack_from(buf, pos)
    if length < RECORD_HEADER or length > MAX_RECORD:
        return BAD_LENGTH
    if pos + length > end:
        return INCOMPLETE
    if zlib.crc32(memoryview(buf)[pos + 8 : pos + length]) != crc:
        return BAD_CRC
    return length


def resync(buf: Any, pos: int, end: int) -> int | None:
    """Start of the first valid whole record after ``pos`` in ``buf[:end]``, or None."""
    start = pos + 1
    while (j := buf.find(MARKER, start + 28, end)) >= 0:
        if check_record(buf, j - 28, end) > 0:
            return j - 28
        start = j - 27
    return None


def read_index(directory: Path) -> np.ndarray:
    """Every whole entry of the index, as written (``index_matches`` says if it holds)."""
    try:
        raw = (directory / INDEX_NAME).read_bytes()
    except OSError:
        return np.zeros(0, INDEX_DTYPE)
    return np.frombuffer(raw[: len(raw) - len(raw) % 32], INDEX_DTYPE)


@dataclass
class Damage:
    """Where a scan found damage: ``malformed[reason]`` counts, ``torn_tail`` bytes, notes."""

    notes: list[str] = field(default_factory=list)
    malformed: dict[str, int] = field(default_factory=dict)
    torn_tail: int = 0


def _damaged(sink: Any, reason: str, note: str) -> None:
    sink.malformed[reason] = sink.malformed.get(reason, 0) + 1
    sink.notes.append(note)


def _record_at(
    listing: list[tuple[int, Path]], offset: int, headers: dict[int, Segment | None]
) -> tuple[Any, ...] | None:
    """The header fields of the valid record at logical ``offset`` (None: no such record)."""
    i = int(np.searchsorted([b for b, _ in listing], offset, "right")) - 1
    seg = _header(headers, *listing[i]) if i >= 0 else None
    if seg is None:
        return None
    try:
        with open(seg.path, "rb") as f:
            f.seek(seg.header_length + offset - seg.base)
            head = f.read(8)
            if len(head) < 8 or _PREFIX.unpack(head)[0] > MAX_RECORD:
                return None
            data = head + f.read(_PREFIX.unpack(head)[0] - 8)
    except (OSError, ValueError):
        return None
    return _RECORD.unpack_from(data) if check_record(data, 0, len(data)) > 0 else None


def _at_record(directory: Path, offset: int, headers: dict[int, Segment | None]) -> bool:
    """Whether a valid record starts at logical ``offset``."""
    return _record_at(list_segments(directory), offset, headers) is not None


def index_matches(directory: Path, entries: np.ndarray, headers: dict[int, Segment | None]) -> bool:
    """Whether the index entries are in strictly increasing offset order and each points
    at a valid record with the entry's position, time and session. The index has no
    checksum of its own: a seek that trusted a damaged entry (or an index missing
    entries from its middle: a session's first record) could start past good records."""
    if not len(entries):
        return True
    offsets = entries["offset"]
    if offsets[0] < 0 or (np.diff(offsets) <= 0).any():
        return False
    listing = list_segments(directory)
    for offset, position, received_ns, session, _ in entries.tolist():
        fields = _record_at(listing, offset, headers)
        if fields is None or (fields[3], fields[2], fields[11]) != (position, received_ns, session):
            return False
    return True


def _header(headers: dict[int, Segment | None], base: int, path: Path) -> Segment | None:
    if base not in headers:  # headers never change once a segment exists (tmp + rename)
        headers[base] = read_segment(path, base) or salvage_segment(path, base)
    return headers[base]


def _missing(sink: Any, seg: Segment, following: tuple[int, Path]) -> None:
    """Records missing between a segment and the next (cut short, or a segment gone):
    the next segment's name says where its records start."""
    with contextlib.suppress(OSError):
        end = seg.base + seg.path.stat().st_size - seg.header_length
        if not seg.damaged and end < following[0]:
            _damaged(sink, "missing", f"{following[1].name}: the {following[0] - end} bytes "
                     f"of records before it are missing")  # fmt: skip


def scan(
    directory: Path,
    offset: int,
    sink: Any,
    headers: dict[int, Segment | None],
    follow: bool = False,
    stop: threading.Event | None = None,
    idle_timeout_s: float | None = None,
) -> Iterator[Record]:
    """Records from logical ``offset`` (a record start) on, across segments; damage goes
    to ``sink`` (``Damage`` or a reader). ``follow``: wait at the end for more."""
    listing = list_segments(directory)
    i = max(0, int(np.searchsorted([b for b, _ in listing], offset, "right")) - 1)
    last_new, delay, draining = time.monotonic(), 0.001, False
    unpack_prefix, unpack, crc32 = _PREFIX.unpack_from, _RECORD.unpack_from, zlib.crc32
    if (
        listing and listing[0][0] > 0 and offset <= listing[0][0]
    ):  # captures start at logical offset 0
        _damaged(sink, "missing", f"{listing[0][1].name}: the {listing[0][0]} bytes of records "
                 "before it are missing")  # fmt: skip
    while i < len(listing):
        base, path = listing[i]
        seg = _header(headers, base, path)
        if seg is None:
            _damaged(sink, "header", f"{path.name}: bad segment header and no record, skipped")
            i += 1
            continue
        if seg.damaged:
            _damaged(sink, "header", f"{path.name}: bad segment header, read from byte "
                     f"{seg.header_length} (its first whole record)")  # fmt: skip
        at = seg.header_length + max(0, offset - base)  # file offset of buf[0]
        shift = base - seg.header_length  # logical offset = shift + file offset
        buf, pos, rechecked = b"", 0, False
        with open(path, "rb") as f:
            f.seek(at)
            while True:
                end = len(buf)
                if end - pos >= RECORD_HEADER:  # the fast path: check_record inlined
                    length, crc = unpack_prefix(buf, pos)
                    if (
                        RECORD_HEADER <= length <= MAX_RECORD
                        and pos + length <= end
                        and crc32(memoryview(buf)[pos + 8 : pos + length]) == crc
                    ):
                        yield shift + at + pos, unpack(buf, pos), buf[pos + 64 : pos + length]
                        pos += length
                        continue
                n = check_record(buf, pos, end)
                want = -1 if n != INCOMPLETE else _CHUNK  # damage: resync needs all the rest
                if n == INCOMPLETE and end - pos >= 8:
                    want = max(_CHUNK, unpack_prefix(buf, pos)[0] - (end - pos))
                if more := f.read(want):
                    buf, at, pos = buf[pos:] + more, at + pos, 0
                    last_new, delay = time.monotonic(), 0.001
                    continue
                where = f"{path.name} byte {at + pos}"
                if pos < end and (j := resync(buf, pos, end)) is not None:
                    reason = "length" if n == INCOMPLETE else _REASONS[n]  # valid records follow
                    _damaged(sink, reason, f"{where}: {reason} damage, skipped {j - pos} bytes")
                    pos = j
                    continue
                if i + 1 >= len(listing):
                    listing = list_segments(directory)
                if i + 1 < len(listing):  # the writer finished this segment: read once more
                    if not rechecked:  # for what it wrote between our read and its roll
                        f.seek(at + pos)
                        buf, at, pos, rechecked = b"", at + pos, 0, True
                        continue
                    if pos < end:
                        _damaged(sink, _REASONS[n], f"{where}: {_REASONS[n]} damage at segment end")
                    else:
                        _missing(sink, seg, listing[i + 1])
                    i += 1
                    break
                timed_out = idle_timeout_s is not None and (
                    time.monotonic() - last_new > idle_timeout_s
                )
                ending = not follow or timed_out or (stop is not None and stop.is_set())
                if ending and (not follow or draining):
                    if pos < end and (not follow or timed_out):
                        sink.torn_tail += end - pos
                        sink.notes.append(f"{where}: torn last record ({end - pos} bytes)")
                    return
                draining = ending  # told to stop: one more pass for what came meanwhile
                if not ending:
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
                f.seek(at + pos)  # re-read a partial record from its start
                buf, at, pos = b"", at + pos, 0
