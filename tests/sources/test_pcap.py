"""PcapReader on real Aeron UDP traffic captured by tcpdump, then converted and damaged.

The embedded media driver publishes SBE telemetry over UDP on loopback (messages
larger than the MTU, so fragmented, and a short term length so the capture
crosses terms and holds PAD frames) while tcpdump writes the pcap. The capture is
then rewritten (pcapng, other link types, IPv4 fragments, lost/duplicated
datagrams, cut or corrupted bytes) with struct/dpkt on the test side.
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path
from typing import Any

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pcap_builder import UDP_AT, aeron_type, read_packets, write_pcap
from pcap_live import STREAM, TERM

from telepipe.errors import SourceError
from telepipe.sources.frames import FrameAssembler
from telepipe.sources.pcap import PcapReader

# -- capturing real traffic: the ``capture`` fixture (tests/sources/conftest.py) -----------


# -- rewriting captures (test side: struct and dpkt only) -------------------------------


def replay(reader: PcapReader) -> tuple[list[bytes], FrameAssembler]:
    assembler = FrameAssembler()
    return [m.payload for m in assembler.assemble(reader.frames())], assembler


def test_a_closed_publications_end_of_stream_is_its_end_mark_in_its_place(
    capture: tuple[Path, list[bytes]],
) -> None:
    """The publisher closed (Aeron repeats an end-of-stream heartbeat, frame length 0 and
    flags with EOS, while it lingers): the pcap yields them as frames without payload
    and the assembler makes them the session's end mark, once, right after its last
    message, at its position, as a live image's end of stream. Before: dropped, so a
    pcap replay held an ended session's watermark until its idle timeout."""
    path, sent = capture
    reader = PcapReader(path)
    frames = list(reader.frames())
    ends = [f for f in frames if f.flags & 0x20 and not f.payload and not f.padding]
    assert ends and {(f.stream_id, f.session_id) for f in ends} == {(STREAM, ends[0].session_id)}
    assembler = FrameAssembler()
    messages = list(assembler.assemble(frames, ends=True))
    assert [m.payload for m in messages[:-1]] == sent
    end = messages[-1]
    assert end.end_of_stream and end.position == messages[-2].position
    assert assembler.counters.gaps == [] and assembler.counters.dropped_fragments == 0
    assert replay(PcapReader(path))[0] == sent  # (other readers see messages alone)
    d = PcapReader(path).describe()
    assert d["end_of_stream_heartbeats"] == len(ends)
    sessions = d["sessions"]
    assert isinstance(sessions, list) and len(sessions) == 1
    assert sessions[0]["payload_bytes"] == sum(len(f.payload) for f in frames)


def only_term_ends(assembler: FrameAssembler) -> bool:
    """PAD frames carry the position across term ends: an intact capture has no gap."""
    return not assembler.counters.gaps


# -- tests ------------------------------------------------------------------------------


def test_capture_replays_every_message_in_order(capture: tuple[Path, list[bytes]]) -> None:
    path, sent = capture
    reader = PcapReader(path)
    messages, assembler = replay(reader)
    assert messages == sent
    assert only_term_ends(assembler) and assembler.counters.dropped_fragments == 0
    frames = list(PcapReader(path).frames())
    assert {f.stream_id for f in frames} == {STREAM}
    assert frames[-1].position > 2 * TERM  # crossed terms: positions from SETUP term params
    assert any(f.received_ns % 1000 for f in frames)  # nanosecond timestamps kept
    assert not reader.malformed and not reader.notes


def test_describe_summarises_the_capture(capture: tuple[Path, list[bytes]]) -> None:
    path, sent = capture
    d: Any = PcapReader(path).describe()
    assert d["format"] == "pcap" and d["packets"] == d["udp_datagrams"] > len(sent)
    assert d["first_ns"] < d["last_ns"] and d["pad_frames"] >= 2
    (session,) = d["sessions"]
    assert session["setup"]["term_length"] == TERM and session["setup"]["mtu"] == 1408
    assert session["stream_id"] == STREAM and d["control_frames"]["status"] > 0


