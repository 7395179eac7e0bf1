"""``PcapReader``: Aeron data frames from a pcap or pcapng capture of Aeron UDP traffic.

What tcpdump (``-w``) and Wireshark/dumpcap write: classic pcap (micro- or
nanosecond timestamps, either byte order) and pcapng (any number of sections and
interfaces, per-interface ``if_tsresol``/``if_tsoffset``). Link types: Ethernet
(with VLAN tags), BSD loopback (DLT_NULL/DLT_LOOP), Linux cooked v1/v2
(``tcpdump -i any``), raw IPv4/IPv6. IPv4 fragments (an Aeron MTU above the link
MTU) are reassembled; IPv6 fragments are skipped and counted.

dpkt decodes the link, IP and UDP layers and the pcapng section/interface
blocks. The per-packet record headers are walked here with ``struct`` over an
mmap because dpkt's ``Reader``s return float timestamps (nanoseconds lost),
silently yield a short packet when the file is cut, and read only the first
pcapng interface.

Each UDP datagram may hold several 32-byte aligned Aeron frames
(aeron_udp_protocol.h); they are walked by ``frame_length``. DATA frames become
``DataFrame``s in capture order. A heartbeat (DATA, ``frame_length`` 0) and a PAD
frame (only its header is sent; it fills the rest of the term) end the datagram; a
heartbeat with the EOS flag (a closed publication's end-of-stream, repeated until its
linger ends) is yielded as a frame without payload: ``FrameAssembler`` makes it the
session's end mark, once, when the stream has reached it, as a live subscriber sees it;
SETUP gives a session's ``initial_term_id``/``term_length``; SM, NAK, RTTM, ERR and
the rest are counted and skipped. A DATA frame of exactly 32 bytes is an empty
message, not a heartbeat: it is yielded (dropping it would look like a gap).

Positions: ``position_of(term_id, term_offset + aligned length, initial_term_id,
term_length)`` with the SETUP frame's parameters. If no SETUP was captured before a
session's first frame, its positions are *relative*: ``initial_term_id`` is the
first term id seen and ``term_length`` the largest Aeron allows (1 GiB), so
positions stay increasing and contiguous within a term, but each term change
looks like a gap to ``FrameAssembler`` (no message is lost there: messages never
span terms). A note says so; the choice is kept for the whole capture so
positions never move backwards.

Damage never raises once the file is known to be pcap/pcapng: a file cut
mid-record, an impossible record length, an Aeron header that does not add up
all end or skip with ``malformed[reason] += 1`` and a line in ``notes``; frames
before the damage are still yielded. A file that is not pcap/pcapng at all is a
one-line ``SourceError``.
"""

from __future__ import annotations

import mmap
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import dpkt

from telepipe.errors import SourceError
from telepipe.sources.frames import (
    EOS_FLAG,
    HEADER_LENGTH,
    SETUP_HEADER,
    TYPE_DATA,
    TYPE_PAD,
    TYPE_SETUP,
    DataFrame,
    align,
    position_of,
)

__all__ = ["PcapReader", "SetupInfo"]

MAX_TERM_LENGTH = 1 << 30  # AERON_LOGBUFFER_TERM_MAX_LENGTH
MIN_TERM_LENGTH = 1 << 16
MAX_RECORD = 1 << 18  # tcpdump's largest snaplen (262144)
TERM_JUMP = 8  # a term id further than this from the last one is suspect

