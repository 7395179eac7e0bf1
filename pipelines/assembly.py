"""A run's assembly: what it will open, decided from the config (``plan``), then opened
(``opened``): the source, the sink, the publishers, the outputs' chains, the metrics
endpoint and the child processes. The runner only runs what this hands it.

Sources and sinks come from ``pipelines.registry`` by the type of their options;
nothing here knows a table by name but the two every pipeline has.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
from omegaconf import DictConfig
from reactivex.subject import Subject

from telepipe.aeron import AeronConnection, AeronOptions
from telepipe.config import build, option
from telepipe.errors import ConfigError, SnapshotError, TelepipeError
from telepipe.markers import Item
from telepipe.operators.runtime import snapshot as snapshots
from telepipe.pipelines.child import CaptureProcess, Children, SimulatorProcess
from telepipe.pipelines.graph import (
    Output,
    chains,
    check_schema_flow,
    outputs_from_config,
    publishers_from_config,
    store_tables,
)
from telepipe.pipelines.protocols import PulledSource, Sink, SourceOptions
from telepipe.pipelines.recovery import Recovery, actor_states
from telepipe.pipelines.registry import (
    RECORDED,
    SinkContext,
    SinkKind,
    SourceContext,
    SourceKind,
    pipeline_identity,
    sink_kind,
    source_kind,
)
from telepipe.pipelines.routing import Outputs, SideOutputs
from telepipe.sbe import SbeCodec
from telepipe.schema import DEAD_LETTERS
from telepipe.sinks.delta import DRAINED, PIPELINE, PIPELINE_HASH, drained_at, ended_at, written_by
from telepipe.sources.replay import ReplayOptions
from telepipe.stats import RunStats


@dataclass(frozen=True)
class Opens[O]:
    """A registered kind and the options it opens."""

    kind: O
    options: Any


SAVEPOINT = "savepoint"  # set in the decoder's state of a live run's stop by signal


@dataclass(frozen=True)
class Plan:
    """Everything a run will open, decided before anything is opened."""

    cfg: DictConfig
    overrides: tuple[str, ...]
    input_path: str | None  # None: the live stream
    data_dir: Path
    codec: SbeCodec
    source: Opens[SourceKind[Any]]
    sink: Opens[SinkKind[Any]]
    publish: dict[str, Opens[SinkKind[Any]]]  # output table -> its publisher
    outputs: tuple[Output, ...]
    tables: dict[str, pa.Schema | None]  # every table the sink writes
    recovery: Recovery | None
    aeron: AeronOptions
    replay: ReplayOptions | None
    simulate: bool
    capture_dir: str | None
    limit: int | None
    idle_limit_s: float
    drain: bool = False  # a stop by signal flushes (else: a savepoint)
    fresh: bool = False  # a live restart starts its operators empty
    last_commit_ns: int | None = None  # wall time of the data dir's last commit
    # A live restart after a crash between two tables' commits: each table's chain
    # from its own last checkpoint (its rows hold up to it), with the newest decoder's.
    live_states: dict[str, dict[str, object]] | None = None
    live_decoder: dict[str, object] | None = None
    # A replay whose every table holds its input's last checkpoint (taken at its end):
    # that checkpoint, and nothing is left to read.
    ended_at: int | None = None
    # A live restart after a drain or with fresh=true: the journaled actors' entities
    # alone, from the event store (their state and event numbers go on).
    store_entities: dict[str, dict[str, object]] | None = None

    @property
    def restored(self) -> dict[str, dict[str, object]]:
        """table -> step -> the snapshot each chain starts from (empty: a fresh start).

        A recorded input resumes exactly from its checkpoints; a live run from the
        savepoint (or the last checkpoint) unless ``fresh=true`` or drained (then only
        journaled actors' entities, from the event store)."""
        if self.recovery is None:
            return {}
        if self.live and (self.fresh or self.drained):
            return self.store_entities or {}
        if self.live and self.live_states is not None:
            return self.live_states
        return self.recovery.chain_states

    @property
    def _decoder_state(self) -> dict[str, object]:
        """The decoder's state at the checkpoint a restart resumes (empty: none)."""
        if self.live and self.live_decoder is not None:
            return self.live_decoder
        resume = self.recovery.resume if self.recovery is not None else None
        state = resume.decoder_state if resume is not None else None
        return state if isinstance(state, dict) else {}

    @property
    def drained(self) -> bool:
        """The live run before this one was drained (flushed) at its stop: it left no
        open state, and its operators' watermark is the end of time."""
        return bool(self._decoder_state.get(DRAINED))

    @property
    def from_savepoint(self) -> bool:
        """The checkpoint a live run restores is a stop's savepoint (else: a crash)."""
        return bool(self._decoder_state.get(SAVEPOINT))

    @property
    def restored_watermark(self) -> int | None:
        """The watermark of the checkpoint a live run restores: it never goes back."""
        if not self.live or self.fresh:
            return None
        watermark = self._decoder_state.get("watermark")
        return watermark if isinstance(watermark, int) else None

    @property
    def restored_event_ns(self) -> int | None:
        """The newest event time the restored checkpoint had read (live runs)."""
        max_ts = self._decoder_state.get("max_ts")
        if self.restored_watermark is None or not isinstance(max_ts, dict):
            return None
        return max((int(t) for t in max_ts.values()), default=None)

    @property
    def live(self) -> bool:
        return self.input_path is None

    @property
    def identity(self) -> dict[str, str]:
        """The pipeline's name and config hash, as every commit records them."""
        return pipeline_identity(self.cfg.pipeline)

    @property
    def origin(self) -> str:
        """What the input is, as every commit records it."""
        if self.input_path is None:
            return "live"
        if "://" in self.input_path:  # not a file (a DataFrame: table://sha256-...)
            return self.input_path
        return str(Path(self.input_path).resolve())

    @property
    def source_options(self) -> SourceOptions:
        options: SourceOptions = self.source.options
        return options

    @property
    def raw_table(self) -> str | None:
        """The first output of the readings as they come (no operators)."""
        return next((o.table for o in self.outputs if not o.operators), None)

    @property
    def needs_aeron(self) -> bool:
        return (
            (self.live and self.source.kind.needs_aeron)
            or self.sink.kind.needs_aeron
            or any(p.kind.needs_aeron for p in self.publish.values())
        )


def plan(cfg: DictConfig, overrides: list[str], input_path: str | None = None) -> Plan:
    """The run's plan: ``configure``, then ``recovered`` (call that one holding the
    data dir, so no other writer moves its checkpoints meanwhile)."""
    return recovered(configure(cfg, overrides, input_path))


def configure(cfg: DictConfig, overrides: list[str], input_path: str | None = None) -> Plan:
    """The plan from the config alone, nothing read or made on disk: a one-line
    ConfigError for anything wrong in it, before a data dir or its lock exists."""
    source_options = build(cfg.source, "source")
    source = Opens(source_kind(source_options), source_options)
    sink_options = build(cfg.sink, "sink")
    sink = Opens(sink_kind(sink_options), sink_options)
    codec = build(cfg.schema, "schema")
    outputs = tuple(outputs_from_config(cfg.pipeline))
    live = input_path is None
    simulate = live and bool(option(cfg, "simulator.enabled"))
    if simulate:
        build(cfg.simulator.options, "simulator.options")  # fail fast, in this process
    replay_options = ReplayOptions.from_config(cfg.replay)  # checked for validate too
    replay = None if live else replay_options
    tables = {o.table: o.schema(codec.arrow_schema) for o in outputs}
    for output in outputs:
        check_schema_flow(output, codec.arrow_schema, tables)
    tables |= {"late_readings": codec.arrow_schema, "dead_letters": DEAD_LETTERS}
    tables |= store_tables(outputs)  # actor_events, actor_snapshots: journaled actors
    if sink.kind.check_tables is not None:
        sink.kind.check_tables(sink_options, tables)
    drain, fresh = bool(option(cfg, "drain")), bool(option(cfg, "fresh"))
    if fresh and not live:
        raise ConfigError(
            "fresh=true is for a live `telepipe run`: a replay resumes its checkpoints "
            "exactly (use another data_dir to replay from the start)"
        )
    publish = {
        table: Opens(sink_kind(options, f"pipeline.publish.{table}"), options)
        for table, options in publishers_from_config(
            cfg.pipeline, [o.table for o in outputs]
        ).items()
    }
    for table, publisher in publish.items():
        _check_publisher(table, publisher)
    capture_dir = option(cfg, "capture_dir")
    return Plan(
        cfg=cfg,
        overrides=tuple(overrides),
        input_path=input_path,
        data_dir=Path(str(cfg.data_dir)).resolve(),
        codec=codec,
        source=source,
        sink=sink,
        publish=publish,
        outputs=outputs,
        tables=tables,
        recovery=None,
        aeron=build(cfg.aeron, "aeron"),
        replay=replay,
        simulate=simulate,
        capture_dir=str(capture_dir) if capture_dir else None,
        limit=option(cfg, "limit.readings"),
        idle_limit_s=float(option(cfg, "limit.idle_s") or 5.0),
        drain=drain,
        fresh=fresh,
    )


def _check_publisher(table: str, publisher: Opens[SinkKind[Any]]) -> None:
    """A publisher's own checks (its SBE schema loads and has the message)."""
    check = publisher.kind.check
    try:
        if check is not None:
            check(publisher.options)
    except TelepipeError as error:
        raise ConfigError(f"pipeline.publish.{table}: {error}") from None


def recovered(plan: Plan) -> Plan:
    """``plan`` with what its data dir's tables hold: where to resume, what to restore;
    a one-line ConfigError for a data dir of another input or another pipeline."""
    live, outputs, data_dir = plan.live, plan.outputs, plan.data_dir
    tables, sink = plan.tables, plan.sink
    recover = sink.kind.recover
    recovery = recover(sink.options, data_dir, list(tables)) if recover is not None else None
    if recovery is not None and recovery.input not in (None, plan.origin):
        raise ConfigError(
            f"data_dir={data_dir} holds checkpoints of input {recovery.input}; "
            "use another data_dir for this input"
        )
    live_states, live_decoder = None, None
    if live and recovery is not None and recover is not None and recovery.oldest < recovery.latest:
        live_states, live_decoder = _each_table_own(recover, sink.options, data_dir, list(tables))
    state = live_decoder
    if state is None and recovery is not None and recovery.resume is not None:
        state = recovery.resume.decoder_state
    drained = isinstance(state, dict) and bool(state.get(DRAINED))
    if not live and recovery is not None and sink.kind.recover is not None:
        _refuse_after_a_drain(data_dir, list(tables), getattr(sink.options, "app_id", "telepipe"))
    if recovery is not None and not (live and plan.fresh):
        _check_same_pipeline(plan)
    recovery, live_states, entities = _actors_from_store(plan, recovery, live_states, drained)
    if live and recovery is not None and not plan.fresh and not drained:
        _check_restorable(outputs, live_states or recovery.chain_states, recovery, data_dir)
    elif not live and recovery is not None and recovery.oldest > 0:
        # A replay resumes exactly or not at all: a changed step would have restored
        # nothing (a renamed one) or failed inside its chain (other options).
        _check_restorable(
            outputs, recovery.chain_states, recovery, data_dir,
            remedy="replay into another data_dir to start over with this pipeline",
        )  # fmt: skip
    return dataclasses.replace(
        plan,
        recovery=recovery,
        last_commit_ns=_last_commit_ns(data_dir, list(tables)) if recovery is not None else None,
        live_states=live_states,
        live_decoder=live_decoder,
        store_entities=entities,
        ended_at=_ended_at(plan, recovery),
    )


def _ended_at(plan: Plan, recovery: Recovery | None) -> int | None:
    """The checkpoint a replay's every table took at the end of its input, if all hold it."""
    if plan.live or recovery is None or recovery.oldest != recovery.latest:
        return None
    app_id = str(getattr(plan.sink.options, "app_id", "telepipe"))
    ends = {ended_at(plan.data_dir / table, app_id) for table in plan.tables}
    return recovery.latest if ends == {recovery.latest} else None


def _refuse_after_a_drain(data_dir: Path, tables: list[str], app_id: str) -> None:
    """A replay cannot go on from a drained stop (its open windows were flushed as
    final), whether every table committed that stop's checkpoint or a kill cut it."""
    for table in tables:
        k = drained_at(data_dir / table, app_id)
        if k is not None:
            raise ConfigError(
                f"data_dir={data_dir}: its last replay stopped drained at checkpoint {k} "
                "(stop --drain, drain=true or limit.readings): its open windows were "
                "flushed as final, so the rest of the input cannot be added exactly; "
                "replay into another data_dir (stop without --drain to go on later)"
            )


def _actors_from_store(
    plan: Plan,
    recovery: Recovery | None,
    live_states: dict[str, dict[str, object]] | None,
    drained: bool,
) -> tuple[
    Recovery | None, dict[str, dict[str, object]] | None, dict[str, dict[str, object]] | None
]:
    """The restored chains with journaled actors' entities read back from the event
    store (``pipelines.recovery.actor_states``): a replay at the checkpoint it resumes,
    a live run at each table's own; after a drain or with fresh=true, the entities
    alone (the third value), as the store is theirs whatever the open state."""
    if recovery is None or not store_tables(plan.outputs):
        return recovery, live_states, None
    app_id = str(getattr(plan.sink.options, "app_id", "telepipe"))
    data_dir = plan.data_dir
    if plan.live and (plan.fresh or drained):
        entities = actor_states(plan.outputs, {}, data_dir, None, app_id, entities_only=True)
        return recovery, live_states, entities
    if live_states is not None:  # a live run after a crash between two tables' commits
        live_states = actor_states(plan.outputs, live_states, data_dir, None, app_id)
    elif recovery.oldest > 0:  # a replay, a savepoint: every chain at one checkpoint
        chains = actor_states(
            plan.outputs, recovery.chain_states, data_dir, recovery.oldest, app_id
        )
        recovery = dataclasses.replace(recovery, chain_states=chains)
    return recovery, live_states, None


def _each_table_own(
    recover: Any, options: Any, data_dir: Path, tables: list[str]
) -> tuple[dict[str, dict[str, object]], dict[str, object] | None]:
    """Each table's chain state at its own last checkpoint, and the decoder's state of
    the newest. A live input is not replayed, so a table that committed checkpoint k
    before the crash must go on from k (from an older one, it would emit again the
    windows it committed since), and one that did not, from its own older one."""
    states: dict[str, dict[str, object]] = {}
    decoder, newest = None, -1
    for table in tables:
        own = recover(options, data_dir, [table])
        if own is None:
            continue
        states[table] = own.chain_states.get(table, {})
        state = own.resume.decoder_state if own.resume is not None else None
        if isinstance(state, dict) and own.oldest > newest:
            decoder, newest = state, own.oldest
    return states, decoder


def _check_same_pipeline(plan: Plan) -> None:
    """The first half of a restart's check (``_check_restorable`` is the second): the
    data dir's last checkpoint was written by this pipeline (its name, as every commit
    records it), or a one-line refusal naming the one that wrote it."""
    app_id = str(getattr(plan.sink.options, "app_id", "telepipe"))
    recorded = written_by(plan.data_dir, list(plan.tables), app_id)
    mine = plan.identity
    name = recorded.get(PIPELINE)
    if name is None or name == mine[PIPELINE]:
        return
    remedy = (
        "restart with fresh=true to write this pipeline there anyway (its operators start "
        "empty, the tables are kept), or use another data_dir"
        if plan.live
        else "replay into another data_dir"
    )
    raise ConfigError(
        f"data_dir={plan.data_dir} was written by pipeline {name} (config "
        f"{recorded.get(PIPELINE_HASH, '?')}, checkpoint {recorded.get('telepipe.checkpoint_id')}), "
        f"not {mine[PIPELINE]}: {remedy}"
    )


def _check_restorable(
    outputs: tuple[Output, ...],
    states: dict[str, dict[str, object]],
    recovery: Recovery,
    data_dir: Path,
    remedy: str = "restart with fresh=true to start the operators empty (the tables are kept)",
) -> None:
    """A restart restores every stateful step from its table's checkpoint: the same
    steps with the same options, or a one-line refusal naming what changed."""
    fresh = remedy
    for output in outputs:
        saved = states.get(output.table, {})
        stateful = {
            step: op
            for step, op in zip(output.steps, output.operators, strict=True)
            if getattr(op, "build", None) is not None
        }
        if recovery.oldest == 0 and stateful:
            raise ConfigError(
                f"data_dir={data_dir}: table {output.table} has no checkpoint to restore "
                f"its steps from (a new output, or a run that stopped before its first "
                f"checkpoint): {fresh}"
            )
        gone = sorted(set(saved) - set(stateful))
        new = sorted(set(stateful) - set(saved))
        if gone or new:
            what = "; ".join(
                part
                for part in (
                    f"saved steps not in the pipeline: {', '.join(gone)}" if gone else "",
                    f"steps with no saved state: {', '.join(new)}" if new else "",
                )
                if part
            )
            raise ConfigError(
                f"data_dir={data_dir}: the pipeline changed since its last checkpoint "
                f"(table {output.table}: {what}): {fresh}"
            )
        for step, op in stateful.items():
            try:
                snapshots.restore(op.build(), saved[step], step)  # type: ignore[attr-defined]
            except SnapshotError as error:
                raise ConfigError(
                    f"data_dir={data_dir}: the pipeline changed since its last checkpoint "
                    f"(table {output.table}, {error}): {fresh}"
                ) from None


def _last_commit_ns(data_dir: Path, tables: list[str]) -> int | None:
    """When the data dir's tables last committed (their newest log entry), or None."""
    newest = 0
    for table in tables:
        log = data_dir / table / "_delta_log"
        try:
            with os.scandir(log) as entries:
                for entry in entries:
                    if entry.name.endswith(".json"):
                        newest = max(newest, entry.stat().st_mtime_ns)
        except OSError:
            continue
    return newest or None


class _Server(Protocol):
    def shutdown(self) -> None: ...


@dataclass
class Assembly:
    """A run's opened parts. ``flow`` is what the runner pushes every item into."""

    source: PulledSource
    sink: Sink
    publishers: dict[str, Sink]
    flow: Subject[Item]
    outputs: Outputs
    side: SideOutputs
    children: Children = field(default_factory=Children)
    connection: AeronConnection | None = None  # the run's Aeron client (None: no Aeron)

    def join(self) -> None:
        """Wait for every sink to write what it was given."""
        self.sink.join()
        for publisher in self.publishers.values():
            publisher.join()

    def abort(self) -> None:
        """Stop every sink; what was not written is discarded."""
        self.sink.abort()
        for publisher in self.publishers.values():
            publisher.abort(timeout=5.0)


@contextlib.contextmanager
def opened(plan: Plan, stats: RunStats) -> Iterator[Assembly]:
    """Open the plan's parts, in the order a failure is cheapest; close the source, the
    metrics endpoint and the Aeron connection at the end. On a failure while opening,
    what was started is stopped again."""
    with contextlib.ExitStack() as stack:
        connection = stack.enter_context(AeronConnection(plan.aeron)) if plan.needs_aeron else None
        recovery = plan.recovery
        source_ctx = SourceContext(plan.codec, connection, recovery, plan.input_path, plan.replay)
        kind = plan.source.kind if plan.live or plan.source.kind.recorded else RECORDED
        source = kind.open(plan.source.options, source_ctx)
        stack.callback(source.close)
        _restore_watermark(plan, source)
        sink_ctx = SinkContext(plan.tables, plan.data_dir, plan.origin, connection, plan.identity)
        sink = plan.sink.kind.open(plan.sink.options, sink_ctx)
        sink.start()
        store = store_tables(plan.outputs)  # the actors' event store, if any
        side = SideOutputs(sink, plan.codec, plan.source_options.stream_id, store)
        parts = Assembly(source, sink, {}, Subject(), Outputs(side), side, connection=connection)
        try:
            for table, publisher in plan.publish.items():
                ctx = SinkContext(
                    {table: plan.tables[table]}, plan.data_dir, plan.origin, connection
                )
                parts.publishers[table] = publisher.kind.open(publisher.options, ctx).start()
            _connect_outputs(plan, parts)
            server = _serve_metrics(plan, stats)  # before any child: a bad port fails alone
            if server is not None:
                stack.callback(server.shutdown)
            if connection is not None:
                parts.children = _start_children(plan, connection.dir)
        except BaseException:
            parts.abort()
            raise
        yield parts


def _connect_outputs(plan: Plan, parts: Assembly) -> None:
    """Every output's chain on the flow, its end counted and fed to its sinks."""
    built = chains(parts.flow, plan.outputs, plan.restored)  # pipeline.inputs: shared
    for output in plan.outputs:
        observers = [parts.sink.observer(output.table)]
        if output.table in parts.publishers:
            observers.append(parts.publishers[output.table].observer(output.table))
        built[output.table].subscribe(parts.outputs.feed(output.table, observers))


def _restore_watermark(plan: Plan, source: PulledSource) -> None:
    """A live source resumes from "now" (Aeron keeps nothing); only its watermark goes
    on from the restored checkpoint, so it never goes back (the positions and the
    sessions' event times of the last run mean nothing to the new subscription)."""
    watermark = plan.restored_watermark
    decoder = getattr(source, "decoder", None)
    if watermark is None or decoder is None or plan.recovery is None:
        return
    decoder.restore(
        {
            "positions": {},
            "max_ts": {},
            "watermark": watermark,
            "checkpoint_id": plan.recovery.latest,
        }
    )


def _start_children(plan: Plan, aeron_dir: str) -> Children:
    """The recorder of ``capture_dir=`` (it records from the first frame the run reads),
    then the simulator."""
    children = Children()
    try:
        if plan.capture_dir:
            o = plan.source_options
            children.recorder = CaptureProcess.start(
                aeron_dir, o.channel, o.stream_id, plan.capture_dir
            )
        if plan.simulate:
            children.simulator = SimulatorProcess.start(plan.cfg, aeron_dir, list(plan.overrides))
    except BaseException:
        children.abandon()
        raise
    return children


def _serve_metrics(plan: Plan, stats: RunStats) -> _Server | None:
    port = option(plan.cfg, "metrics.port")
    if not port:
        return None
    from telepipe.metrics import serve

    address = str(option(plan.cfg, "metrics.address") or "127.0.0.1")
    try:
        mode = "run" if plan.live else "replay"
        server: _Server = serve(stats, str(plan.cfg.pipeline.name), int(port), address, mode)
    except OSError as error:
        raise ConfigError(f"metrics.port={port}: cannot listen on {address}: {error}") from None
    return server
