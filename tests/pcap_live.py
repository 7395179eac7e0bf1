"""A real pcap for tests: tcpdump on loopback while an embedded Aeron media driver
publishes SBE telemetry over UDP (messages larger than the MTU, so fragmented, and a
short term length, so the capture crosses terms and holds PAD frames); then the
publication closes (end-of-stream heartbeats)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from helpers import SCHEMA_XML, free_udp_port
from pcap_builder import tcpdump_udp

from telepipe.aeron import AeronConnection
from telepipe.sbe import SbeCodec

TERM = 512 * 1024
STREAM = 4242


def telemetry(codec: SbeCodec, n: int, seq: int) -> bytes:
    rng = np.random.default_rng(seq)
    columns: dict[str, np.ndarray] = {
        "sensor_id": np.arange(n, dtype=np.int32),
        "ts": 1_767_225_600_000_000_000 + np.arange(n, dtype=np.int64) * 1000 + seq,
        "value": rng.normal(size=n),
        "quality": np.zeros(n, np.uint8),
    }
    return codec.encode(columns, source_id=7, batch_seq=seq)


def record_live_pcap(path: Path) -> list[bytes]:
    """tcpdump of a live UDP publication of 160 SBE messages (a quarter of them 42 KB:
    31 fragments) that then closes; the messages sent, as a subscriber got them."""
    port = free_udp_port()
    channel = f"aeron:udp?endpoint=127.0.0.1:{port}|term-length={TERM // 1024}k"
    codec = SbeCodec.from_xml(SCHEMA_XML)
    # 2000 readings = 42 KB (31 fragments); small ones share datagrams when batched.
    sent = [telemetry(codec, 2000 if i % 4 == 0 else 1 + i % 30, i) for i in range(160)]
    received: list[bytes] = []
    # tcpdump_udp waits for the last datagrams written, then stops tcpdump
    with tcpdump_udp(path, port), AeronConnection() as connection:
        sub = connection.client.add_subscription(channel, STREAM)
        pub = connection.client.add_exclusive_publication(channel, STREAM)

        def handler(buffer: object, header: object) -> None:
            received.append(bytes(buffer))  # type: ignore[call-overload]

        deadline = time.monotonic() + 20
        while not pub.is_connected:
            assert time.monotonic() < deadline, "publication never connected"
            sub.poll(handler, 10)
            time.sleep(0.001)
        for i, payload in enumerate(sent):
            while pub.offer(payload) is not True:
                assert time.monotonic() < deadline + 30, "offer kept failing"
                sub.poll(handler, 64)
                time.sleep(0.0002)
            # Paced in bursts of a few messages (several frames per datagram) so
            # tcpdump keeps up: a kernel drop would make the capture incomplete.
            if i % 5 == 4 or len(payload) > 1376:
                while len(received) <= i:
                    assert time.monotonic() < deadline + 60, "subscriber fell behind"
                    if not sub.poll(handler, 64):
                        time.sleep(0.0002)
                time.sleep(0.002)
        while len(received) < len(sent):
            assert time.monotonic() < deadline + 60, f"got {len(received)}/{len(sent)}"
            if not sub.poll(handler, 64):
                time.sleep(0.0005)
        session = pub.session_id
        pub.close()  # the driver sends end-of-stream heartbeats: the session ended
        image = sub.image_by_session_id(session)
        while image is not None and not image.is_end_of_stream:
            assert time.monotonic() < deadline + 60, "no end of stream"
            sub.poll(handler, 64)
            time.sleep(0.001)
    assert received == sent, "the live subscriber itself did not get every message"
    return sent
