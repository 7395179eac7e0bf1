"""``telepipe inspect PATH``: what a recorded input holds, without running a pipeline.

Streams and sessions with message and byte counts, position and time ranges,
gaps, malformed frames, and the reader's notes (torn tails, missing SETUP...).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from telepipe.sources.frames import FrameAssembler
from telepipe.sources.replay import input_kind, open_input


@dataclass
class StreamReport:
    stream_id: int
    session_id: int
    messages: int = 0
    bytes: int = 0
    first_position: int | None = None
    last_position: int | None = None
    first_ns: int | None = None
    last_ns: int | None = None
    gaps: int = 0


@dataclass
class InspectReport:
    path: str
    kind: str
    frames: int = 0
    messages: int = 0
    bytes: int = 0
    dropped_fragments: int = 0
    out_of_place: int = 0
    reordered: int = 0
    gaps: list[str] = field(default_factory=list)
    malformed: dict[str, int] = field(default_factory=dict)
    # What else could not be read, named as a replay's input_damage names it (a capture's
    # torn tail bytes, a pcap's packets of unsupported link types).
    unreadable: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    streams: list[StreamReport] = field(default_factory=list)
    details: dict[str, object] = field(default_factory=dict)


def build_report(path: str) -> InspectReport:
    kind = input_kind(path)
    reader = open_input(path)
    assembler = FrameAssembler()
    streams: dict[tuple[int, int], StreamReport] = {}
    for message in assembler.assemble(reader.frames()):
        key = (message.stream_id, message.session_id)
        s = streams.get(key) or streams.setdefault(key, StreamReport(*key))
        s.messages += 1
        s.bytes += len(message.payload)
        if s.first_position is None:
            s.first_position, s.first_ns = message.position, message.received_ns
        s.last_position, s.last_ns = message.position, message.received_ns
    c = assembler.counters
    for gap in c.gaps:
        key = (gap.stream_id, gap.session_id)
        if key in streams:
            streams[key].gaps += 1
    return InspectReport(
        path=str(path),
        kind=kind,
        frames=c.frames,
        messages=c.messages,
        bytes=c.bytes,
        dropped_fragments=c.dropped_fragments,
        out_of_place=c.out_of_place,
        reordered=c.reordered,
        gaps=[str(g) for g in c.gaps[:100]],
        malformed=dict(reader.malformed),
        unreadable=dict(reader.unreadable()),
        notes=list(reader.notes),
        streams=sorted(streams.values(), key=lambda s: (s.stream_id, s.session_id)),
        details=_jsonable(reader.describe()),
    )


def _jsonable(value: object) -> dict[str, object]:
    return json.loads(json.dumps(value, default=str)) if isinstance(value, dict) else {}


def _time(ns: int | None) -> str:
    if not ns:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds")


def inspect(path: str, as_json: bool = False) -> int:
    report = build_report(path)
    if as_json:
        print(json.dumps(asdict(report), indent=2))
        return 0
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(
        f"{report.path}: {report.kind}, {report.frames:,} frames, {report.messages:,} messages, "
        f"{report.bytes:,} payload bytes, {len(report.gaps)} gaps, "
        f"{sum(report.malformed.values())} malformed, {report.dropped_fragments} dropped fragments, "
        f"{report.out_of_place} out-of-place frames, {report.reordered} reordered",
        highlight=False,
        soft_wrap=True,
    )
    table = Table(show_header=True, header_style="bold")
    for column in ("stream", "session", "messages", "bytes", "positions", "first", "last", "gaps"):
        table.add_column(column, justify="right" if column not in ("first", "last") else "left")
    for s in report.streams:
        table.add_row(
            str(s.stream_id),
            str(s.session_id),
            f"{s.messages:,}",
            f"{s.bytes:,}",
            f"{s.first_position}..{s.last_position}",
            _time(s.first_ns),
            _time(s.last_ns),
            str(s.gaps),
        )
    console.print(table)
    for gap in report.gaps[:10]:
        console.print(f"gap: {gap}", highlight=False, soft_wrap=True)
    for reason, count in sorted(report.malformed.items()):
        console.print(f"malformed: {reason}: {count}", highlight=False)
    for kind, count in sorted(report.unreadable.items()):
        console.print(f"unreadable: {kind}: {count}", highlight=False)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    return 0
