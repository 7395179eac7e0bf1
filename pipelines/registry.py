"""Which source and which sinks a run opens: registries keyed by the options type.

A config's ``source:``, ``sink:`` and each ``pipeline.publish.<table>`` build an
options dataclass from their ``_target_``; the type of that value picks the kind
that opens it, so the runner never tests a class or its name:

    AeronSourceOptions  -> SourceKind "aeron"   (a live Aeron subscription)
    DeltaSinkOptions    -> SinkKind "delta"     (keeps checkpoints: a restart recovers)
    KuduSinkOptions     -> SinkKind "kudu"      (upserts; no checkpoints to recover)
    MemorySinkOptions   -> SinkKind "memory"    (Arrow in process; no data dir at all)
    TableSourceOptions  -> SourceKind "table"   (a DataFrame/Arrow/Parquet/CSV of readings)
    AeronSinkOptions    -> SinkKind "aeron"     (publishes one output as SBE)

A recorded input (``telepipe replay input=...``) is read by ``RECORDED`` whatever
the live source is: its decoder takes the live source's ``decoder_options()``.

A plugin adds a kind in one of two ways, and registers its options class in the
entry-point group ``telepipe.targets`` (one entry point per object) so that YAML
may name it:

- ``register_source(SourceKind(...))`` / ``register_sink(SinkKind(...))`` when its
  options' module is imported (Hydra imports it to build the options), or
- an entry point in the group ``telepipe.sources`` / ``telepipe.sinks`` whose object
  is the ``SourceKind`` / ``SinkKind``, loaded when a type is not found otherwise::

      [project.entry-points."telepipe.targets"]
      ParquetSinkOptions = "mypkg.sink:ParquetSinkOptions"
      [project.entry-points."telepipe.sinks"]
      parquet = "mypkg.sink:PARQUET"   # SinkKind("parquet", ParquetSinkOptions, open_parquet)
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from omegaconf import DictConfig, OmegaConf

from telepipe.aeron import AeronConnection
from telepipe.errors import ConfigError
from telepipe.pipelines.protocols import PulledSource, Sink, SourceOptions
from telepipe.pipelines.recovery import Recovery, read_recovery
from telepipe.sbe import SbeCodec
from telepipe.sinks.aeron import AeronSink, AeronSinkOptions
from telepipe.sinks.delta import PIPELINE, PIPELINE_HASH, DeltaSink, DeltaSinkOptions
from telepipe.sinks.kudu import KuduSink, KuduSinkOptions, check_tables
from telepipe.sinks.memory import MemorySink, MemorySinkOptions
from telepipe.sources.aeron import AeronSource, AeronSourceOptions
from telepipe.sources.replay import ReplayOptions, ReplaySource
from telepipe.sources.table import TableSource, TableSourceOptions

SOURCE_GROUP = "telepipe.sources"
SINK_GROUP = "telepipe.sinks"


@dataclass(frozen=True)
class SourceContext:
    """What a source is opened with besides its options."""

    codec: SbeCodec
    connection: AeronConnection | None  # None unless the kind needs Aeron
    recovery: Recovery | None  # what a restart found in data_dir (None: a fresh start)
    input_path: str | None = None  # a recorded input (``RECORDED`` only)
    replay: ReplayOptions | None = None


@dataclass(frozen=True)
class SourceKind[O]:
    name: str
    options: type[O]
    open: Callable[[O, SourceContext], PulledSource]
    needs_aeron: bool = False
    # It reads a recorded input of its own (a table): a run over it opens this kind,
    # not ``RECORDED``, and resumes it exactly.
    recorded: bool = False


@dataclass(frozen=True)
class SinkContext:
    """What a sink is opened with besides its options."""

    tables: dict[str, pa.Schema | None]  # None: the schema comes with the first batch
    data_dir: Path
    origin: str  # "live", or the recorded input's path: every commit records it
    connection: AeronConnection | None  # None unless the kind needs Aeron
    # What writes: the pipeline's name and config hash (``pipeline_identity``), which
    # a sink that keeps commit metadata records with every commit.
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SinkKind[O]:
    name: str
    options: type[O]
    open: Callable[[O, SinkContext], Sink]
    needs_aeron: bool = False
    # Where a restart resumes, read from what the sink committed (None: it keeps no
    # checkpoints, and a restart replays the input from its beginning).
    recover: Callable[[O, Path, list[str]], Recovery | None] | None = None
    # Checks beyond the options' own (files the sink will need), for ``telepipe validate``.
    check: Callable[[O], None] | None = None
    # It writes under data_dir (a run holds the data dir's lock); False: nothing on disk.
    data_dir: bool = True
    # Checks of the tables it will write (table -> schema, None: known from the first
    # batch), run by ``assembly.configure`` before anything is opened.
    check_tables: Callable[[O, dict[str, pa.Schema | None]], None] | None = None


_SOURCES: dict[type, SourceKind[Any]] = {}
_SINKS: dict[type, SinkKind[Any]] = {}
_loaded_groups: set[str] = set()


def register_source(kind: SourceKind[Any]) -> None:
    _SOURCES[kind.options] = kind


def register_sink(kind: SinkKind[Any]) -> None:
    _SINKS[kind.options] = kind


def source_kind(options: object, path: str = "source") -> SourceKind[Any]:
    """The registered kind for these source options (a one-line ConfigError if none)."""
    return _find(_SOURCES, SOURCE_GROUP, options, path, "source")


def sink_kind(options: object, path: str = "sink") -> SinkKind[Any]:
    """The registered kind for these sink options (a one-line ConfigError if none)."""
    return _find(_SINKS, SINK_GROUP, options, path, "sink")


def _find[K](kinds: dict[type, K], group: str, options: object, path: str, what: str) -> K:
    for cls in type(options).__mro__:  # a subclass of registered options opens as its base
        if cls in kinds:
            return kinds[cls]
    if group not in _loaded_groups:
        _loaded_groups.add(group)
        for entry in importlib.metadata.entry_points(group=group):
            kind = entry.load()
            kinds[kind.options] = kind
        return _find(kinds, group, options, path, what)
    known = ", ".join(sorted(f"{c.__module__}.{c.__qualname__}" for c in kinds))
    raise ConfigError(
        f"{path}: {type(options).__module__}.{type(options).__qualname__} is not a registered "
        f"{what} (known: {known}; a plugin registers one in the entry-point group {group!r})"
    )


# -- the built-in kinds --------------------------------------------------------------


def _open_aeron_source(options: AeronSourceOptions, ctx: SourceContext) -> AeronSource:
    assert ctx.connection is not None
    source = AeronSource(options, ctx.codec, ctx.connection)
    if ctx.recovery is not None:  # a live input is not replayable: only continue the ids
        source.decoder.checkpoint(ctx.recovery.latest)
    return source


def _open_recorded(options: SourceOptions, ctx: SourceContext) -> ReplaySource:
    assert ctx.input_path is not None and ctx.replay is not None
    resume = ctx.recovery.resume if ctx.recovery is not None else None
    return ReplaySource(ctx.input_path, ctx.replay, ctx.codec, options.decoder_options(), resume)


def _open_delta(options: DeltaSinkOptions, ctx: SinkContext) -> DeltaSink:
    return DeltaSink(
        options, ctx.data_dir, ctx.tables, {**ctx.metadata, "telepipe.input": ctx.origin}
    )


def pipeline_identity(pipeline: DictConfig) -> dict[str, str]:
    """The commit metadata naming a pipeline: its name, and a hash of its composed
    config (the ``pipeline`` node, resolved): the same YAML and overrides, the same hash."""
    composed = OmegaConf.to_container(pipeline, resolve=True)
    text = json.dumps(composed, sort_keys=True, default=str, separators=(",", ":"))
    return {
        PIPELINE: str(pipeline.get("name", "")),
        PIPELINE_HASH: hashlib.sha256(text.encode()).hexdigest()[:16],
    }


def _recover_delta(options: DeltaSinkOptions, data_dir: Path, tables: list[str]) -> Recovery | None:
    return read_recovery(data_dir, tables, options.app_id)


def _open_kudu(options: KuduSinkOptions, ctx: SinkContext) -> KuduSink:
    return KuduSink(options, ctx.tables)


def _open_publisher(options: AeronSinkOptions, ctx: SinkContext) -> AeronSink:
    assert ctx.connection is not None
    (table,) = ctx.tables
    return AeronSink(options, table, ctx.connection)


def _open_table(options: TableSourceOptions, ctx: SourceContext) -> TableSource:
    resume = ctx.recovery.resume if ctx.recovery is not None else None
    return TableSource(options, ctx.codec, resume)


def _open_memory(options: MemorySinkOptions, ctx: SinkContext) -> MemorySink:
    return MemorySink(options, ctx.tables)


def _check_publisher(options: AeronSinkOptions) -> None:
    options.codec()  # its SBE schema loads and has the message


#: Reads a recorded input (a telepipe capture, pcap/pcapng, an Aeron Archive) with the
#: decoding of whatever live source the config names.
RECORDED: SourceKind[Any] = SourceKind("recorded input", object, _open_recorded)

register_source(SourceKind("aeron", AeronSourceOptions, _open_aeron_source, needs_aeron=True))
register_sink(SinkKind("delta", DeltaSinkOptions, _open_delta, recover=_recover_delta))
register_sink(SinkKind("kudu", KuduSinkOptions, _open_kudu, check_tables=check_tables))
register_sink(
    SinkKind("aeron", AeronSinkOptions, _open_publisher, needs_aeron=True, check=_check_publisher)
)
register_source(SourceKind("table", TableSourceOptions, _open_table, recorded=True))
register_sink(SinkKind("memory", MemorySinkOptions, _open_memory, data_dir=False))
