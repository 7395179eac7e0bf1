"""The Python API: what ``telepipe run`` and ``telepipe replay`` do, from a notebook.

    import telepipe

    pipeline = telepipe.load("demo", overrides=["pipeline.outputs.alarms.alarm.threshold=70"])
    result = pipeline.run(readings=df)          # a polars/pandas DataFrame, Arrow, .parquet, .csv
    result["alarms"]                            # a polars DataFrame
    result.stats.late                           # the run's RunStats

Every call composes the config as the CLI does (``telepipe.config.load``), plans the
run with the same ``configure``/``recovered`` and runs it with the same ``Runner``;
only the source (a table: ``sources.table``) and the sink (``sinks.memory``) may be
kinds the CLI does not pick. With ``sink="memory"`` (the default without
``data_dir=``) nothing is written to disk and every run starts from the beginning of
its input; with ``data_dir=`` a run resumes that data dir exactly, as a replay does,
and the result holds the tables as they are on disk. The same input gives the same
tables either way. A run is quiet unless ``progress=True`` (the live stats table).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import polars as pl
import pyarrow as pa
from omegaconf import DictConfig, OmegaConf

from telepipe import signals
from telepipe.errors import ConfigError
from telepipe.stats import RunStats

__all__ = ["Pipeline", "Result", "load"]

Readings = Any  # a polars/pandas DataFrame, a pyarrow Table, or a .parquet/.csv path


@dataclass(frozen=True)
class Result:
    """What a run committed: every table as a polars DataFrame, and the run's stats."""

    tables: dict[str, pl.DataFrame]
    stats: RunStats
    data_dir: Path | None = None  # None: the memory sink (nothing on disk)

    def __getitem__(self, table: str) -> pl.DataFrame:
        try:
            return self.tables[table]
        except KeyError:
            raise KeyError(f"no table {table!r}; tables: {', '.join(self.tables)}") from None

    def __repr__(self) -> str:
        rows = ", ".join(f"{t} {len(df):,}" for t, df in self.tables.items())
        where = f"data_dir={self.data_dir}" if self.data_dir else "in memory"
        return f"<Result {where}: {rows}; {self.stats.received:,} readings read>"


def load(pipeline: str | os.PathLike[str] = "demo", overrides: Sequence[str] = ()) -> Pipeline:
    """A pipeline by name (``conf/pipeline/<name>.yaml``) or by the path of its YAML
    file, with Hydra overrides (``key=value``) as on the command line."""
    loaded = Pipeline(str(pipeline), tuple(overrides))
    loaded.config()  # a bad name, path or override fails here, in one line
    return loaded


