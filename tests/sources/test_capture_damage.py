"""Damaged telepipe captures cost only what is damaged (issue 17 item 1).

A good capture (two sessions interleaved, fragmented messages, several segments, an
index, end-of-stream records) written by ``CaptureWriter``, then damaged once: a bit
flipped, the file cut, a range zeroed, a record duplicated, two records swapped, a
record overwritten by another one, or the index damaged. Every message none of whose
records the damage touched is delivered, once, in order (a record moved by the damage
may bring its message early); whatever is lost is counted by kind.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from capture_builder import RecordAt, messages_of, records, synth, write_capture
from helpers import SCHEMA_XML
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telepipe.errors import SourceError
from telepipe.pipelines.inspect import build_report
from telepipe.sbe import SbeCodec
from telepipe.sources.capture import INDEX_NAME, CaptureReader, list_segments
from telepipe.sources.decoder import DecoderOptions
from telepipe.sources.frames import DataFrame, FrameAssembler
from telepipe.sources.replay import ReplayOptions, ReplaySource


class Good(tuple[Path, list[DataFrame], list[bytes]]):
    """(directory, frames, payloads) of the good capture (a short repr for hypothesis)."""

    def __repr__(self) -> str:
        return f"Good({self[0]})"


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Good:
    directory = tmp_path_factory.mktemp("good") / "capture"
    write_capture(directory, synth(3))
    frames = list(CaptureReader(directory).frames())
    payloads = [m.payload for m in FrameAssembler().assemble(frames)]
    assert len(list_segments(directory)) >= 4 and len(payloads) == 80
    return Good((directory, frames, payloads))


def read(directory: Path) -> tuple[list[bytes], CaptureReader, FrameAssembler, list[bool]]:
    reader = CaptureReader(directory)
    assembler = FrameAssembler()
    got = list(assembler.assemble(reader.frames(), ends=True))
    return (
        [m.payload for m in got if not m.end_of_stream],
        reader,
        assembler,
        [m.end_of_stream for m in got],
    )


def damage_counted(reader: CaptureReader, assembler: FrameAssembler) -> int:
    c = assembler.counters
    return (
        sum(reader.malformed.values()) + reader.torn_tail + len(c.gaps) + c.dropped_fragments
        + c.out_of_place + c.reordered
    )  # fmt: skip


def touched_by(recs: list[RecordAt], path: Path, lo: int, hi: int) -> set[int]:
    return {i for i, r in enumerate(recs) if r.path == path and r.start < hi and lo < r.end}


KINDS = ["flip", "cut", "zero", "duplicate", "reorder", "move", "overwrite", "index"]


@settings(
    max_examples=120, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
@given(st.sampled_from(KINDS), st.data())
def test_any_single_damage_loses_no_message_it_did_not_touch(
    good: Good,
    tmp_path: Path,
    kind: str,
    data: st.DataObject,
) -> None:
    source, frames, payloads = good
    directory = Path(tempfile.mkdtemp(dir=tmp_path)) / "c"
    shutil.copytree(source, directory)
    recs = [replace(r, path=directory / r.path.name) for r in records(source)]
    holding = messages_of(recs)  # message k -> its records
    assert len(holding) == len(payloads)
    segments = [p for _, p in list_segments(directory)]
    touched: set[int] = set()
    moved: set[int] = set()  # records whose message may come early
    if kind in ("flip", "cut", "zero"):
        path = data.draw(st.sampled_from(segments))
        raw = bytearray(path.read_bytes())
        at = data.draw(st.integers(0, len(raw) - 1))
        if kind == "flip":
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
            touched = touched_by(recs, path, at, at + 1)
        elif kind == "cut":
            del raw[at:]
            touched = touched_by(recs, path, at, 1 << 40)
        else:
            n = data.draw(st.integers(1, 3000))
            changed = any(raw[at : at + n])
            raw[at : at + n] = bytes(len(raw[at : at + n]))
            touched = touched_by(recs, path, at, at + n) if changed else set()
        path.write_bytes(bytes(raw))
    elif kind == "index":
        index = directory / INDEX_NAME
        raw = bytearray(index.read_bytes())
        at = data.draw(st.integers(0, len(raw) - 1))
        how = data.draw(st.sampled_from(["flip", "cut", "zero", "shuffle"]))
        if how == "flip":
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif how == "cut":
            del raw[at:]
        elif how == "zero":
            raw[at : at + 32] = bytes(len(raw[at : at + 32]))
        else:
            entries = [raw[i : i + 32] for i in range(0, len(raw), 32)]
            random.Random(at).shuffle(entries)
            raw = bytearray(b"".join(entries))
        index.write_bytes(bytes(raw))
    else:
        i = data.draw(st.integers(0, len(recs) - 1))
        r = recs[i]
        raw = bytearray(r.path.read_bytes())
        record = raw[r.start : r.end]
        if kind == "duplicate":  # the record twice
            raw[r.end : r.end] = record
        elif kind == "reorder":  # swapped with the next record of its segment
            following = [k for k, q in enumerate(recs) if q.path == r.path and q.start == r.end]
            if following:
                q = recs[following[0]]
                raw[r.start : q.end] = raw[q.start : q.end] + record
                moved = {i, following[0]}
        elif kind == "move":  # 1..200 records later or earlier in its segment
            same = [k for k, q in enumerate(recs) if q.path == r.path]
            k = data.draw(st.integers(1, 200)) * data.draw(st.sampled_from([1, -1]))
            j = same[min(max(same.index(i) + k, 0), len(same) - 1)]
            if j != i:
                q = recs[j]
                if j > i:  # the records up to q, then this one
                    raw[r.start : q.end] = raw[r.end : q.end] + record
                else:  # this one, then q and the records after it
                    raw[q.start : r.end] = record + raw[q.start : r.start]
                moved = {i}
        else:  # overwrite: another record's bytes in this one's place
            j = data.draw(st.integers(0, len(recs) - 1).filter(lambda j: j != i))
            q = recs[j]
            src = q.path.read_bytes()[q.start : q.end]
            raw[r.start : r.start + len(src)] = src
            touched = {i} | touched_by(recs, r.path, r.start, r.start + len(src))
            moved = {j}
        r.path.write_bytes(bytes(raw))

    try:
        got, reader, assembler, _ = read(directory)
    except SourceError:  # only when nothing of the capture can be read
        assert not any(p.stat().st_size > 200 for p in directory.glob("*.tpcap"))
        return
    lost_msgs = {k for k, held in enumerate(holding) if touched & set(held)}
    movable = {payloads[k] for k, held in enumerate(holding) if moved & set(held)}
    untouched = [p for k, p in enumerate(payloads) if k not in lost_msgs]
    counts = Counter(got)
    assert all(counts[p] == 1 for p in untouched), [counts[p] for p in untouched]
    assert not set(got) - set(payloads)  # nothing invented
    assert [p for p in got if p in set(untouched) and p not in movable] == [
        p for p in untouched if p not in movable
    ]
    damage = damage_counted(reader, assembler)
    if (
        kind in ("flip", "overwrite")
        or touched
        or len(got) < len(payloads)
        or (kind == "duplicate" and not r.eos)
    ):
        assert damage > 0, (kind, reader.notes)
    if kind == "index":
        assert got == payloads and damage == 0
        check_index_use(directory, frames)
    report = build_report(str(directory))  # inspect counts the same damage
    assert report.messages == len(got)
    assert sum(report.malformed.values()) == sum(reader.malformed.values())


def check_index_use(directory: Path, frames: list[DataFrame]) -> None:
    """A damaged index never hides a good record: seeks and counts equal a plain scan."""
    reader = CaptureReader(directory)
    assert reader.describe()["records"] == len(frames)
    rng = random.Random(len(frames))
    for f in rng.sample(frames, 6):
        want = frames[next(i for i, g in enumerate(frames) if g.position > f.position
                           and g.session_id == f.session_id):]  # fmt: skip
        assert list(reader.frames(start_position=f.position, session_id=f.session_id)) == want
        want = frames[next(i for i, g in enumerate(frames) if g.received_ns >= f.received_ns) :]
        assert list(reader.frames(start_time_ns=f.received_ns)) == want


def test_a_damaged_first_segment_header_costs_no_record(good: Good, tmp_path: Path) -> None:
    """Before: the capture was refused ('bad header') for one flipped header byte."""
    source, _, payloads = good
    directory = tmp_path / "c"
    shutil.copytree(source, directory)
    first = list_segments(directory)[0][1]
    raw = bytearray(first.read_bytes())
    raw[20] ^= 0x10  # created_ns: only the header's CRC says so
    first.write_bytes(bytes(raw))
    got, reader, _, _ = read(directory)
    assert got == payloads and reader.malformed == {"header": 1}


def test_a_missing_middle_segment_is_counted(good: Good, tmp_path: Path) -> None:
    source, _, payloads = good
    directory = tmp_path / "c"
    shutil.copytree(source, directory)
    recs = records(directory)
    middle = list_segments(directory)[1][1]
    middle.unlink()
    gone = {i for i, r in enumerate(recs) if r.path == middle}
    got, reader, _, _ = read(directory)
    kept = [p for k, p in enumerate(payloads) if not gone & set(messages_of(recs)[k])]
    assert [p for p in got if p in set(kept)] == kept
    assert reader.malformed.get("missing", 0) == 1


def test_a_replay_counts_capture_damage_in_input_damage(good: Good, tmp_path: Path) -> None:
    """``input_damage`` of a replay names what inspect names (crc, torn tail, gaps)."""
    source, _, _ = good
    directory = tmp_path / "c"
    shutil.copytree(source, directory)
    recs = records(directory)
    r = recs[len(recs) // 2]
    with r.path.open("r+b") as f:
        f.seek(r.start + 70)
        byte = f.read(1)
        f.seek(r.start + 70)
        f.write(bytes([byte[0] ^ 0xFF]))
    last = list_segments(directory)[-1][1]
    os.truncate(last, last.stat().st_size - 3)
    src = ReplaySource(directory, ReplayOptions(), SbeCodec.from_xml(SCHEMA_XML), DecoderOptions())
    while not src.exhausted:
        src.poll()
    damage = src.damage
    assert damage["malformed_crc"] == 1 and damage["torn_tail_bytes"] > 0
    report = build_report(str(directory))
    assert report.malformed == {"crc": 1} and report.unreadable["torn_tail_bytes"] > 0