_PCAP_MAGICS = {  # magic bytes -> (byte order, ns per timestamp fraction unit)
    b"\xd4\xc3\xb2\xa1": ("<", 1000),
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_FRAME = struct.Struct("<iBBhiiiiq")
_CONTROL_TYPES = {2: "nak", 3: "status", 4: "error", 6: "rttm", 7: "resolution"}
_KNOWN_TYPES = set(range(0, 12))
_SETUP_LENGTH = SETUP_HEADER.itemsize

DLT_NULL, DLT_EN10MB, DLT_RAW, DLT_RAW_OPENBSD, DLT_LOOP = 0, 1, 12, 14, 108
LINKTYPE_RAW, DLT_LINUX_SLL, DLT_IPV4, DLT_IPV6, DLT_LINUX_SLL2 = 101, 113, 228, 229, 276


@dataclass(frozen=True, slots=True)
class SetupInfo:
    """Term parameters of one publication session, from its SETUP frame."""

    stream_id: int
    session_id: int
    initial_term_id: int
    active_term_id: int
    term_length: int
    mtu: int
    ttl: int
    captured_ns: int


@dataclass(slots=True)
class _Record:
    ts_ns: int
    linktype: int
    data: bytes
    original_length: int


class _Damage(Exception):
    """The container is damaged at this point: nothing after it can be trusted."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class PcapReader:
    """Aeron DATA frames from a pcap/pcapng file, in capture order.

    ``port``: keep only UDP datagrams whose source or destination port is it.
    After (or during) a pass: ``notes`` (one line each), ``malformed`` and
    ``skipped`` (reason -> count), ``setups`` ((stream, session) -> SetupInfo).
    """

    def __init__(self, path: str | Path, port: int | None = None) -> None:
        self.path = Path(path)
        self.port = port
        try:
            with self.path.open("rb") as f:
                head = f.read(4)
        except OSError as error:
            raise SourceError(f"{self.path}: cannot open ({error.strerror})") from None
        if head == _PCAPNG_SHB:
            self.format = "pcapng"
        elif head in _PCAP_MAGICS:
            self.format = "pcap"
        else:
            raise SourceError(
                f"{self.path}: not a pcap or pcapng file (magic {head.hex() or 'empty'})"
            )
        self._reset()

    def _reset(self) -> None:
        self.notes: list[str] = []
        self.malformed: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.setups: dict[tuple[int, int], SetupInfo] = {}
        self.counts: Counter[str] = Counter()
        self._terms: dict[tuple[int, int], tuple[int, int]] = {}
        self._last_term: dict[tuple[int, int], int] = {}
        self._suspect_term: dict[tuple[int, int], int] = {}
        self._noted: set[str] = set()

    def _note(self, reason: str, detail: str) -> None:
        """Count the damage; one note per reason (the first occurrence)."""
        self.malformed[reason] += 1
        if reason not in self._noted:
            self._noted.add(reason)
            self.notes.append(f"{self.path}: {detail}")

    # -- public -----------------------------------------------------------------

    def frames(self) -> Iterator[DataFrame]:
        """Every DATA frame with a payload-bearing header, in capture order."""
        self._reset()
        for ts, payload in self._datagrams():
            for key, h, off in self._walk(payload, ts):
                term_id, term_offset, flen = h[7], h[4], h[0]
                initial, term_length = self._terms[key]
                position = position_of(term_id, term_offset + align(flen), initial, term_length)
                if flen == 0:  # an end-of-stream heartbeat: no payload, moves nothing
                    yield DataFrame(h[6], h[5], term_id, term_offset, h[2], position, ts, b"", h[8])
                    continue
                if h[3] == TYPE_PAD:
                    yield DataFrame(
                        h[6], h[5], term_id, term_offset, h[2], position, ts, b"", h[8],
                        padding=align(flen),
                    )  # fmt: skip
                    continue
                yield DataFrame(
                    h[6], h[5], term_id, term_offset, h[2], position, ts,
                    payload[off + HEADER_LENGTH : off + flen], h[8],
                )  # fmt: skip

    def unreadable(self) -> dict[str, int]:
        """Beyond ``malformed``: packets of link types telepipe cannot read."""
        return {
            f"unsupported_{k}": int(v) for k, v in sorted(self.skipped.items())
            if k.startswith("linktype_")
        }  # fmt: skip

    def stop(self) -> None:
        """A pcap file is read to its end: nothing waits."""

    def describe(self) -> dict[str, object]:
        """One pass without building frames: counts, time range, sessions and their SETUPs."""
        self._reset()
        sessions: dict[tuple[int, int], list[int]] = {}
        first = last = None
        for ts, payload in self._datagrams():
            first = ts if first is None else first
            last = ts
            for key, h, _ in self._walk(payload, ts):
                if h[0] == 0:  # an end-of-stream heartbeat: no data (counted as one)
                    continue
                s = sessions.setdefault(key, [0, 0])
                s[0] += 1
                s[1] += h[0] - HEADER_LENGTH if h[3] != TYPE_PAD else 0  # (a PAD's: none)
        return {
            "kind": "pcap",
            "path": str(self.path),
            "format": self.format,
            "packets": self.counts["packets"],
            "bytes": self.counts["captured_bytes"],
            "first_ns": first,
            "last_ns": last,
            "udp_datagrams": self.counts["udp"],
            "data_frames": self.counts["data"],
            "heartbeats": self.counts["heartbeat"],
            "end_of_stream_heartbeats": self.counts["end_of_stream"],
            "pad_frames": self.counts["pad"],
            "control_frames": {
                k: v for k, v in self.counts.items() if k in _CONTROL_TYPES.values()
            },
            "sessions": [
                {
                    "stream_id": k[0],
                    "session_id": k[1],
                    "frames": v[0],
                    "payload_bytes": v[1],
                    "setup": asdict(self.setups[k]) if k in self.setups else None,
                }
                for k, v in sorted(sessions.items())
            ],
            "skipped": dict(self.skipped),
            "malformed": dict(self.malformed),
            "notes": list(self.notes),
        }

    # -- Aeron frames in one datagram ---------------------------------------------

    def _walk(self, payload: bytes, ts: int) -> Iterator[tuple[tuple[int, int], tuple, int]]:
        """(key, header tuple, offset) of each DATA frame with a payload in the datagram."""
        n, off, first = len(payload), 0, True
        if n < 8:
            self.skipped["not_aeron"] += 1
        while off + 8 <= n:
            flen, version, _, ftype = struct.unpack_from("<iBBh", payload, off)
            if version != 0 or ftype not in _KNOWN_TYPES:
                if first:
                    self.skipped["not_aeron"] += 1
                else:
                    self._note("bad_frame_header", f"bad Aeron frame header (type {ftype})")
                return
            first = False
            if ftype == TYPE_SETUP:
                self._setup(payload, off, flen, ts)
                return
            if ftype not in (TYPE_DATA, TYPE_PAD):
                self.counts[_CONTROL_TYPES.get(ftype, "other")] += 1
                return
            if off + HEADER_LENGTH > n:
                self._note("truncated_frame", "a datagram ends inside an Aeron frame header")
                return
            h = _FRAME.unpack_from(payload, off)
            if flen == 0 and ftype == TYPE_DATA:
                self.counts["heartbeat"] += 1
                # A closed publication's end-of-stream heartbeat (EOS flag), at the
                # position where its session ended: its end mark, as live. Others: nothing.
                if h[2] & EOS_FLAG and h[4] >= 0 and not h[4] & 31:
                    key = (h[6], h[5])
                    if self._plausible(key, h, ts):
                        self.counts["end_of_stream"] += 1
                        yield key, h, off
                return
            if flen < HEADER_LENGTH or h[4] < 0 or h[4] & 31:
                self._note(
                    "bad_frame_length",
                    f"implausible Aeron frame (length {flen}, term offset {h[4]})",
                )
                return
            if ftype == TYPE_PAD:  # only its header travels; it closes the term
                self.counts["pad"] += 1
                key = (h[6], h[5])
                if self._plausible(key, h, ts):
                    yield key, h, off  # moves the position on past the term's end
                return
            if off + flen > n:
                self._note("truncated_frame", "an Aeron frame runs past the end of its datagram")
                return
            key = (h[6], h[5])
            if self._plausible(key, h, ts):
                self.counts["data"] += 1
                yield key, h, off
            off += align(flen)

    def _plausible(self, key: tuple[int, int], h: tuple, ts: int) -> bool:
        term_id, term_offset, flen = h[7], h[4], h[0]
        if key not in self._terms:
            setup = self.setups.get(key)
            if setup is not None:
                self._terms[key] = (setup.initial_term_id, setup.term_length)
            else:
                self._terms[key] = (term_id, MAX_TERM_LENGTH)
                self.notes.append(
                    f"{self.path}: no SETUP frame for stream {key[0]} session {key[1]}: "
                    f"positions are relative (term {term_id} taken as the first, 1 GiB terms)"
                )
        if term_offset + flen > self._terms[key][1]:
            self._note("bad_frame_length", f"a frame runs past the end of its term ({key})")
            return False
        last = self._last_term.get(key)
        if last is None and key in self.setups:
            # The SETUP says which term is active: a stray or corrupt first data frame
            # must not become the stream's baseline.
            last = self.setups[key].active_term_id
        # A corrupt term id would make every later frame look like a duplicate; a
        # real jump (a long capture loss) is taken once a second frame confirms it.
        suspect = self._suspect_term.get(key, term_id + 2 * TERM_JUMP + 1)
        if last is not None and abs(term_id - last) > TERM_JUMP and abs(term_id - suspect) > 1:
            self._suspect_term[key] = term_id
            self._note("implausible_term_id", f"term id {term_id} after {last} ({key})")
            return False
        self._suspect_term.pop(key, None)
        self._last_term[key] = term_id if last is None else max(last, term_id)
        return True

    def _setup(self, payload: bytes, off: int, flen: int, ts: int) -> None:
        self.counts["setup"] += 1
        if flen < _SETUP_LENGTH or off + _SETUP_LENGTH > len(payload):
            self._note("bad_setup", "a SETUP frame shorter than 40 bytes")
            return
        s = struct.unpack_from("<iiiiiiii", payload, off + 8)
        stream, session, initial, active, term_length, mtu, ttl = s[2], s[1], *s[3:8]
        if not (MIN_TERM_LENGTH <= term_length <= MAX_TERM_LENGTH) or term_length & (
            term_length - 1
        ):
            self._note("bad_setup", f"SETUP with term length {term_length} (not a power of 2)")
            return
        key = (stream, session)
        known = self.setups.get(key)
        if known is None:
            self.setups[key] = SetupInfo(
                stream, session, initial, active, term_length, mtu, ttl, ts
            )
        elif (known.initial_term_id, known.term_length) != (initial, term_length):
            self._note(
                "conflicting_setup",
                f"stream {stream} session {session}: a later SETUP disagrees; keeping the first",
            )

    # -- UDP datagrams ----------------------------------------------------------------

    def _datagrams(self) -> Iterator[tuple[int, bytes]]:
        defrag = _Defrag()
        for rec in self._records():
            self.counts["packets"] += 1
            self.counts["captured_bytes"] += len(rec.data)
            udp = self._udp(rec, defrag)
            if udp is None:
                continue
            sport, dport, data, ulen = udp
            if self.port is not None and self.port not in (sport, dport):
                self.skipped["other_port"] += 1
                continue
            self.counts["udp"] += 1
            if len(data) < ulen - 8:
                self._note("snaplen_truncated", "UDP datagrams cut by the capture's snaplen")
            yield rec.ts_ns, data[: max(ulen - 8, 0)]
        if defrag.pending:
            self.malformed["ip_fragments_incomplete"] += len(defrag.pending)
        self.malformed["ip_fragments_incomplete"] += defrag.evicted
        if not self.malformed["ip_fragments_incomplete"]:
            del self.malformed["ip_fragments_incomplete"]

    def _udp(self, rec: _Record, defrag: _Defrag) -> tuple[int, int, bytes, int] | None:
        data = rec.data
        at, tag_at, tags = _FAST.get(rec.linktype, (-1, -1, ()))  # no fast path: dpkt
        if tag_at >= 0 and data[tag_at : tag_at + len(tags[0])] not in tags:
            at = -1
        if at >= 0 and len(data) >= at + 28 and data[at] == 0x45 and data[at + 9] == 17:
            # Fast path (most captures): IPv4 without options or fragmentation, UDP.
            (flags_offset,) = struct.unpack_from("!H", data, at + 6)
            if not flags_offset & 0x3FFF:
                sport, dport, ulen = struct.unpack_from("!HHH", data, at + 20)
                return sport, dport, data[at + 28 : at + 20 + ulen], ulen
        try:
            ip = _network_layer(rec.linktype, rec.data)
            if ip is None:
                reason = f"linktype_{rec.linktype}"
                if reason not in self.skipped:
                    self.notes.append(
                        f"{self.path}: link type {rec.linktype} is not one telepipe reads "
                        "(Ethernet, BSD/OpenBSD loopback, Linux SLL/SLL2, raw IPv4/IPv6): "
                        "its packets are skipped"
                    )
                self.skipped[reason] += 1
                return None
            if isinstance(ip, dpkt.ip.IP) and (ip.mf or ip.offset):
                whole = defrag.add(ip)
                if whole is None:
                    return None
                ip.data = dpkt.udp.UDP(whole) if ip.p == dpkt.ip.IP_PROTO_UDP else whole
            elif isinstance(ip, dpkt.ip6.IP6) and ip.nxt == dpkt.ip.IP_PROTO_FRAGMENT:
                self.skipped["ipv6_fragment"] += 1
                return None
            udp = ip.data if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) else None
            if not isinstance(udp, dpkt.udp.UDP):
                self.skipped["not_udp"] += 1
                return None
            return udp.sport, udp.dport, bytes(udp.data), udp.ulen
        except (dpkt.Error, struct.error, ValueError, IndexError):
            self.skipped["undecodable"] += 1
            return None

    # -- containers -----------------------------------------------------------------

    def _records(self) -> Iterator[_Record]:
        try:
            with self.path.open("rb") as f:
                size = f.seek(0, 2)
                if size == 0:
                    raise SourceError(f"{self.path}: empty file, not a pcap/pcapng capture")
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as error:
            raise SourceError(f"{self.path}: cannot read ({error.strerror})") from None
        try:
            walk = self._pcapng(mm) if self.format == "pcapng" else self._pcap(mm)
            yield from walk
        except _Damage as damage:
            self._note(damage.reason, str(damage))
        finally:
            mm.close()

    def _pcap(self, mm: mmap.mmap) -> Iterator[_Record]:
        """Records in file order. A record header that cannot be genuine (a length past
        the snaplen or the file, or whose next record does not follow while a genuine
        header lies inside it) costs only its own bytes: the walk goes on at the next
        offset where two record headers in a row are plausible (``bad_record``)."""
        order, unit = _PCAP_MAGICS[bytes(mm[:4])]
        if len(mm) < 24:
            raise _Damage("truncated_header", "file ends inside the pcap file header")
        header_cls = dpkt.pcap.LEFileHdr if order == "<" else dpkt.pcap.FileHdr
        header = header_cls(bytes(mm[:24]))
        linktype = header.linktype & 0xFFFF
        snaplen = header.snaplen if 0 < header.snaplen <= MAX_RECORD else MAX_RECORD
        record = struct.Struct(order + "IIII")
        size = len(mm)
        frac_limit = 1_000_000_000 // unit

        def plausible(at: int) -> int:
            """The end of a plausible record at ``at`` (-1: none; the file's end: ok)."""
            if at == size:
                return size
            if at + 16 > size:
                return -1
            _, frac, caplen, origlen = record.unpack_from(mm, at)
            if (
                frac >= frac_limit
                or not 0 < caplen <= snaplen  # (no capture holds an empty packet)
                or caplen > origlen
                or origlen > 1 << 18
            ):
                return -1
            end = at + 16 + caplen
            return end if end <= size else -1

        def cut_short(at: int) -> bool:
            """A record at ``at`` that the end of the file cuts (a capture cut or still
            being written): its header is cut, or plausible but for its length."""
            if at + 16 > size:
                return True
            _, frac, caplen, origlen = record.unpack_from(mm, at)
            return (
                frac < frac_limit
                and 0 < caplen <= min(snaplen, origlen)
                and at + 16 + caplen > size
            )

        def chained(at: int) -> bool:
            end = plausible(at)
            return end >= 0 and (end == size or plausible(end) >= 0)

        off = 24
        while off < size:
            end = plausible(off)
            # The next record does not follow: that one is damaged, unless a genuine
            # header chain starts inside this record (then this length is).
            if (
                0 <= end < size
                and plausible(end) < 0
                and not cut_short(end)
                and any(chained(at) for at in range(off + 17, end))
            ):
                end = -1
            if end < 0:
                if off + 16 > size:
                    self._note("truncated_record", f"file cut inside a record header at byte {off}")
                    return
                resume = next((at for at in range(off + 1, size) if chained(at)), size)
                if resume == size and plausible(off) < 0 and off + 16 <= size:
                    caplen = record.unpack_from(mm, off)[2]
                    if caplen <= snaplen and off + 16 + caplen > size:
                        self._note("truncated_record", f"file cut inside a packet at byte {off}")
                        return
                self._note(
                    "bad_record", f"damaged record header at byte {off}; skipped to {resume}"
                )
                off = resume
                continue
            sec, frac, caplen, origlen = record.unpack_from(mm, off)
            inner = _packet_end(linktype, mm, off + 16, end)
            if inner >= 0 and end - inner >= 16 and _hops_to(plausible, inner, end):
                # The packet ends well before its record (its IP length says so) and
                # records follow from there to where this one claims to end: this
                # length was overwritten to swallow them; go on right after the packet.
                self._note(
                    "overlong_record",
                    f"record at byte {off} claims {end - inner} bytes past its packet, "
                    f"where records follow; resumed at {inner}",
                )
                caplen = origlen = inner - off - 16
                end = inner
            yield _Record(
                sec * 1_000_000_000 + frac * unit,
                linktype,
                mm[off + 16 : off + 16 + caplen],
                origlen,
            )
            off = end

    def _pcapng(self, mm: mmap.mmap) -> Iterator[_Record]:
        off, size, order = 0, len(mm), "<"
        # (linktype, ns numerator, ns denominator, offset)
        interfaces: list[tuple[int, int, int, int]] = []
        while off < size:
            if off + 12 > size:
                raise _Damage("truncated_record", f"file cut inside a block header at byte {off}")
            btype = struct.unpack_from("<I", mm, off)[0]
            if btype == 0x0A0D0D0A:  # section header: its byte-order magic sets the order
                bom = bytes(mm[off + 8 : off + 12])
                order = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}.get(bom, "")
                if not order:
                    raise _Damage("bad_block", f"bad section byte-order magic at byte {off}")
                interfaces = []
            btype, blen = struct.unpack_from(order + "II", mm, off)
            if blen < 12 or blen % 4:
                raise _Damage("bad_block", f"block of length {blen} at byte {off}")
            if off + blen > size:
                raise _Damage("truncated_record", f"file cut inside a block at byte {off}")
            if struct.unpack_from(order + "I", mm, off + blen - 4)[0] != blen:
                raise _Damage("bad_block", f"block lengths disagree at byte {off}")
            body = mm[off : off + blen]
            off += blen
            if btype == 1:
                interfaces.append(self._interface(body, order))
            elif btype in (6, 2, 3):
                if btype == 3:  # simple packet block: interface 0, no timestamp
                    iface, ts, origlen = 0, 0, struct.unpack_from(order + "I", body, 8)[0]
                    data = body[12 : 12 + min(origlen, blen - 16)]
                else:
                    fmt = order + ("IIIII" if btype == 6 else "HHIIII")
                    fields = struct.unpack_from(fmt, body, 8)
                    iface = fields[0]
                    hi, lo, caplen, origlen = fields[-4:]
                    if caplen > blen - 32:
                        self._note(
                            "bad_block", f"packet block overruns itself at byte {off - blen}"
                        )
                        continue
                    ts, data = (hi << 32) | lo, body[28 : 28 + caplen]
                if iface >= len(interfaces):
                    self._note("bad_block", f"packet on undeclared interface {iface}")
                    continue
                linktype, num, den, offset_ns = interfaces[iface]
                yield _Record(
                    ts * num // den + offset_ns if btype != 3 else 0, linktype, data, origlen
                )

    def _interface(self, body: bytes, order: str) -> tuple[int, int, int, int]:
        linktype = struct.unpack_from(order + "H", body, 8)[0]
        num, den, offset_ns = 1000, 1, 0  # default resolution: microseconds
        try:
            cls = (
                dpkt.pcapng.InterfaceDescriptionBlockLE
                if order == "<"
                else dpkt.pcapng.InterfaceDescriptionBlock
            )
            for opt in cls(body).opts:
                if opt.code == dpkt.pcapng.PCAPNG_OPT_IF_TSRESOL and opt.data:
                    r = opt.data[0]
                    num, den = (10**9, 1 << (r & 0x7F)) if r & 0x80 else (10**9, 10 ** (r & 0x7F))
                elif opt.code == dpkt.pcapng.PCAPNG_OPT_IF_TSOFFSET and len(opt.data) >= 8:
                    offset_ns = struct.unpack_from(order + "q", opt.data)[0] * 1_000_000_000
        except (dpkt.Error, struct.error, ValueError, IndexError):
            self._note("bad_block", "unreadable interface options; assuming microseconds")
        return linktype, num, den, offset_ns


_ETHERTYPE_IP = (b"\x08\x00",)
_AF_INET = (b"\x02\x00\x00\x00", b"\x00\x00\x00\x02")
# link type -> (offset of the IPv4 header, offset of the type tag, tags meaning IPv4)
_FAST = {
    DLT_EN10MB: (14, 12, _ETHERTYPE_IP),
    DLT_LINUX_SLL: (16, 14, _ETHERTYPE_IP),
    DLT_LINUX_SLL2: (20, 0, _ETHERTYPE_IP),
    DLT_NULL: (4, 0, _AF_INET),
    DLT_LOOP: (4, 0, _AF_INET),
    **dict.fromkeys((DLT_RAW, DLT_RAW_OPENBSD, LINKTYPE_RAW, DLT_IPV4), (0, -1, (b"",))),
}


def _packet_end(linktype: int, mm: mmap.mmap, start: int, end: int) -> int:
    """Where the IPv4/IPv6 packet of the record ``mm[start:end]`` ends by its own length
    field (-1: not known: another link type, or not a whole IP packet)."""
    at, tag_at, tags = _FAST.get(linktype, (-1, -1, ()))
    if at < 0 or end - start < at + 40:
        return -1
    if tag_at >= 0 and mm[start + tag_at : start + tag_at + len(tags[0])] not in tags:
        return -1
    version = mm[start + at] >> 4
    if version == 4 and mm[start + at] & 0xF >= 5:
        (total,) = struct.unpack_from("!H", mm, start + at + 2)
    elif version == 6:
        total = 40 + struct.unpack_from("!H", mm, start + at + 4)[0]
    else:
        return -1
    return start + at + total if total >= 20 and start + at + total <= end else -1


def _hops_to(plausible: Callable[[int], int], at: int, end: int) -> bool:
    """Whether plausible records lead from ``at`` exactly to ``end``."""
    while 0 <= at < end:
        at = plausible(at)
    return at == end


def _network_layer(linktype: int, data: bytes) -> dpkt.Packet | None:
    """The IP packet in one captured frame, or None for a link type we do not read."""
    if linktype == DLT_EN10MB:
        return dpkt.ethernet.Ethernet(data).data
    if linktype in (DLT_NULL, DLT_LOOP):
        return dpkt.loopback.Loopback(data).data
    if linktype == DLT_LINUX_SLL:
        return dpkt.sll.SLL(data).data
    if linktype == DLT_LINUX_SLL2:
        return dpkt.sll2.SLL2(data).data
    if linktype in (DLT_RAW, DLT_RAW_OPENBSD, LINKTYPE_RAW, DLT_IPV4, DLT_IPV6):
        version = data[0] >> 4 if data else 0
        return dpkt.ip.IP(data) if version == 4 else dpkt.ip6.IP6(data) if version == 6 else b""
    return None


class _Defrag:
    """IPv4 reassembly (RFC 791) for datagrams larger than the link MTU; bounded."""

    LIMIT = 256

    def __init__(self) -> None:
        self.pending: dict[tuple, tuple[dict[int, bytes], list[int]]] = {}
        self.evicted = 0

    def add(self, ip: dpkt.ip.IP) -> bytes | None:
        key = (ip.src, ip.dst, ip.id, ip.p)
        parts, total = self.pending.setdefault(key, ({}, [-1]))
        data = bytes(ip.data) if not isinstance(ip.data, bytes) else ip.data
        start = ip.offset << 3  # the header counts 8-byte units
        parts[start] = data
        if not ip.mf:
            total[0] = start + len(data)
        if len(self.pending) > self.LIMIT:
            del self.pending[next(iter(self.pending))]
            self.evicted += 1
        if total[0] < 0:
            return None
        whole, at = bytearray(), 0
        for s in sorted(parts):
            if s > at:
                return None
            whole += parts[s][at - s :]
            at = max(at, s + len(parts[s]))
        if at < total[0]:
            return None
        del self.pending[key]
        return bytes(whole[: total[0]])
