"""``AeronSource``: typed telemetry from a live Aeron subscription, pulled in batches.

The runner calls ``poll()`` only when downstream has taken the previous items,
so a slow consumer stops the polling, Aeron's flow control fills the publisher's
window and its ``offer`` returns BACK_PRESSURED: nothing is lost, memory is flat.

A publisher session that ends (its publication closed: the image reaches its
end-of-stream once everything it sent was polled; or the image went away, e.g. the
publisher died and its liveness timed out) is passed to the decoder as an end mark
after its last message, so it stops holding the watermark back at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyaeron

from telepipe.aeron import AeronConnection, error_line, is_channel
from telepipe.errors import ConfigError, SourceError
from telepipe.markers import Item
from telepipe.sbe import SbeCodec
from telepipe.sources.decoder import (
    DecoderOptions,
    DecodingSource,
    MessageBuffer,
    TelemetryDecoder,
)
from telepipe.sources.frames import stamp_ns


@dataclass(frozen=True)
class AeronSourceOptions:
    """Where to subscribe and how to cut the stream into batches and checkpoints."""

    channel: str = "aeron:ipc"
    stream_id: int = 1001
    fragment_limit: int = 1024
    out_of_orderness_ms: int = 50
    checkpoint_every_readings: int = 1_000_000
    checkpoint_every_ms: int = 2000
    idle_timeout_ms: int = 5000  # a session quiet this long stops holding the watermark

    def __post_init__(self) -> None:
        if not is_channel(self.channel):
            raise ConfigError(
                f"source.channel must be an Aeron URI (aeron:ipc, aeron:udp?...), got {self.channel!r}"
            )
        if isinstance(self.stream_id, bool) or not -(2**31) <= self.stream_id < 2**31:
            raise ConfigError(f"source.stream_id must be an int32, got {self.stream_id!r}")
        if self.fragment_limit < 1:
            raise ConfigError(f"source.fragment_limit must be >= 1, got {self.fragment_limit}")
        self.decoder_options()

    def decoder_options(self) -> DecoderOptions:
        return DecoderOptions(
            self.out_of_orderness_ms,
            self.checkpoint_every_readings,
            self.checkpoint_every_ms,
            self.idle_timeout_ms,
        )


class ImageEnds:
    """The publisher sessions of a subscription that ended, each told once and after
    everything it delivered: an image at its end-of-stream (its publication closed;
    true only once the subscriber polled up to the end), or an image that went away
    (unavailable: e.g. the publisher died and its liveness timed out; it delivers
    nothing more). Aeron's client conductor thread calls the handlers: a list's append
    and a set's discard are atomic under the GIL."""

    def __init__(self) -> None:
        self._ended: set[int] = set()
        self._gone: list[tuple[int, int]] = []

    def available(self, _subscription: pyaeron.Subscription, image: pyaeron.Image) -> None:
        self._ended.discard(image.session_id)  # (a publisher that reuses its session id)

    def unavailable(self, _subscription: pyaeron.Subscription, image: pyaeron.Image) -> None:
        self._gone.append((image.session_id, image.position))

    def poll(self, subscription: pyaeron.Subscription) -> list[tuple[int, int]]:
        """(session id, position) of each session that ended since the last call; call it
        right after ``subscription.poll`` so the mark follows what that poll delivered."""
        found = []
        for i in range(subscription.image_count):
            image = subscription.image_at_index(i)
            if image is not None and image.is_end_of_stream:
                found.append((image.session_id, image.position))
        while self._gone:
            found.append(self._gone.pop(0))
        ended = []
        for session, position in found:
            if session not in self._ended:
                self._ended.add(session)
                ended.append((session, position))
        return ended


class AeronSource(DecodingSource):
    """Subscribes to one channel/stream and turns SBE messages into record batches.

    Each ``poll`` takes up to ``fragment_limit`` fragments (Aeron reassembles
    messages), decodes the whole messages in bulk and returns the flow items:
    record batches, a watermark, and every N readings or T ms a barrier.
    """

    live = True

    def __init__(
        self, options: AeronSourceOptions, codec: SbeCodec, connection: AeronConnection
    ) -> None:
        self.options = options
        self.decoder = TelemetryDecoder(codec, options.decoder_options())
        self.exhausted = False  # a live stream never ends by itself
        self._messages = MessageBuffer()
        # pyaeron keeps a fragment assembler per handler object: pass the same
        # bound method every poll, or a message split across polls is lost.
        self._handler = self._on_message
        self._ends = ImageEnds()
        try:
            self.subscription = connection.client.add_subscription(
                options.channel,
                options.stream_id,
                available_image=self._ends.available,
                unavailable_image=self._ends.unavailable,
            )
        except pyaeron.AeronError as error:
            raise SourceError(
                f"cannot subscribe to {options.channel} stream {options.stream_id}: "
                f"{error_line(error)}"
            ) from error

    def _on_message(self, buffer: pyaeron.BufferView, header: pyaeron.Header) -> None:
        # The publisher's stamp (telepipe publishers put their send time in the
        # reserved value): what a capture of this frame records too (Message.stamp_ns).
        received_ns = stamp_ns(header.reserved_value, 0) or time.time_ns()
        self._messages.add(
            buffer, header.stream_id, header.session_id, header.position, received_ns
        )

    def poll(self) -> list[Item]:
        """Poll once; return the items it produced (possibly none). Never blocks."""
        self.subscription.poll(self._handler, self.options.fragment_limit)
        for session, position in self._ends.poll(self.subscription):
            self._messages.end(self.options.stream_id, session, position, time.time_ns())
        return self.decoder.decode(self._messages)

    def progress(self) -> tuple[int, int | None]:
        return self.decoder.counters.bytes, None

    def close(self) -> None:
        if not self.subscription.is_closed:
            self.subscription.close()