def test_pcapng_from_the_same_packets(capture: tuple[Path, list[bytes]], tmp_path: Path) -> None:
    path, sent = capture
    _, packets = read_packets(path)
    out = tmp_path / "aeron.pcapng"
    with out.open("wb") as f:
        writer = dpkt.pcapng.Writer(f)
        for ts, buf in packets:
            writer.writepkt(buf, ts=ts / 1e9)
    assert replay(PcapReader(out))[0] == sent


def _sll2(buf: bytes) -> bytes:
    return struct.pack("!HHiHBB8s", 0x0800, 0, 1, 1, 0, 6, b"") + buf[14:]


def _fragments(buf: bytes) -> list[bytes]:
    ip = dpkt.ip.IP(buf[14:])
    payload = bytes(ip.data)
    if len(payload) <= 1200:
        return [buf]
    out = []
    for start in range(0, len(payload), 1200):  # a multiple of 8, as RFC 791 needs
        piece = dpkt.ip.IP(src=ip.src, dst=ip.dst, id=ip.id, p=ip.p, ttl=ip.ttl)
        piece.data = payload[start : start + 1200]
        piece.offset = start >> 3
        piece.mf = int(start + 1200 < len(payload))
        piece.len = 20 + len(piece.data)
        out.append(buf[:14] + bytes(piece))
    return out[::-1]  # last fragment first: reassembly must not care


@pytest.mark.parametrize(
    ("linktype", "convert"),
    [
        (0, lambda b: [struct.pack("<I", 2) + b[14:]]),  # BSD loopback (DLT_NULL)
        (108, lambda b: [struct.pack(">I", 2) + b[14:]]),  # OpenBSD loopback (DLT_LOOP)
        (113, lambda b: [struct.pack("!HHH8sH", 0, 772, 6, b"", 0x0800) + b[14:]]),  # -i any
        (276, lambda b: [_sll2(b)]),  # tcpdump -i any, libpcap >= 1.10
        (101, lambda b: [b[14:]]),  # raw IP
        (228, lambda b: [b[14:]]),  # DLT_IPV4
        (1, _fragments),  # IPv4 fragments of Aeron datagrams above the link MTU
    ],
    ids=["null", "loop", "sll", "sll2", "raw", "ipv4", "ipv4_fragments"],
)
def test_link_types(
    capture: tuple[Path, list[bytes]], tmp_path: Path, linktype: int, convert: object
) -> None:
    path, sent = capture
    _, packets = read_packets(path)
    rewritten = [(ts, out) for ts, buf in packets for out in convert(buf)]  # type: ignore[operator]
    write_pcap(tmp_path / "x.pcap", rewritten, linktype)
    reader = PcapReader(tmp_path / "x.pcap")
    assert replay(reader)[0] == sent
    assert not reader.malformed and not reader.skipped


