"""``telepipe capture``: record a live Aeron stream into a capture directory.

    telepipe capture channel=aeron:udp?endpoint=127.0.0.1:40123 stream=1001 out=captures/x
    python -m telepipe.pipelines.capture aeron.dir=/dev/shm/drv channel=aeron:ipc out=DIR

Every fragment is written as it arrived (``assemble=False``) with its Aeron
header fields and the wall-clock receive time (``telepipe.sources.capture``); a
publisher session that ends (its image's end-of-stream, or the image went away) is
written as an end-of-stream heartbeat record after its last fragment, so a replay
sees the end where this recorder did.
Restarting on the same ``out`` appends, after cutting a torn last record.
SIGINT/SIGTERM flush, close and exit 0.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyaeron
from omegaconf import DictConfig, OmegaConf

from telepipe.aeron import AeronConnection, error_line, idle_strategy, is_channel
from telepipe.config import build, option
from telepipe.errors import ConfigError, SourceError, TelepipeError
from telepipe.sources.aeron import ImageEnds
from telepipe.sources.capture import CaptureWriter

FLUSH_INTERVAL_S = 0.05


@dataclass(frozen=True)
class CaptureOptions:
    channel: str
    stream: int
    out: str
    segment_bytes: int
    fragment_limit: int
    fsync: bool
    index_every_bytes: int
    max_frames: int | None
    max_seconds: float | None
    stats_file: str | None


def _int(cfg: DictConfig, key: str, minimum: int, nullable: bool = False) -> Any:
    value = option(cfg, key)
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value < 2**63:
        what = "an Aeron stream id (int32)" if key == "stream" else f"an integer >= {minimum}"
        raise ConfigError(f"{key}: expected {what}, got {value!r}")
    if key == "stream" and not -(2**31) <= value < 2**31:
        raise ConfigError(f"{key}: expected an Aeron stream id (int32), got {value!r}")
    return value


def options_from(cfg: DictConfig) -> CaptureOptions:
    """Validate the capture config; every problem is a one-line ``ConfigError`` naming the key."""
    if OmegaConf.is_missing(cfg, "out") or not option(cfg, "out"):
        raise ConfigError("out: missing: give the capture directory, out=DIR")
    channel = option(cfg, "channel")
    if not is_channel(channel, spy=True):
        raise ConfigError(
            f"channel: expected an Aeron URI (aeron:ipc, aeron:udp?...), got {channel!r}"
        )
    seconds = option(cfg, "limit.seconds")
    if seconds is not None and (
        isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0
    ):
        raise ConfigError(f"limit.seconds: expected a number > 0 or null, got {seconds!r}")
    fsync = option(cfg, "fsync")
    if not isinstance(fsync, bool):
        raise ConfigError(f"fsync: expected true or false, got {fsync!r}")
    stats_file = option(cfg, "stats_file")
    return CaptureOptions(
        channel=channel,
        stream=_int(cfg, "stream", -(2**31)),
        out=str(option(cfg, "out")),
        segment_bytes=_int(cfg, "segment_bytes", 4096),
        fragment_limit=_int(cfg, "fragment_limit", 1),
        fsync=fsync,
        index_every_bytes=_int(cfg, "index_every_bytes", 1),
        max_frames=_int(cfg, "limit.frames", 0, nullable=True),
        max_seconds=None if seconds is None else float(seconds),
        stats_file=None if stats_file is None else str(stats_file),
    )


class Recorder:
    """Polls one subscription fragment by fragment into a ``CaptureWriter``."""

    def __init__(
        self,
        writer: CaptureWriter,
        subscription: pyaeron.Subscription,
        fragment_limit: int,
        idle: pyaeron.IdleStrategy,
        ends: ImageEnds | None = None,
    ) -> None:
        self.writer = writer
        self.ends = ends  # the subscription's image handlers feed it
        self.subscription = subscription
        self.fragment_limit = fragment_limit
        self.idle = idle
        self.stopped = False
        # pyaeron keeps a fragment assembler per handler object: one bound method, always.
        self._handler = self._on_fragment
        self._append = writer.append

    def _on_fragment(self, buffer: pyaeron.BufferView, header: pyaeron.Header) -> None:
        self._append(
            buffer,
            received_ns=time.time_ns(),
            position=header.position,
            initial_term_id=header.initial_term_id,
            frame_length=header.frame_length,
            flags=header.flags,
            term_offset=header.term_offset,
            session_id=header.session_id,
            stream_id=header.stream_id,
            term_id=header.term_id,
            reserved_value=header.reserved_value,
        )

    def _record_ends(self) -> None:
        """An end-of-stream record for each session that ended, after its last fragment."""
        if self.ends is None:
            return
        stream = self.subscription.stream_id
        for session, position in self.ends.poll(self.subscription):
            self.writer.append_end(
                received_ns=time.time_ns(), position=position, session_id=session, stream_id=stream
            )

    def stop(self) -> None:
        self.stopped = True

    def run(self, max_frames: int | None = None, max_seconds: float | None = None) -> None:
        """Record until ``stop()``, ``max_frames`` fragments or ``max_seconds``; flush often."""
        writer, poll, handler = self.writer, self.subscription.poll, self._handler
        now = time.monotonic()
        deadline = None if max_seconds is None else now + max_seconds
        last_flush = now
        while not self.stopped:
            limit = self.fragment_limit
            if max_frames is not None:
                limit = min(limit, max_frames - writer.counters.records)
                if limit <= 0:
                    break
            work = poll(handler, limit, assemble=False)
            self._record_ends()
            now = time.monotonic()
            if writer.dirty and (work == 0 or now - last_flush >= FLUSH_INTERVAL_S):
                writer.flush()
                last_flush = now
            if deadline is not None and now >= deadline:
                break
            self.idle.idle(work)
        writer.flush()


def capture(cfg: DictConfig) -> int:
    options = options_from(cfg)
    aeron_options = build(cfg.aeron, "aeron")
    started = time.monotonic()
    with AeronConnection(aeron_options) as connection:
        # Subscribed before the writer opens: a new capture directory gets its first
        # segment only once nothing a publisher sends from then on can be missed (a
        # supervisor or a test may wait for it before starting publishers).
        ends = ImageEnds()
        try:
            subscription = connection.client.add_subscription(
                options.channel,
                options.stream,
                available_image=ends.available,
                unavailable_image=ends.unavailable,
            )
        except pyaeron.AeronError as error:
            raise SourceError(
                f"cannot subscribe to {options.channel} stream {options.stream}: {error_line(error)}"
            ) from error
        try:
            with CaptureWriter(
                options.out,
                options.segment_bytes,
                options.fsync,
                options.index_every_bytes,
                channel=options.channel,
                stream_id=options.stream,
            ) as writer:
                return _record(options, writer, subscription, ends, aeron_options, started)
        except OSError as error:  # a full disk, a removed directory: at a write or a close
            raise SourceError(
                f"out={options.out}: cannot write the capture ({error.strerror or error}); "
                "recording stopped"
            ) from None


def _record(
    options: CaptureOptions,
    writer: CaptureWriter,
    subscription: pyaeron.Subscription,
    ends: ImageEnds,
    aeron_options: Any,
    started: float,
) -> int:
    """Record until stopped; the stats as JSON on stdout (and in ``stats_file``)."""
    for note in writer.recovery.notes:
        print(f"telepipe capture: {options.out}: {note}", file=sys.stderr)
    recorder = Recorder(
        writer, subscription, options.fragment_limit, idle_strategy(aeron_options), ends
    )

    def stop(_signum: int, _frame: object) -> None:
        recorder.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(
        f"telepipe capture: recording {options.channel} stream {options.stream} into {options.out}",
        file=sys.stderr,
        flush=True,
    )
    try:
        recorder.run(options.max_frames, options.max_seconds)
    except pyaeron.AeronError as error:  # e.g. the driver went away
        raise SourceError(
            f"recording {options.channel} stream {options.stream}: {error_line(error)}"
        ) from None
    except OSError as error:  # a full disk, a removed directory
        raise SourceError(
            f"out={options.out}: cannot write the capture ({error.strerror or error}); "
            "recording stopped"
        ) from None
    finally:
        subscription.close()
        with contextlib.suppress(OSError):  # (the error above already says it)
            writer.flush()
        stats = {
            "frames": writer.counters.records,
            "bytes": writer.counters.payload_bytes,
            "record_bytes": writer.counters.record_bytes,
            "segments": writer.segments(),
            "segments_created": writer.counters.segments_created,
            "elapsed_s": round(time.monotonic() - started, 3),
            "recovered": asdict(writer.recovery),
        }
        if options.stats_file:
            Path(options.stats_file).write_text(json.dumps(stats))
    print(json.dumps(stats))
    return 0


def main(argv: list[str] | None = None) -> int:
    from telepipe.config import load

    overrides = sys.argv[1:] if argv is None else argv
    bad = [o for o in overrides if "=" not in o]
    try:
        if bad:
            raise ConfigError(f"{bad[0]!r} is not an override: use KEY=VALUE (for example out=DIR)")
        return capture(load(overrides, config_name="capture"))
    except ConfigError as error:
        print(f"telepipe: error: {error}", file=sys.stderr)
        return 2
    except TelepipeError as error:
        print(f"telepipe: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
