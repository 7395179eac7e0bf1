"""A telemetry simulator: realistic readings for K sensors, published over Aeron as SBE.

Each sensor reads at a fixed event-time period (1 kHz by default) around its own
base level with drift and noise; some sensors spike above the alarm level for a
few readings at their own cadence, some are stuck at a constant, some go silent
for gaps, timestamps jitter within a bound (out of order) and a fraction arrives
late. Everything derives from ``seed``: the same options publish the same bytes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyaeron

from telepipe.aeron import AeronConnection, idle_strategy
from telepipe.errors import ConfigError, SourceError
from telepipe.sbe import SbeCodec

QUALITY_GOOD = 192
QUALITY_UNCERTAIN = 64


@dataclass(frozen=True)
class SimulatorOptions:
    sensors: int = 1000
    rate: float = 0.0
    readings_per_message: int = 1024
    period_us: int = 1000
    seed: int = 7
    source_id: int = 1
    # Event time of the first reading; None: the current second at start.
    start_ns: int | None = None
    noise: float = 1.0
    drift_per_s: float = 0.05
    spike_every_min: int = 500
    spike_every_max: int = 5000
    spike_length: int = 5
    spike_height: float = 40.0
    stuck_fraction: float = 0.01
    gap_fraction: float = 0.02
    gap_every: int = 3000
    gap_length: int = 200
    jitter_us: int = 5000
    late_fraction: float = 0.0
    late_ms: int = 500
    nan_fraction: float = 0.0
    connect_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        def need(ok: bool, key: str, rule: str) -> None:
            if not ok:
                raise ConfigError(f"simulator.{key} {rule}, got {getattr(self, key)!r}")

        need(self.sensors >= 1, "sensors", "must be >= 1")
        need(self.rate >= 0, "rate", "must be >= 0 (0 = as fast as possible)")
        need(1 <= self.readings_per_message <= 65535, "readings_per_message", "must be in 1..65535")
        need(self.period_us >= 1, "period_us", "must be >= 1")
        need(
            1 <= self.spike_every_min <= self.spike_every_max,
            "spike_every_min",
            "must be in 1..spike_every_max",
        )
        need(self.spike_length >= 0, "spike_length", "must be >= 0")
        for key in ("stuck_fraction", "gap_fraction", "late_fraction", "nan_fraction"):
            need(0.0 <= getattr(self, key) <= 1.0, key, "must be in [0, 1]")
        need(
            self.gap_every >= 1 and 0 <= self.gap_length <= self.gap_every,
            "gap_length",
            "must be in 0..gap_every",
        )
        need(self.jitter_us >= 0, "jitter_us", "must be >= 0")
        need(self.late_ms >= 0, "late_ms", "must be >= 0")


class TelemetryGenerator:
    """Produces the readings as column chunks, in publish order."""

    def __init__(self, options: SimulatorOptions) -> None:
        self.o = options
        k = options.sensors
        setup = np.random.default_rng(options.seed)
        self.sensor_ids = np.arange(1, k + 1, dtype=np.int32)
        self.base = 50.0 + 10.0 * np.sin(np.arange(k))
        self.drift = setup.uniform(-1.0, 1.0, k) * options.drift_per_s
        self.spike_every = setup.integers(options.spike_every_min, options.spike_every_max + 1, k)
        self.spike_phase = setup.integers(0, options.spike_every_max, k)
        self.stuck = setup.random(k) < options.stuck_fraction
        self.gappy = setup.random(k) < options.gap_fraction
        self.gap_phase = setup.integers(0, options.gap_every, k)
        self.rng = np.random.default_rng(options.seed + 1)
        self.start_ns = (
            options.start_ns if options.start_ns is not None else time.time_ns() // 10**9 * 10**9
        )
        self.next_index = 0

    def chunks(self, limit: int | None) -> Iterator[dict[str, np.ndarray]]:
        o, produced = self.o, 0
        while limit is None or produced < limit:
            chunk = self._chunk(o.readings_per_message)
            if limit is not None and produced + len(chunk["ts"]) > limit:
                chunk = {name: col[: limit - produced] for name, col in chunk.items()}
            produced += len(chunk["ts"])
            if len(chunk["ts"]):
                yield chunk

    def messages(self, codec: SbeCodec, limit: int | None) -> Iterator[tuple[bytes, int]]:
        """The chunks as the SBE messages the simulator publishes, with their reading
        counts, in publish order."""
        for seq, chunk in enumerate(self.chunks(limit)):
            payload = codec.encode(chunk, source_id=self.o.source_id, batch_seq=seq)
            yield payload, len(chunk["ts"])

    def _chunk(self, n: int) -> dict[str, np.ndarray]:
        o, rng = self.o, self.rng
        index = np.arange(self.next_index, self.next_index + n, dtype=np.int64)
        self.next_index += n
        tick, s = np.divmod(index, o.sensors)
        ts = self.start_ns + tick * (o.period_us * 1000)
        if o.jitter_us:
            ts = ts + rng.integers(0, o.jitter_us * 1000, n)
        seconds = (ts - self.start_ns) / 1e9
        value = self.base[s] + self.drift[s] * seconds + o.noise * rng.standard_normal(n)
        spiking = (tick + self.spike_phase[s]) % self.spike_every[s] < o.spike_length
        value = np.where(spiking, value + o.spike_height, value)
        value = np.where(self.stuck[s], self.base[s], value)
        quality = np.where(self.stuck[s], QUALITY_UNCERTAIN, QUALITY_GOOD).astype(np.uint8)
        if o.late_fraction:
            late = rng.random(n) < o.late_fraction
            ts = np.where(late, ts - o.late_ms * 1_000_000, ts)
        if o.nan_fraction:
            value = np.where(rng.random(n) < o.nan_fraction, np.nan, value)
        keep = ~(self.gappy[s] & ((tick + self.gap_phase[s]) % o.gap_every < o.gap_length))
        return {
            "sensor_id": self.sensor_ids[s][keep],
            "ts": ts[keep].astype(np.int64),
            "value": value[keep],
            "quality": quality[keep],
        }


@dataclass
class PublisherCounters:
    published: int = 0
    messages: int = 0
    bytes: int = 0
    backpressured_offers: int = 0
    not_connected_offers: int = 0
    admin_action_offers: int = 0


class Simulator:
    """Publishes generated telemetry on one Aeron channel/stream, honouring back-pressure."""

    def __init__(
        self,
        options: SimulatorOptions,
        codec: SbeCodec,
        connection: AeronConnection,
        channel: str,
        stream_id: int,
    ) -> None:
        self.options = options
        self.codec = codec
        self.generator = TelemetryGenerator(options)
        self.counters = PublisherCounters()
        self.idle = idle_strategy(connection.options)
        self.stopped = False
        try:
            self.publication = connection.client.add_exclusive_publication(channel, stream_id)
        except pyaeron.AeronError as error:
            raise SourceError(f"cannot publish on {channel} stream {stream_id}: {error}") from error

    def run(self, limit: int | None) -> PublisherCounters:
        """Publish ``limit`` readings (forever if None) or until ``stop()``."""
        o, c = self.options, self.counters
        deadline = time.monotonic() + o.connect_timeout_s
        while not self.publication.is_connected:
            if time.monotonic() > deadline:
                raise SourceError(f"no subscriber connected within {o.connect_timeout_s} s")
            if self.stopped:
                return c
            self.idle.idle(0)
        started = time.monotonic()
        for payload, readings in self.generator.messages(self.codec, limit):
            if not self._offer(payload):
                break
            c.published += readings
            c.messages += 1
            c.bytes += len(payload)
            if o.rate:
                ahead = c.published / o.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        return c

    def _offer(self, payload: bytes) -> bool:
        c = self.counters
        alone_since: float | None = None
        while not self.stopped:
            # Its send time in the reserved value: the stamp a live run and every
            # capture of the frame give its dead letters (frames.stamp_ns).
            result = self.publication.offer(payload, reserved_value=time.time_ns())
            if result is True:
                self.idle.reset()
                return True
            if result == pyaeron.BACK_PRESSURED:
                c.backpressured_offers += 1
            elif result == pyaeron.NOT_CONNECTED:
                c.not_connected_offers += 1
                now = time.monotonic()
                alone_since = alone_since or now
                if now - alone_since > self.options.connect_timeout_s:
                    raise SourceError(
                        f"the subscriber went away: not connected for {self.options.connect_timeout_s} s"
                    )
            else:
                c.admin_action_offers += 1
            self.idle.idle(0)
        return False

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        if not self.publication.is_closed:
            self.publication.close()
