"""telepipe captures for damage tests: a good capture written by ``CaptureWriter``, the
byte extent of each of its records, and which messages a damaged byte range touches."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from telepipe.sources.capture import CaptureWriter, list_segments, read_segment
from telepipe.sources.frames import DataFrame, align

MTU_PAYLOAD = 1376


def synth(seed: int, sessions: Iterable[int] = (7, 8), per_session: int = 40) -> list[DataFrame]:
    """Frames of several sessions interleaved as a subscriber gets them: messages of
    0-4000 bytes (so some are fragmented), every payload distinct."""
    rng = random.Random(seed)
    queues: list[list[DataFrame]] = []
    t = 1_767_225_600_000_000_000
    for session in sessions:
        frames, pos = [], 0
        for k in range(per_session):
            size = rng.choice((0, 1, 40, 300, 1376, 1377, 2900, 4000))
            payload = struct.pack("<ii", session, k) + rng.randbytes(max(size - 8, 0))
            step = MTU_PAYLOAD
            chunks = [payload[i : i + step] for i in range(0, len(payload), step)] or [b""]
            for j, chunk in enumerate(chunks):
                flags = (0x80 if j == 0 else 0) | (0x40 if j == len(chunks) - 1 else 0)
                start, pos = pos, pos + align(len(chunk) + 32)
                frames.append(DataFrame(77, session, 3, start, flags, pos, 0, chunk, 0))
        queues.append(frames)
    out: list[DataFrame] = []
    while any(queues):
        q = rng.choice([q for q in queues if q])
        for _ in range(rng.randint(1, 4)):
            if q:
                t += rng.choice((0, 1_000, 250_000))
                f = q.pop(0)
                out.append(DataFrame(f.stream_id, f.session_id, f.term_id, f.term_offset,
                                     f.flags, f.position, t, f.payload, t))  # fmt: skip
    return out


def write_capture(
    directory: Path,
    frames: list[DataFrame],
    ends: bool = True,
    segment_bytes: int = 24_000,
    index_every_bytes: int = 4_000,
) -> None:
    """The frames as the recorder writes them (PAD frames are not recorded: subscribers
    never see them), then each session's end-of-stream record."""
    with CaptureWriter(
        directory, segment_bytes, False, index_every_bytes, channel="aeron:udp", stream_id=77
    ) as w:
        last: dict[int, DataFrame] = {}
        for f in frames:
            if f.padding:
                continue
            w.append(
                f.payload, received_ns=f.received_ns, position=f.position, flags=f.flags,
                term_offset=f.term_offset, session_id=f.session_id, stream_id=f.stream_id,
                term_id=f.term_id, reserved_value=f.reserved_value,
            )  # fmt: skip
            last[f.session_id] = f
        if ends:
            for session, f in last.items():
                w.append_end(
                    received_ns=f.received_ns, position=f.position, session_id=session,
                    stream_id=f.stream_id,
                )  # fmt: skip


@dataclass(frozen=True)
class RecordAt:
    path: Path
    start: int  # file offset
    end: int
    session_id: int
    position: int  # the frame's end position (0: an end-of-stream record)
    flags: int
    eos: bool


def records(directory: Path) -> list[RecordAt]:
    """Each record of a good capture, in file order (struct only)."""
    out = []
    for base, path in list_segments(directory):
        seg = read_segment(path, base)
        assert seg is not None
        data, at = path.read_bytes(), seg.header_length
        while at < len(data):
            length = struct.unpack_from("<I", data, at)[0]
            position, flen, flags = (
                struct.unpack_from("<q", data, at + 16)[0],
                *struct.unpack_from("<iBB", data, at + 32)[::2],
            )
            session = struct.unpack_from("<i", data, at + 44)[0]
            out.append(RecordAt(path, at, at + length, session, position, flags, flen == 0))
            at += length
    return out


def messages_of(recs: list[RecordAt]) -> list[list[int]]:
    """For each message in delivery order: the indexes of the records holding it."""
    out: list[list[int]] = []
    open_: dict[int, list[int]] = {}
    for i, r in enumerate(recs):
        if r.eos:
            continue
        if r.flags & 0x80:
            open_[r.session_id] = []
        open_[r.session_id].append(i)
        if r.flags & 0x40:
            out.append(open_.pop(r.session_id))
    return out
