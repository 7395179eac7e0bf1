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
    """The valid prefix of the index (non-negative, strictly increasing offsets)."""
    try:
        raw = (directory / INDEX_NAME).read_bytes()
    except OSError:
        return np.zeros(0, INDEX_DTYPE)
    entries = np.frombuffer(raw[: len(raw) - len(raw) % 32], INDEX_DTYPE)
    bad = np.flatnonzero(np.diff(entries["offset"]) <= 0)
    if len(entries) and entries["offset"][0] < 0:
        return entries[:0]
    return entries[: bad[0] + 1] if len(bad) else entries


@dataclass
class Damage:
    """Where a scan found damage: ``malformed[reason]`` counts, ``torn_tail`` bytes, notes."""

    notes: list[str] = field(default_factory=list)
    malformed: dict[str, int] = field(default_factory=dict)
    torn_tail: int = 0


def _damaged(sink: Any, reason: str, note: str) -> None:
    sink.malformed[reason] = sink.malformed.get(reason, 0) + 1
    sink.notes.append(note)


def _at_record(directory: Path, offset: int, headers: dict[int, Segment | None]) -> bool:
    """Whether a valid record starts at logical ``offset``."""
    listing = list_segments(directory)
    i = int(np.searchsorted([b for b, _ in listing], offset, "right")) - 1
    seg = _header(headers, *listing[i]) if i >= 0 else None
    if seg is None:
        return False
    with open(seg.path, "rb") as f:
        f.seek(seg.header_length + offset - seg.base)
        head = f.read(8)
        data = head + f.read(_PREFIX.unpack(head)[0] - 8) if len(head) == 8 else head
    return check_record(data, 0, len(data)) > 0


def _header(headers: dict[int, Segment | None], base: int, path: Path) -> Segment | None:
    if base not in headers:  # headers never change once a segment exists (tmp + rename)
        headers[base] = read_segment(path, base)
    return headers[base]


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
    while i < len(listing):
        base, path = listing[i]
        seg = _header(headers, base, path)
        if seg is None:
            _damaged(sink, "header", f"{path.name}: bad segment header, skipped")
            i += 1
            continue
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
