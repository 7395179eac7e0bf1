"""``TableSource``: readings in a table (a polars or pandas DataFrame, an Arrow table, a
Parquet or CSV file) through the same decoding as a live stream.

``as_readings`` checks and converts a table once: columns ``sensor_id, ts, value,
quality`` (``columns=`` renames others to these, as polars' ``rename``; ``quality``
may be left out: 0), every type problem named in one line. ``TableSource`` then cuts
the rows into SBE messages of one session and feeds them to the ``TelemetryDecoder``
every source shares, so a table's rows are cut late, rejected (a ``ts`` outside the
event-time range: a dead letter of its own row) and watermarked exactly as the same
readings arriving over Aeron.

A table is a recorded input: exhaustible, and resumed exactly. Its position is the
number of rows read; checkpoints fall every ``checkpoint_every_readings`` rows (never
by wall time), so a re-run into the same data dir goes on after its last checkpoint
and a run into a fresh one commits the same checkpoints, whatever ``batch_rows``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from telepipe.errors import ConfigError
from telepipe.markers import CheckpointBarrier, Item
from telepipe.sbe import SbeCodec
from telepipe.schema import TS_MAX, TS_MIN
from telepipe.sources.decoder import (
    DecoderOptions,
    DecodingSource,
    MessageBuffer,
    TelemetryDecoder,
    position_key,
)
from telepipe.sources.replay import END_OF_INPUT, Resume

#: Readings per SBE message a table is cut into: fixed, so the messages (and the late
#: readings' dead letters, one per message) do not depend on ``batch_rows``.
MESSAGE_ROWS = 256
READING_COLUMNS = ("sensor_id", "ts", "value", "quality")
_TABLE_SESSION = 0


@dataclass(frozen=True, eq=False)
class TableSourceOptions:
    """A table of readings (``as_readings``'s result) and how to decode it."""

    table: pa.Table
    decoder: DecoderOptions = field(default_factory=DecoderOptions)
    stream_id: int = 0  # the stream its dead letters name (the pipeline's source stream)
    batch_rows: int = 65_536  # rows decoded per poll (results do not depend on it)
    channel: str = "table"

    def __post_init__(self) -> None:
        if isinstance(self.batch_rows, bool) or not (
            isinstance(self.batch_rows, int) and self.batch_rows >= 1
        ):
            raise ConfigError(f"batch_rows must be an integer >= 1, got {self.batch_rows!r}")

    def decoder_options(self) -> DecoderOptions:
        return self.decoder


def read_table(readings: object, what: str = "readings") -> pa.Table:
    """An Arrow table from a polars/pandas DataFrame, an Arrow table or record batch,
    or a ``.parquet``/``.csv`` path; a one-line ConfigError for anything else."""
    if isinstance(readings, pa.Table):
        return readings
    if isinstance(readings, pa.RecordBatch):
        return pa.Table.from_batches([readings])
    if isinstance(readings, str | Path):
        return _read_file(Path(readings), what)
    module = type(readings).__module__.split(".")[0]
    if module == "polars":
        return readings.to_arrow()  # type: ignore[attr-defined]
    if module == "pandas":
        try:
            return pa.Table.from_pandas(readings, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as error:
            raise ConfigError(f"{what}: cannot convert the DataFrame: {_first(error)}") from None
    if hasattr(readings, "__arrow_c_stream__"):
        return pa.table(readings)
    raise ConfigError(
        f"{what}: expected a polars or pandas DataFrame, a pyarrow Table, or a path to a "
        f".parquet or .csv file, got {type(readings).__name__}"
    )


def _read_file(path: Path, what: str) -> pa.Table:
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv"):
        raise ConfigError(f"{what}={path}: expected a .parquet or .csv file")
    if not path.is_file():
        raise ConfigError(f"{what}={path}: no such file")
    try:
        if suffix == ".csv":
            import pyarrow.csv as csv

            return csv.read_csv(path)
        import pyarrow.parquet as pq

        return pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise ConfigError(f"{what}={path}: cannot read it: {_first(error)}") from None


def as_readings(
    readings: object, columns: Mapping[str, str] | None = None, what: str = "readings"
) -> pa.Table:
    """The table as ``sensor_id:int32, ts:timestamp[ns], value:float64, quality:uint8``.

    ``columns`` renames the table's columns (``{"tag": "sensor_id", "time": "ts"}``);
    other columns are left out. Integers are checked to fit, ``ts`` is a timestamp (any
    unit; with a time zone: UTC) or integer nanoseconds since the epoch, a null
    ``value`` is NaN. Every problem is named in one line (a ConfigError).
    """
    table = read_table(readings, what)
    mapping = dict(columns or {})
    unknown = [name for name in mapping if name not in table.column_names]
    if unknown:
        raise ConfigError(
            f"{what}: columns={mapping} names {unknown}, not in the table "
            f"(its columns: {table.column_names})"
        )
    bad_targets = sorted(set(mapping.values()) - set(READING_COLUMNS))
    if bad_targets:
        raise ConfigError(
            f"{what}: columns= maps to {bad_targets}; a reading's columns are "
            f"{list(READING_COLUMNS)}"
        )
    table = table.rename_columns([mapping.get(n, n) for n in table.column_names])
    names = table.column_names
    duplicated = sorted({n for n in names if n in READING_COLUMNS and names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"{what}: more than one column named {duplicated} (after columns=)")
    missing = [c for c in READING_COLUMNS[:3] if c not in names]
    if missing:
        hint = " (map other names with columns={'yours': 'sensor_id', ...})"
        raise ConfigError(f"{what}: columns missing {missing}; it has {names}{hint}")
    if table.num_rows == 0:
        raise ConfigError(f"{what}: the table has no rows")
    converted: dict[str, pa.ChunkedArray] = {}
    problems: list[str] = []
    for name in READING_COLUMNS:
        if name not in names:
            converted[name] = pa.chunked_array([np.zeros(table.num_rows, np.uint8)])
            continue
        array, problem = _convert(name, table.column(name))
        if problem:
            problems.append(f"{name} {problem}")
        else:
            converted[name] = array
    if problems:
        raise ConfigError(f"{what}: column " + "; column ".join(problems))
    return pa.table(converted).combine_chunks()


_TARGETS = {
    "sensor_id": pa.int32(),
    "ts": pa.timestamp("ns"),
    "value": pa.float64(),
    "quality": pa.uint8(),
}


def _convert(name: str, column: pa.ChunkedArray) -> tuple[pa.ChunkedArray, str]:
    """(the column as its reading type, "") or (column, what is wrong with it)."""
    typ, target = column.type, _TARGETS[name]
    if name == "value":
        if not (pa.types.is_floating(typ) or pa.types.is_integer(typ)):
            return column, f"must be numeric, got {typ}"
        column = pc.fill_null(column.cast(pa.float64()), float("nan"))
    elif name == "ts":
        if not (pa.types.is_timestamp(typ) or pa.types.is_integer(typ)):
            return column, f"must be a timestamp or integer ns since the epoch, got {typ}"
        try:  # a ts beyond the event-time range is a dead letter later, not an error
            if pa.types.is_timestamp(typ):  # (with a time zone: as UTC)
                column = column.cast(pa.timestamp(typ.unit)).cast(target)
            else:
                column = column.cast(pa.int64()).cast(target)
        except pa.ArrowInvalid:
            return column, f"holds times beyond int64 nanoseconds ({typ})"
    elif not pa.types.is_integer(typ):
        return column, f"must be an integer ({target}), got {typ}"
    if column.null_count:
        first = pc.index(pc.is_null(column), True).as_py()
        return column, f"has {column.null_count} null(s) (first at row {first})"
    if name in ("sensor_id", "quality"):
        try:
            column = column.cast(target)  # safe: refuses values that do not fit
        except pa.ArrowInvalid:
            lo, hi = pc.min(column).as_py(), pc.max(column).as_py()
            return column, f"must fit {target}, got values in [{lo}, {hi}]"
    return column, ""


def _first(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class TableSource(DecodingSource):
    """Pulls a table's rows, ``batch_rows`` per poll, as one session's messages."""

    def __init__(
        self, options: TableSourceOptions, codec: SbeCodec, resume: Resume | None = None
    ) -> None:
        self.options = options
        self.decoder = TelemetryDecoder(codec, options.decoder)
        self.decoder.auto_checkpoints = False  # by rows, here: never by wall time
        self.exhausted = False
        self._codec = codec
        self._key = (options.stream_id, _TABLE_SESSION)
        table = options.table
        self._columns = {
            name: table.column(name).to_numpy() for name in codec.entry_dtype.names or ()
        }
        self._total = table.num_rows
        self._every = options.decoder.checkpoint_every_readings
        self._at = 0  # rows read
        self._inject: list[tuple[int, int]] = []  # re-cut barriers: (id, position)
        self._final: int | None = None
        self._messages = MessageBuffer()
        if resume is not None:
            self._resume(resume)
        self._ends = self._cuts()
        self._next_message = 0

    def _resume(self, resume: Resume) -> None:
        """Go on after a checkpoint: skip the rows it covers, re-cut the later ones at
        the positions the tables recorded (the same as this run's, unless
        ``checkpoint_every_readings`` changed)."""
        if resume.decoder_state is not None:
            self.decoder.restore(resume.decoder_state)
        name = position_key(self._key)
        self._at = int(resume.positions.get(name, 0))
        self._final = resume.final if resume.final in resume.barriers else None
        self._inject = sorted(
            (k, int(positions.get(name, 0)))
            for k, positions in resume.barriers.items()
            if k != self._final
        )

    def _cuts(self) -> np.ndarray:
        """Where each message ends (rows before it), from the resume point: every
        ``MESSAGE_ROWS``, at every checkpoint, and around every row whose ``ts`` is out
        of range (the decoder rejects such a message whole: it holds that row alone)."""
        start, total = self._at, self._total
        ts = self._columns["ts"].view(np.int64)
        bad = np.flatnonzero((ts < TS_MIN) | (ts >= TS_MAX))
        points = np.concatenate(
            [
                np.arange(0, total, MESSAGE_ROWS),
                np.arange(0, total, self._every),
                bad,
                bad + 1,
                [p for _, p in self._inject],
                [total],
            ]
        ).astype(np.int64)
        return np.unique(points[(points > start) & (points <= total)])

    @property
    def recovering(self) -> bool:
        return bool(self._inject) or self._final is not None

    def poll(self) -> list[Item]:
        if self.exhausted:
            return []
        if self._inject and self._inject[0][1] <= self._at:  # due at the resume point
            return [*self.decoder.decode(self._messages), self._barrier()]
        ends, n, first = self._ends, len(self._ends), self._next_message
        start, due, i = self._at, False, first
        while i < n:
            end = int(ends[i])
            i += 1
            if self._barrier_at(end):
                due = True
                break
            if end - start >= self.options.batch_rows:
                break
        if i > first:
            self._add(first, i)
        self._next_message = i
        items = self.decoder.decode(self._messages)
        if due:
            items.append(self._barrier())
        if i == n:
            self.exhausted = True
            while self._inject:  # (recorded past this table's end: all of them here)
                items.append(self._barrier())
        return items

    def _add(self, first: int, last: int) -> None:
        """Messages ``[first, last)`` of the cut, encoded at once, into the buffer."""
        start = self._at
        ends = self._ends[first:last]
        counts = np.diff(np.concatenate([[start], ends]))
        columns = {name: values[start : int(ends[-1])] for name, values in self._columns.items()}
        columns["ts"] = columns["ts"].view(np.int64)
        roots = np.zeros(len(counts), self._codec.root_dtype)
        roots["batch_seq"] = ends  # (as a publisher numbers its messages)
        payloads = self._codec.encode_groups(columns, roots, counts)
        stream, session = self._key
        for payload, end in zip(payloads, ends.tolist(), strict=True):
            self._messages.add(payload, stream, session, end)
        self._at = int(ends[-1])

    def _barrier_at(self, position: int) -> bool:
        if self._inject:
            return self._inject[0][1] == position
        return self._final is None and position % self._every == 0

    def _barrier(self) -> CheckpointBarrier:
        if self._inject:
            checkpoint_id, _ = self._inject.pop(0)
            return self.decoder.checkpoint(checkpoint_id)
        return self.decoder.checkpoint()

    def checkpoint(self) -> CheckpointBarrier:
        """The runner's last barrier. At the end of the table it comes after the flush,
        marked ``END_OF_INPUT``: a restart takes it again there, with the same id."""
        if not self.exhausted:
            return self.decoder.checkpoint()
        final, self._final = self._final, None
        barrier = self.decoder.checkpoint(final)
        decoder = barrier.state.get("decoder")
        if isinstance(decoder, dict):
            barrier = barrier.with_state("decoder", {**decoder, END_OF_INPUT: True})
        return barrier

    def progress(self) -> tuple[int, int | None]:
        return self._at, self._total

    def close(self) -> None:
        """Nothing to release: the table is the caller's."""