@dataclass(frozen=True)
class Pipeline:
    """A pipeline and its overrides; each call composes its config afresh."""

    pipeline: str
    overrides: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return str(self.config().pipeline.name)

    def config(self, extra: Sequence[str] = ()) -> DictConfig:
        """The composed config (with ``extra`` overrides after the pipeline's own)."""
        return _compose(self.pipeline, [*self.overrides, *extra])

    def run(
        self,
        readings: Readings,
        *,
        columns: Mapping[str, str] | None = None,
        sink: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        batch_rows: int = 65_536,
        overrides: Sequence[str] = (),
        progress: bool = False,
    ) -> Result:
        """Run the pipeline over a table of readings (columns ``sensor_id, ts, value,
        quality``; ``columns={"yours": "sensor_id", ...}`` renames others)."""
        from telepipe.pipelines.assembly import Opens
        from telepipe.pipelines.registry import source_kind
        from telepipe.sources.table import TableSourceOptions, as_readings

        table = as_readings(readings, columns)
        origin = _origin(readings, table, hashed=data_dir is not None)

        def source(plan_source: Any) -> Opens[Any]:
            live = plan_source.options
            options = TableSourceOptions(
                table, live.decoder_options(), int(live.stream_id), batch_rows
            )
            return Opens(source_kind(options), options)

        return self._execute(origin, sink, data_dir, overrides, progress, source)

    def replay(
        self,
        input: str | os.PathLike[str],
        *,
        sink: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        overrides: Sequence[str] = (),
        progress: bool = False,
    ) -> Result:
        """Run the pipeline over a recorded input: a telepipe capture, a pcap/pcapng
        file or an Aeron Archive (``telepipe replay input=...``)."""
        from telepipe.errors import SourceError
        from telepipe.sources.replay import input_kind

        try:
            input_kind(str(input))
        except SourceError as error:
            raise ConfigError(f"input={input}: {error}") from None
        return self._execute(str(input), sink, data_dir, overrides, progress)

    def simulate(
        self,
        readings: int = 100_000,
        *,
        sink: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        overrides: Sequence[str] = (),
        progress: bool = False,
    ) -> Result:
        """Run the pipeline live on the simulator (over Aeron, as ``telepipe run``) until
        ``readings`` were read."""
        if isinstance(readings, bool) or not isinstance(readings, int) or readings < 1:
            raise ConfigError(f"readings must be an integer >= 1, got {readings!r}")
        extra = ["simulator=default", f"limit.readings={readings}", *overrides]
        return self._execute(None, sink, data_dir, extra, progress)

    def _execute(
        self,
        input_path: str | None,
        sink: str | None,
        data_dir: str | os.PathLike[str] | None,
        overrides: Sequence[str],
        progress: bool,
        source: Any = None,
    ) -> Result:
        from telepipe.pipelines.assembly import Opens, configure
        from telepipe.pipelines.registry import sink_kind
        from telepipe.sinks.memory import MemorySinkOptions, MemoryStore

        memory = sink == "memory" or (sink is None and data_dir is None)
        if memory and data_dir is not None:
            raise ConfigError("sink='memory' writes nothing to disk: leave out data_dir=")
        extra = [*overrides, f"ui={'always' if progress else 'never'}"]
        if sink is not None and not memory:
            extra.append(f"sink={sink}")
        if data_dir is not None:
            extra.append(f"data_dir={Path(data_dir).resolve()}")
        cfg = self.config(extra)
        all_overrides = [*self.overrides, *extra]
        plan = configure(cfg, all_overrides, input_path)
        store = None
        if memory:
            store = MemoryStore()
            options = MemorySinkOptions(store=store)
            plan = dataclasses.replace(plan, sink=Opens(sink_kind(options), options))
        if source is not None:
            plan = dataclasses.replace(plan, source=source(plan.source))
        stats = _run(plan)
        if store is not None:
            tables = {name: pl.from_arrow(store.table(name)) for name in plan.tables}
            return Result(_frames(tables), stats)
        return Result(_read_tables(plan.data_dir, plan.tables), stats, plan.data_dir)


def _run(plan: Any) -> RunStats:
    """``configure``'d plan -> stats, as ``pipelines.runner.run``: held data dir (a sink
    that writes nothing there takes no lock and makes no directory), ``recovered``,
    ``Runner`` (none for an input already committed to its end); the signal handlers
    the runner installs are put back after it."""
    from rich.console import Console

    from telepipe.pipelines.assembly import recovered
    from telepipe.pipelines.runner import Runner
    from telepipe.sinks import data_dir_lock

    hold: contextlib.AbstractContextManager[None] = (
        data_dir_lock.hold(plan.data_dir, "a second run or replay")
        if plan.sink.kind.data_dir
        else contextlib.nullcontext()
    )
    with _handlers_kept(), _without_running_line(), hold:
        planned = recovered(plan)
        if planned.ended_at is not None:  # as `telepipe replay` says: nothing to read
            return RunStats(
                data_dir=str(planned.data_dir),
                input=planned.origin,
                exit_reason=f"already committed up to checkpoint {planned.ended_at} (its end)",
                resumed_from=planned.ended_at,
                final_checkpoint=planned.ended_at,
            )
        return Runner(planned, Console(stderr=False)).run()


@contextlib.contextmanager
def _handlers_kept() -> Iterator[None]:
    """The caller's SIGINT/SIGTERM handlers (a notebook's KeyboardInterrupt) back after
    the run, whose own handlers take a savepoint on a signal."""
    saved = {signum: signal.getsignal(signum) for signum in signals.STOPS}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


class _Filtered(io.TextIOBase):
    """stderr without the runner's "running:" line (for supervisors, not notebooks)."""

    def __init__(self, target: TextIO) -> None:
        self.target = target
        self._dropping = False

    def write(self, text: str) -> int:
        if text.startswith("telepipe: running:"):
            self._dropping = True
        if not self._dropping:
            self.target.write(text)
        if "\n" in text:  # (print writes the line's end apart)
            self._dropping = False
        return len(text)

    def flush(self) -> None:
        self.target.flush()


