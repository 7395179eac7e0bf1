"""Rewriting pcap captures on the test side (struct only, nothing from telepipe): the
packets of a nanosecond pcap as tcpdump wrote it, written back reordered, repeated,
cut or corrupted."""

from __future__ import annotations

import struct
from pathlib import Path

UDP_AT = 14 + 20 + 8  # Ethernet + IPv4 + UDP on loopback


def read_packets(path: Path) -> tuple[int, list[tuple[int, bytes]]]:
    """(linktype, [(ts_ns, bytes)]) of a nanosecond little-endian pcap."""
    data = path.read_bytes()
    assert data[:4] == b"\x4d\x3c\xb2\xa1"
    linktype = struct.unpack_from("<I", data, 20)[0]
    out, off = [], 24
    while off < len(data):
        sec, nsec, caplen, _ = struct.unpack_from("<IIII", data, off)
        out.append((sec * 10**9 + nsec, data[off + 16 : off + 16 + caplen]))
        off += 16 + caplen
    return linktype, out


def write_pcap(path: Path, packets: list[tuple[int, bytes]], linktype: int = 1) -> list[int]:
    """Nanosecond pcap; returns the byte offset of each record."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, linktype))
    offsets = []
    for ts, buf in packets:
        offsets.append(len(out))
        out += struct.pack("<IIII", ts // 10**9, ts % 10**9, len(buf), len(buf)) + buf
    path.write_bytes(bytes(out))
    return offsets


def aeron_type(buf: bytes) -> int:
    """The Aeron frame type of a loopback Ethernet packet's first frame (-1: none)."""
    return struct.unpack_from("<h", buf, UDP_AT + 6)[0] if len(buf) >= UDP_AT + 8 else -1


def aeron_session(buf: bytes) -> int:
    """The session id of a loopback Ethernet packet's first Aeron data frame."""
    return struct.unpack_from("<i", buf, UDP_AT + 12)[0]


def aeron_data(buf: bytes) -> bool:
    """A loopback Ethernet packet whose first Aeron frame is DATA with a payload (no
    heartbeat)."""
    return aeron_type(buf) == 1 and struct.unpack_from("<i", buf, UDP_AT)[0] > 32
