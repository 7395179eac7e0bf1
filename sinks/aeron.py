"""``AeronSink``: a pipeline's outputs (alarms, windows) published as SBE over Aeron.

The writer thread offers each message; while Aeron answers BACK_PRESSURED it
idles and retries, so the sink's bounded queue fills and its policy applies
upstream (``block`` stalls the flow back to the source; the drop policies drop
whole batches and count them; ``fail`` stops the run). With no subscriber
connected, ``wait_for_subscriber`` decides: wait (up to ``connect_timeout_s``,
then fail) or drop the message and count it, as live Aeron would.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pyaeron
import pyarrow as pa

from telepipe.aeron import AeronConnection, error_line, idle_strategy, is_channel
from telepipe.boundary import BoundaryOptions
from telepipe.errors import ConfigError, SinkError
from telepipe.markers import CheckpointBarrier
from telepipe.sbe import SbeCodec
from telepipe.sinks.queued import QueuedSink


@dataclass(frozen=True)
class AeronSinkOptions:
    channel: str = "aeron:ipc"
    stream_id: int = 2001
    schema: str = "alarms.xml"  # an SBE XML file, relative to conf/schema/ unless absolute
    message: str = "AlarmBatch"
    source_id: int = 1
    rows_per_message: int = 1024
    wait_for_subscriber: bool = False
    connect_timeout_s: float = 10.0
    queue: BoundaryOptions = field(default_factory=BoundaryOptions)

    def __post_init__(self) -> None:
        if not is_channel(self.channel):
            raise ConfigError(f"publish: channel must be an Aeron URI, got {self.channel!r}")
        if not 1 <= self.rows_per_message <= 65535:
            raise ConfigError(
                f"publish: rows_per_message must be in 1..65535, got {self.rows_per_message}"
            )
        if self.connect_timeout_s <= 0:
            raise ConfigError(
                f"publish: connect_timeout_s must be > 0, got {self.connect_timeout_s}"
            )
        if isinstance(self.queue, dict):
            object.__setattr__(self, "queue", BoundaryOptions(**self.queue))

    def codec(self) -> SbeCodec:
        from telepipe.config import conf_dir

        path = (
            self.schema if self.schema.startswith("/") else str(conf_dir() / "schema" / self.schema)
        )
        return SbeCodec.from_xml(path, self.message)


@dataclass
class PublishCounters:
    messages: int = 0
    rows: int = 0
    backpressured_offers: int = 0
    not_connected_drops: int = 0


class AeronSink(QueuedSink):
    """Publishes the batches of one flow (``table``) on an Aeron stream."""

    kind = "Aeron sink"

    def __init__(self, options: AeronSinkOptions, table: str, connection: AeronConnection) -> None:
        super().__init__([table], options.queue)
        self.options = options
        self.codec = options.codec()
        self.counters = PublishCounters()
        self.idle = idle_strategy(connection.options)
        self._seq = 0
        try:
            self.publication = connection.client.add_publication(options.channel, options.stream_id)
        except pyaeron.AeronError as error:
            raise SinkError(
                f"cannot publish on {options.channel} stream {options.stream_id}: {error_line(error)}"
            ) from error
        # A message may not exceed the publication's max (term length / 8): cut to fit.
        codec = self.codec
        fixed = codec.header_dtype.itemsize + codec.root_dtype.itemsize
        fixed += codec.group_header_dtype.itemsize
        fit = (self.publication.max_message_length - fixed) // codec.entry_dtype.itemsize
        self.rows_per_message = max(1, min(options.rows_per_message, fit))

    def on_rows(self, table: str, batch: pa.RecordBatch) -> None:
        if batch.schema != self.codec.arrow_schema:
            batch = batch.select(self.codec.arrow_schema.names).cast(self.codec.arrow_schema)
        step = self.rows_per_message
        for start in range(0, batch.num_rows, step):
            part = batch.slice(start, step)
            columns = {
                name: part.column(name).to_numpy(zero_copy_only=False)
                for name in self.codec.arrow_schema.names
            }
            payload = self.codec.encode(
                columns, source_id=self.options.source_id, batch_seq=self._seq
            )
            if self._offer(payload):
                self._seq += 1
                self.counters.messages += 1
                self.counters.rows += part.num_rows

    def _offer(self, payload: bytes) -> bool:
        o, c = self.options, self.counters
        alone_since: float | None = None
        while not self._aborted:
            result = self.publication.offer(payload)
            if result is True:
                self.idle.reset()
                return True
            if result == pyaeron.BACK_PRESSURED or result == pyaeron.ADMIN_ACTION:
                c.backpressured_offers += result == pyaeron.BACK_PRESSURED
            else:  # NOT_CONNECTED
                if not o.wait_for_subscriber:
                    c.not_connected_drops += 1
                    return False
                now = time.monotonic()
                alone_since = alone_since or now
                if now - alone_since > o.connect_timeout_s:
                    raise SinkError(
                        f"no subscriber on {o.channel} stream {o.stream_id} for {o.connect_timeout_s} s"
                    )
            self.idle.idle(0)
        return False

    def on_barrier(self, table: str, barrier: CheckpointBarrier) -> None:
        """Nothing to commit: a published message is out once offer returned True."""

    def committed(self) -> dict[str, int]:
        """Rows published (their messages' offers returned True)."""
        return dict.fromkeys(self.table_names, self.counters.rows)

    def on_end(self, table: str) -> None:
        """The publication stays open until ``close_publication``."""

    def on_stop(self) -> None:
        if not self.publication.is_closed:
            self.publication.close()