@contextlib.contextmanager
def _without_running_line() -> Iterator[None]:
    with contextlib.redirect_stderr(_Filtered(sys.stderr)):
        yield


def _origin(readings: Readings, table: pa.Table, hashed: bool) -> str:
    """What the input is, as commits record it: a file's path, else the table's content
    (a digest, only when something records it: a data dir resumes only the same one)."""
    if isinstance(readings, str | Path):
        return str(Path(readings).resolve())
    if not hashed:
        return "table://memory"
    digest = hashlib.sha256()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    digest.update(sink.getvalue().to_pybytes())
    return f"table://sha256-{digest.hexdigest()[:32]}"


def _frames(tables: dict[str, Any]) -> dict[str, pl.DataFrame]:
    out: dict[str, pl.DataFrame] = {}
    for name, frame in tables.items():
        assert isinstance(frame, pl.DataFrame)
        out[name] = frame
    return out


def _read_tables(data_dir: Path, tables: Mapping[str, pa.Schema | None]) -> dict[str, pl.DataFrame]:
    """Every table as committed in ``data_dir`` (Delta), empty where none was made."""
    from deltalake import DeltaTable

    frames: dict[str, Any] = {}
    for name, schema in tables.items():
        path = data_dir / name
        if (path / "_delta_log").is_dir():
            stored = DeltaTable(str(path)).to_pyarrow_table()
            frames[name] = pl.from_arrow(_from_delta(stored, schema))
        else:
            frames[name] = pl.from_arrow((schema or pa.schema([])).empty_table())
    return _frames(frames)


def _from_delta(stored: pa.Table, schema: pa.Schema | None) -> pa.Table:
    """A Delta table's rows with the columns the pipeline made (``sinks.delta_types``
    in reverse): ``c`` from its exact ``c_ns``, unsigned integers narrowed back."""
    if schema is None:
        schema = pa.schema(
            pa.field(f.name, pa.timestamp("ns", f.type.tz))
            if pa.types.is_timestamp(f.type) and f"{f.name}_ns" in stored.column_names
            else f
            for f in stored.schema
            if not (f.name.endswith("_ns") and f.name[:-3] in stored.column_names)
        )
    columns = []
    for f in schema:
        exact = f"{f.name}_ns"
        if pa.types.is_timestamp(f.type) and exact in stored.column_names:
            columns.append(stored.column(exact).cast(f.type))
        else:
            columns.append(stored.column(f.name).cast(f.type))
    return pa.Table.from_arrays(columns, schema=schema)


# -- composing the config --------------------------------------------------------------


def _is_path(pipeline: str) -> bool:
    return pipeline.endswith((".yaml", ".yml")) or os.sep in pipeline


def _compose(pipeline: str, overrides: list[str]) -> DictConfig:
    """``telepipe.config.load`` with ``pipeline=`` a name, or the YAML file at a path
    (composed as the demo, its ``pipeline`` node then replaced by the file's, the
    ``pipeline.*`` overrides applied to it)."""
    from telepipe.config import load as load_config

    if not _is_path(pipeline):
        return load_config([f"pipeline={pipeline}", *overrides])
    path = Path(pipeline).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"pipeline={pipeline}: no such file")
    ours = [o for o in overrides if o.split("=", 1)[0].lstrip("+~").startswith("pipeline.")]
    rest = [o for o in overrides if o not in ours]
    cfg = load_config(["pipeline=demo", *rest])
    node = _yaml(path)
    for override in ours:
        key, _, value = override.lstrip("+~").partition("=")
        try:
            OmegaConf.update(node, key.removeprefix("pipeline."), _value(value), merge=True)
        except Exception as error:
            raise ConfigError(f"bad override {override!r}: {error}") from None
    OmegaConf.set_struct(cfg, False)
    cfg.pipeline = node
    if not any(o.startswith("data_dir=") for o in overrides):
        cfg.data_dir = f"data/{node.name}"
    OmegaConf.set_struct(cfg, True)
    from telepipe.targets import check_tree

    check_tree(cfg)
    return cfg


def _yaml(path: Path) -> DictConfig:
    import yaml  # type: ignore[import-untyped]

    try:
        node = OmegaConf.load(path)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"bad YAML in {path}{where}: {problem}") from None
    if not isinstance(node, DictConfig) or "name" not in node or "outputs" not in node:
        raise ConfigError(f"pipeline={path}: must be a mapping with a name and outputs")
    return node


def _value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text) if text else None