def test_truncated_file_keeps_what_came_before(
    capture: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    path, sent = capture
    _, packets = read_packets(path)
    offsets = write_pcap(tmp_path / "whole.pcap", packets)
    data = (tmp_path / "whole.pcap").read_bytes()
    middle = len(offsets) // 2
    (tmp_path / "cut.pcap").write_bytes(data[: offsets[middle] + 16 + 700])  # mid-packet
    (tmp_path / "clean.pcap").write_bytes(data[: offsets[middle]])  # the records before
    reader = PcapReader(tmp_path / "cut.pcap")
    messages = replay(reader)[0]
    assert 0 < len(messages) < len(sent) and messages == sent[: len(messages)]
    assert messages == replay(PcapReader(tmp_path / "clean.pcap"))[0]
    assert reader.malformed == {"truncated_record": 1}
    assert len(reader.notes) == 1 and "cut.pcap" in reader.notes[0]
    (tmp_path / "cut2.pcap").write_bytes(data[: offsets[middle] + 9])  # mid record header
    assert replay(PcapReader(tmp_path / "cut2.pcap"))[0] == messages


@pytest.mark.parametrize(
    ("at", "value"),
    [
        (0, b"\xff\xff\xff\x7f"),
        (6, b"\x55\x00"),
        (8, b"\x07\x00\x00\x00"),
        (20, b"\x00\x00\x10\x00"),
    ],
    ids=["frame_length", "type", "term_offset", "term_id"],
)
def test_corrupt_aeron_header_does_not_stop_the_replay(
    capture: tuple[Path, list[bytes]], tmp_path: Path, at: int, value: bytes
) -> None:
    path, sent = capture
    _, packets = read_packets(path)
    data_at = [i for i, (_, b) in enumerate(packets) if aeron_type(b) == 1]
    victim = data_at[len(data_at) // 2]
    ts, buf = packets[victim]
    packets[victim] = (ts, buf[: UDP_AT + at] + value + buf[UDP_AT + at + len(value) :])
    write_pcap(tmp_path / "bad.pcap", packets)
    reader = PcapReader(tmp_path / "bad.pcap")
    messages, assembler = replay(reader)
    assert reader.malformed or reader.skipped  # the damage is counted
    assert any(g.position % TERM for g in assembler.counters.gaps)  # and seen as a gap
    assert messages[:40] == sent[:40] and messages[-40:] == sent[-40:]
    assert len(sent) - 3 <= len(messages) < len(sent)


def test_lost_and_repeated_datagrams(capture: tuple[Path, list[bytes]], tmp_path: Path) -> None:
    path, sent = capture
    _, packets = read_packets(path)
    data_at = [i for i, (_, b) in enumerate(packets) if aeron_type(b) == 1]
    lost = data_at[len(data_at) // 3]
    repeated = data_at[2 * len(data_at) // 3]
    rewritten = [p for i, p in enumerate(packets) if i != lost]
    rewritten.insert(rewritten.index(packets[repeated]) + 3, packets[repeated])  # a retransmit
    write_pcap(tmp_path / "lossy.pcap", rewritten)
    messages, assembler = replay(PcapReader(tmp_path / "lossy.pcap"))
    real = [g for g in assembler.counters.gaps if g.position % TERM]
    assert any(g.position > g.expected_position for g in real)  # the loss
    assert any(g.position < g.expected_position for g in real)  # the duplicate
    missing = [p for p in sent if p not in messages]
    assert 1 <= len(missing) <= 4 and [p for p in sent if p in messages] == messages


def test_without_setup_positions_are_relative(
    capture: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    path, sent = capture
    _, packets = read_packets(path)
    write_pcap(tmp_path / "nosetup.pcap", [p for p in packets if aeron_type(p[1]) != 5])
    reader = PcapReader(tmp_path / "nosetup.pcap")
    messages, _ = replay(reader)
    assert messages == sent
    assert any("no SETUP frame for stream" in n for n in reader.notes)


def test_port_filter(capture: tuple[Path, list[bytes]]) -> None:
    path, sent = capture
    other = PcapReader(path, port=1)
    assert list(other.frames()) == [] and other.skipped["other_port"] > 0
    _, packets = read_packets(path)
    port = struct.unpack_from("!H", packets[0][1], 36)[0]
    assert replay(PcapReader(path, port=port))[0] == sent


@pytest.mark.parametrize("content", [b"", b"hello world, not a capture", b"\xd4\xc3"])
def test_not_a_capture_is_one_line_source_error(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(content)
    with pytest.raises(SourceError) as error:
        list(PcapReader(bad).frames())
    assert "\n" not in str(error.value) and str(bad) in str(error.value)
    with pytest.raises(SourceError, match="cannot open"):
        PcapReader(tmp_path / "missing.pcap")


def test_non_aeron_and_non_udp_packets_are_skipped(tmp_path: Path) -> None:
    dns = dpkt.ethernet.Ethernet(
        data=dpkt.ip.IP(
            p=17, data=dpkt.udp.UDP(sport=53, dport=5353, ulen=48, data=b"\x12\x34" * 20)
        )
    )
    arp = dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_ARP, data=dpkt.arp.ARP())
    write_pcap(tmp_path / "other.pcap", [(1, bytes(dns)), (2, bytes(arp))])
    reader = PcapReader(tmp_path / "other.pcap")
    assert list(reader.frames()) == []
    assert sum(reader.skipped.values()) == 2 and not reader.malformed


@pytest.mark.parametrize("linktype", [229, 105, 999])
def test_packets_of_a_link_type_without_aeron_are_skipped_not_a_crash(
    tmp_path: Path, linktype: int
) -> None:
    write_pcap(tmp_path / "other.pcap", [(1, bytes(60)), (2, bytes(7))], linktype)
    reader = PcapReader(tmp_path / "other.pcap")
    assert list(reader.frames()) == []
    assert sum(reader.skipped.values()) + sum(reader.malformed.values()) == 2
    if linktype != 229:  # (DLT_IPV6 is read; these are just not IPv6 packets)
        assert [n for n in reader.notes if f"link type {linktype} is not one" in n]


@pytest.mark.parametrize("terms_ahead", [1000, 2])
def test_a_stray_data_frame_before_the_stream_costs_only_itself(
    capture: tuple[Path, list[bytes]], tmp_path: Path, terms_ahead: int
) -> None:
    """A copy of the first DATA frame with its term id moved ahead, placed before it: with
    the SETUP known it is implausible (1000 terms) or out of place (2 terms, undone by
    the assembler once the stream starts where the SETUP said); never the baseline."""
    path, sent = capture
    _, packets = read_packets(path)
    first = next(i for i, (_, b) in enumerate(packets) if aeron_type(b) == 1)
    ts, buf = packets[first]
    term_id = struct.unpack_from("<i", buf, UDP_AT + 20)[0]
    stray = buf[: UDP_AT + 20] + struct.pack("<i", term_id + terms_ahead) + buf[UDP_AT + 24 :]
    packets.insert(first, (ts, stray))
    write_pcap(tmp_path / "stray.pcap", packets)
    messages, _ = replay(PcapReader(tmp_path / "stray.pcap"))
    assert [m for m in messages if m in sent] == sent
    assert len(messages) <= len(sent) + 1


def _data_packets(packets: list[tuple[int, bytes]]) -> list[int]:
    """Indexes of packets holding one Aeron DATA frame with a payload, in capture order."""
    out = []
    for i, (_, buf) in enumerate(packets):
        if aeron_type(buf) == 1 and len(buf) > UDP_AT + 32:
            flen = struct.unpack_from("<i", buf, UDP_AT)[0]
            if flen > 32 and len(buf) - UDP_AT <= -(-flen // 32) * 32:
                out.append(i)
    return out


def test_a_frame_overwritten_with_a_term_offset_ahead_costs_only_itself(
    capture: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    """Issue 17 case 1: one frame's term offset corrupted to point 3,200 bytes ahead
    (its message is delivered where it came, so at most that one is touched). Before:
    every frame up to 3,200 bytes on was taken for a repeat and dropped (50 of 101)."""
    path, sent = capture
    linktype, packets = read_packets(path)
    singles = [i for i in _data_packets(packets)
               if struct.unpack_from("<B", packets[i][1], UDP_AT + 5)[0] == 0xC0]  # fmt: skip
    i = singles[len(singles) // 2]
    ts, buf = packets[i]
    offset = struct.unpack_from("<i", buf, UDP_AT + 8)[0]
    packets[i] = (ts, buf[: UDP_AT + 8] + struct.pack("<i", offset + 3200) + buf[UDP_AT + 12 :])
    damaged = tmp_path / "overwritten.pcap"
    write_pcap(damaged, packets, linktype)
    messages, assembler = replay(PcapReader(damaged))
    assert sorted(messages) == sorted(sent) and len(messages) == len(sent)
    c = assembler.counters
    assert len(c.gaps) == 1 and c.out_of_place == 1 and c.dropped_fragments == 0


def test_fragments_out_of_order_are_put_back(
    capture: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    """Issue 17 case 2: the 2nd and 3rd fragments of a big message swapped: all its bytes
    are there, so it is delivered (before: lost, 1 gap, 3 dropped fragments)."""
    path, sent = capture
    linktype, packets = read_packets(path)
    data = _data_packets(packets)
    begin = next(i for i in data if packets[i][1][UDP_AT + 5] == 0x80)
    second, third = data[data.index(begin) + 1], data[data.index(begin) + 2]
    assert packets[second][1][UDP_AT + 5] == packets[third][1][UDP_AT + 5] == 0
    packets[second], packets[third] = packets[third], packets[second]
    damaged = tmp_path / "swapped.pcap"
    write_pcap(damaged, packets, linktype)
    messages, assembler = replay(PcapReader(damaged))
    assert messages == sent
    c = assembler.counters
    assert c.gaps == [] and c.dropped_fragments == 0 and c.reordered == 1


@pytest.mark.parametrize("distance", [1, 22, 24, 30, 70, 150])
def test_a_datagram_that_arrives_late_costs_no_message(
    capture: tuple[Path, list[bytes]], tmp_path: Path, distance: int
) -> None:
    """Review s8: a middle fragment of a 31-fragment message moved 24 datagrams later (no
    byte changed) lost the next message: once the jump was undone, that message's first
    fragment (kept aside) was dropped as stale. At 70+ (past REWIND_FRAMES) the late
    fragment itself was dropped, and its message lost. Every message now, and no gap."""
    path, sent = capture
    linktype, packets = read_packets(path)
    data = _data_packets(packets)
    begin = next(i for i in data[len(data) // 3 :] if packets[i][1][UDP_AT + 5] == 0x80)
    middle = data[data.index(begin) + 3]
    assert packets[middle][1][UDP_AT + 5] == 0  # a middle fragment
    out = list(packets)
    out.insert(min(middle + distance, len(out) - 1), out.pop(middle))
    damaged = tmp_path / "late.pcap"
    write_pcap(damaged, out, linktype)
    messages, assembler = replay(PcapReader(damaged))
    assert sorted(messages) == sorted(sent) and len(messages) == len(sent)
    c = assembler.counters
    assert c.gaps == [] and c.dropped_fragments == 0 and c.reordered >= 1


def test_a_damaged_record_header_costs_only_its_record(
    capture: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    """A record length flipped (past the snaplen, or swallowing the next record): the
    walk goes on at the next record; before, the rest of the file was lost."""
    path, sent = capture
    linktype, packets = read_packets(path)
    data = _data_packets(packets)
    for k, caplen in enumerate((1 << 20, len(packets[data[40]][1]) + 300)):
        damaged = tmp_path / f"record-{k}.pcap"
        offsets = write_pcap(damaged, packets, linktype)
        raw = bytearray(damaged.read_bytes())
        struct.pack_into("<I", raw, offsets[data[40]] + 8, caplen)
        damaged.write_bytes(bytes(raw))
        reader = PcapReader(damaged)
        messages, _ = replay(reader)
        lost = {p for p in sent if p not in messages}
        assert len(lost) <= 2 and len(messages) >= len(sent) - 2, k  # its message, and
        assert reader.malformed["bad_record"] >= 1  # one its bytes began (k=1)


def test_a_record_header_overwritten_to_swallow_the_next_costs_no_message(
    capture: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    """Review s8 item 2: a record's caplen and origlen overwritten so that it spans the
    next record lost that (untouched) record's message, counted as 0 malformed and 1 gap.
    Its IP length says where its packet ends: records follow from there to where it
    claims to end, so the walk resumes there (``overlong_record``)."""
    path, sent = capture
    linktype, packets = read_packets(path)
    data = _data_packets(packets)
    for k in (40, len(data) // 2):
        i = data[k]
        damaged = tmp_path / f"swallow-{k}.pcap"
        offsets = write_pcap(damaged, packets, linktype)
        raw = bytearray(damaged.read_bytes())
        spans = offsets[i + 2] - offsets[i] - 16  # itself and all of record i + 1
        struct.pack_into("<II", raw, offsets[i] + 8, spans, spans)
        damaged.write_bytes(bytes(raw))
        reader = PcapReader(damaged)
        messages, assembler = replay(reader)
        assert messages == sent, k
        assert assembler.counters.gaps == [] and assembler.counters.dropped_fragments == 0
        assert reader.malformed == {"overlong_record": 1}, reader.malformed
    # A record whose packet is padded (Ethernet minimum) but holds no record: read as is.
    padded = [(ts, buf + bytes(18)) if not k else (ts, buf) for k, (ts, buf) in enumerate(packets)]
    write_pcap(tmp_path / "padded.pcap", padded, linktype)
    reader = PcapReader(tmp_path / "padded.pcap")
    assert replay(reader)[0] == sent and not reader.malformed


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.sampled_from(["flip", "cut", "duplicate", "reorder", "overwrite", "move"]), st.data())
def test_any_single_damage_costs_no_more_than_losing_the_damaged_records(
    capture: tuple[Path, list[bytes]], tmp_path: Path, kind: str, data: st.DataObject
) -> None:
    """Issue 17: random single damage of the tcpdump capture. Every message that the
    capture without the damaged records still gives is delivered, once, in order."""
    path, _ = capture
    linktype, packets = read_packets(path)
    n = len(packets)
    damaged = Path(tempfile.mkdtemp(dir=tmp_path)) / "d.pcap"
    lost: set[int] = set()
    if kind in ("flip", "cut"):
        offsets = write_pcap(damaged, packets, linktype)
        raw = bytearray(damaged.read_bytes())
        at = data.draw(st.integers(24, len(raw) - 1))
        record = max(i for i, o in enumerate(offsets) if o <= at)
        if kind == "flip":
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
            lost = {record}
        else:
            del raw[at:]
            lost = set(range(record, n))
        damaged.write_bytes(bytes(raw))
    else:
        j = data.draw(st.integers(0, n - 2))
        out = list(packets)
        if kind == "duplicate":
            out.insert(j + 1, packets[j])
        elif kind == "reorder":
            out[j], out[j + 1] = out[j + 1], out[j]
        elif kind == "move":  # one record 1..200 places later or earlier (not before
            # the stream's first data frame: its start is where it starts)
            first = _data_packets(packets)[0] + 1
            j = max(j, first)
            k = data.draw(st.integers(1, 200)) * data.draw(st.sampled_from([1, -1]))
            out.insert(min(max(j + k, first), n - 1), out.pop(j))
        else:
            out[j] = packets[data.draw(st.integers(0, n - 1))]
            lost = {j}
        write_pcap(damaged, out, linktype)
    reference = tmp_path / "reference.pcap"
    write_pcap(reference, [p for i, p in enumerate(packets) if i not in lost], linktype)
    kept = replay(PcapReader(reference))[0]
    got, _ = replay(PcapReader(damaged))
    delivered = [p for p in got if p in set(kept)]
    if kind in ("reorder", "overwrite", "move"):  # a message that came early or late (a
        # packet swapped or moved, or copied over an earlier one) is delivered when it
        # comes, once
        delivered, kept = sorted(delivered), sorted(kept)
    assert delivered == kept
