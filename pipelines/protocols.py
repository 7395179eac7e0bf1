"""What a run asks of its source and its sinks: the protocols every registered kind meets.

A capability that only some kinds have is still a member here, with a neutral
answer in the shared bases (``DecodingSource``, ``QueuedSink``): a recorded input
is not ``live``, a live stream has no ``damage``, a sink whose store refuses no
rows has no dead letters to hand over, ``stop()`` on a source that waits for
nothing does nothing. The runner asks; it never probes with ``getattr``.
``pipelines.registry`` checks the built-in kinds against these with mypy.
"""

from __future__ import annotations

from typing import Protocol, Self

import pyarrow as pa
from reactivex import Observer

from telepipe.boundary import BoundaryCounters
from telepipe.dead_letters import DeadLetter
from telepipe.markers import CheckpointBarrier, Item
from telepipe.sources.decoder import DecoderOptions, SourceCounters


class SourceOptions(Protocol):
    """What a ``source:`` config builds: the stream a run reads and how to decode it.

    A replay decodes its recorded input with the same ``decoder_options()``; the
    recorder of ``capture_dir=`` subscribes to ``channel`` and ``stream_id``.
    """

    @property
    def channel(self) -> str: ...

    @property
    def stream_id(self) -> int: ...

    def decoder_options(self) -> DecoderOptions: ...


class PulledSource(Protocol):
    """A source the runner polls, only when the flow took everything it gave before."""

    @property
    def live(self) -> bool:
        """A live stream: it never ends by itself and a restart cannot replay it."""
        ...

    @property
    def exhausted(self) -> bool:
        """A recorded input read to its end (a live stream: never)."""
        ...

    @property
    def counters(self) -> SourceCounters: ...

    @property
    def gaps(self) -> int:
        """Gaps found in the input's positions so far (a live stream: 0)."""
        ...

    @property
    def damage(self) -> dict[str, int]:
        """What of a recorded input could not be read, by kind (none: empty)."""
        ...

    @property
    def recovering(self) -> bool:
        """Still re-cutting the checkpoints a crashed replay committed to some tables
        only: a savepoint now would take one of their ids at other positions."""
        ...

    def poll(self) -> list[Item]:
        """The flow items of one poll (possibly none); never blocks for long."""
        ...

    def checkpoint(self) -> CheckpointBarrier:
        """A barrier at the current positions, carrying the decoder's state."""
        ...

    def take_late(self) -> list[pa.RecordBatch]:
        """Rows the source found behind its watermark since the last call."""
        ...

    def take_dead_letters(self) -> list[DeadLetter]:
        """Messages the source could not decode since the last call."""
        ...

    def progress(self) -> tuple[int, int | None]:
        """(bytes read, total bytes if known): a replay's progress bar."""
        ...

    def stop(self) -> None:
        """Stop waiting for more input (a followed capture); nothing otherwise. Called
        from a signal handler."""
        ...

    def close(self) -> None: ...


class Sink(Protocol):
    """Tables written behind a bounded queue and committed at checkpoint barriers.

    ``pipeline.publish`` outputs are sinks too (one table each).
    """

    @property
    def table_names(self) -> list[str]: ...

    @property
    def queue_counters(self) -> BoundaryCounters:
        """The depth, peak depth and time blocked of the sink's queue."""
        ...

    def start(self) -> Self: ...

    def observer(self, table: str) -> Observer[Item]:
        """An Rx observer feeding ``table``; ``on_next`` blocks while the queue is full."""
        ...

    def write(self, table: str, batch: pa.RecordBatch) -> None: ...

    def barrier(self, table: str, barrier: CheckpointBarrier) -> None: ...

    def close(self, table: str) -> None:
        """No more items for ``table``: what it holds is written (no barrier: no checkpoint)."""
        ...

    def join(self, timeout: float | None = None) -> None:
        """Wait for every table to be closed and written; raises what the writer raised."""
        ...

    def abort(self, timeout: float = 30.0) -> None:
        """Stop after the write in progress; what was not written is discarded."""
        ...

    def committed(self) -> dict[str, int]:
        """Rows written (committed, or published) so far, by table."""
        ...

    def dropped(self) -> dict[str, int]:
        """Rows the queue's policy dropped, by table."""
        ...

    def take_dead_letters(self) -> list[DeadLetter]:
        """Rows the store refused since the last call (Kudu's per-row errors)."""
        ...
