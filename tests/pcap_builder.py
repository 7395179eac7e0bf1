"""Rewriting pcap captures on the test side (struct only, nothing from telepipe): the
packets of a nanosecond pcap as tcpdump wrote it, written back reordered, repeated,
cut or corrupted; and ``tcpdump_udp``, a real tcpdump of loopback UDP around a block."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tcpdump_udp(pcap: Path, port: int) -> Iterator[None]:
    """tcpdump of UDP ``port`` on loopback into ``pcap`` while the block runs (the test is
    skipped where tcpdump is missing or cannot capture). At the end it waits until the
    file stops growing (the last datagrams written: a poll with a deadline, not a fixed
    wait), stops tcpdump and checks the kernel dropped no packet."""
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is not installed (CI installs it: apt-get install tcpdump)")
    tcpdump = subprocess.Popen(
        ["tcpdump", "-i", "lo", "-U", "--immediate-mode", "-B", "65536",
         "--time-stamp-precision=nano", "-w", str(pcap), f"udp port {port}"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert tcpdump.stderr is not None
    if "listening on" not in tcpdump.stderr.readline():
        tcpdump.kill()
        pytest.skip("tcpdump cannot capture on lo here")
    try:
        yield
    finally:
        _settled(pcap)
        tcpdump.send_signal(signal.SIGINT)
        _, err = tcpdump.communicate(timeout=30)
    assert re.search(r"^0 packets dropped by kernel", err, re.MULTILINE), err


def _settled(path: Path, quiet_s: float = 0.25, timeout_s: float = 30.0) -> None:
    """Until ``path`` kept its size for ``quiet_s`` (or ``timeout_s`` passed)."""
    deadline = time.monotonic() + timeout_s
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = path.stat().st_size if path.exists() else 0
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.05)  # a poll of the file's size


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
