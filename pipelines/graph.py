"""Assemble a pipeline's dataflow from its YAML: one output table per chain of operators.

``pipeline.outputs`` maps a table name to an ordered mapping of named operator
leaves; an empty mapping is the source's readings as they arrive. Each leaf is
built on its own (``telepipe.config.build``) and applied with ``.pipe``.

``pipeline.inputs`` maps an output to earlier outputs whose rows its chain reads
besides the readings (``machine_states: [alarm_states]``: an actor stage driven by
readings and by an alarm step's rows, in one flow). The earlier chain runs once
(shared); its rows reach the later chain before the reading, watermark or barrier
that released them, so the later chain's checkpoint k holds exactly what the earlier
one emitted before k (deterministic on replay). Only its rows pass: its markers and
side outputs are its own table's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

import pyarrow as pa
import reactivex
from omegaconf import DictConfig, ListConfig, OmegaConf
from reactivex import Observable, abc
from reactivex import operators as ops
from reactivex.disposable import CompositeDisposable

from telepipe.config import build
from telepipe.errors import ConfigError
from telepipe.markers import Item
from telepipe.operators.actors.journal import STORE_TABLES, store_schemas
from telepipe.operators.actors.stage import ActorStage
from telepipe.operators.runtime.stage import StageOperator, stage

Operator = Callable[[Observable[Item]], Observable[Item]]

RESERVED_TABLES = ("late_readings", "dead_letters")
RESERVED_STEPS = ("decoder",)


@dataclass(frozen=True)
class Output:
    table: str
    operators: tuple[Operator, ...]
    steps: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()  # earlier outputs whose rows the chain reads too

    def schema(self, source_schema: pa.Schema) -> pa.Schema | None:
        """The table's schema: the last operator's output, or the source's for raw readings."""
        if not self.operators:
            return source_schema
        return getattr(self.operators[-1], "output_schema", None)


def outputs_from_config(pipeline: DictConfig) -> list[Output]:
    if "outputs" not in pipeline or not isinstance(pipeline.outputs, DictConfig):
        raise ConfigError("pipeline.outputs: expected a mapping of table name -> operators")
    outputs: list[Output] = []
    for key, chain in pipeline.outputs.items():
        table = str(key)
        path = f"pipeline.outputs.{table}"
        if (
            not table.isidentifier()
            or table.startswith("_")  # telepipe's own (_telepipe_state), Delta's (_delta_log)
            or table in (*RESERVED_TABLES, *STORE_TABLES)
        ):
            raise ConfigError(f"{path}: not a usable table name")
        if chain is None:  # ``readings: null`` as ``readings: {}``: the rows as they come
            chain = OmegaConf.create({})
        if not isinstance(chain, DictConfig):
            raise ConfigError(f"{path}: expected a mapping of step name -> operator, got {chain!r}")
        steps = tuple(str(k) for k in chain)
        for step in steps:
            if step in RESERVED_STEPS:
                raise ConfigError(
                    f"{path}.{step}: the step name {step!r} is reserved (a checkpoint holds "
                    "the source's state under it): name the step otherwise"
                )
        nodes = zip(steps, chain.values(), strict=True)
        operators = tuple(build(node, f"{path}.{step}") for step, node in nodes)
        for step, op in zip(steps, operators, strict=True):
            if not callable(op):
                raise ConfigError(f"{path}.{step}: {type(op).__name__} is not an operator")
        outputs.append(Output(table, operators, steps))
    if not outputs:
        raise ConfigError("pipeline.outputs: a pipeline needs at least one output")
    return _with_inputs(outputs, pipeline.get("inputs"))


def _with_inputs(outputs: list[Output], inputs: object) -> list[Output]:
    """``pipeline.inputs``: output -> the earlier outputs its chain reads too."""
    if not inputs:
        return outputs
    if not isinstance(inputs, DictConfig):
        raise ConfigError(
            f"pipeline.inputs: expected a mapping of output -> earlier outputs, got {inputs!r}"
        )
    order = [o.table for o in outputs]
    out = {o.table: o for o in outputs}
    reads: dict[str, list[str]] = {}
    for key, names in inputs.items():
        table = str(key)
        path = f"pipeline.inputs.{table}"
        if table not in out:
            raise ConfigError(f"{path}: no such output (outputs: {', '.join(order)})")
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, ListConfig | list) or not names:
            raise ConfigError(f"{path}: expected a list of earlier outputs, got {names!r}")
        reads[table] = list(dict.fromkeys(map(str, names)))
        for name in reads[table]:
            if name not in out:
                raise ConfigError(f"{path}: {name!r} is no output (outputs: {', '.join(order)})")
            if name == table:
                raise ConfigError(f"{path}: an output cannot read its own rows")
            if not out[name].operators:
                raise ConfigError(f"{path}: {name!r} is the readings themselves: drop it")
    cycle = _cycle(reads)
    if cycle:
        raise ConfigError(
            f"pipeline.inputs.{cycle[0]}: a cycle ({' -> '.join(cycle)}): an output reads "
            "only outputs before it"
        )
    for table, names in reads.items():
        for name in names:
            if order.index(name) > order.index(table):
                raise ConfigError(
                    f"pipeline.inputs.{table}: {name!r} comes after {table} in "
                    f"pipeline.outputs (in order: {', '.join(order)}): list it before"
                )
        out[table] = Output(table, out[table].operators, out[table].steps, tuple(names))
    return [out[t] for t in order]


def _cycle(reads: dict[str, list[str]]) -> list[str]:
    """A cycle of ``reads`` (output -> the outputs it reads) as ``[a, b, ..., a]``, or []."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str]:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return []
        for nxt in reads.get(node, []):
            found = visit(nxt, [*path, node])
            if found:
                return found
        done.add(node)
        return []

    for start in reads:
        found = visit(start, [])
        if found:
            return found
    return []


def step_needs(op: object, source_schema: pa.Schema) -> tuple[str, ...] | None:
    """The columns a step needs its input batches to have, exactly (None: any).

    An operator declares them as ``input_columns``; else a stateful one (``build()``)
    needs the source's readings, as its late rows go to ``late_readings`` (and the
    dead letters, encoded as the source's message), and a stateless one takes any."""
    declared = getattr(op, "input_columns", _UNDECLARED)
    if declared is not _UNDECLARED:
        return None if declared is None else tuple(cast("Iterable[str]", declared))
    if isinstance(op, ActorStage):  # readings and other outputs' rows, by its own spec
        return None
    if getattr(op, "build", None) is not None:
        return tuple(source_schema.names)
    return None


_UNDECLARED = object()


def check_schema_flow(
    output: Output,
    source_schema: pa.Schema,
    earlier: dict[str, pa.Schema | None] | None = None,
) -> None:
    """Each step of the output's chain gets the columns it needs from what flows into
    it (the readings, the step before it, the rows of ``pipeline.inputs``): a one-line
    ConfigError naming the output, the step and the columns otherwise."""
    earlier = earlier or {}
    flows: list[tuple[str, tuple[str, ...] | None]] = [("the readings", tuple(source_schema.names))]
    flows += [
        (f"output {name!r} (pipeline.inputs)", _names(earlier.get(name))) for name in output.inputs
    ]
    for step, op in zip(output.steps, output.operators, strict=True):
        needs = step_needs(op, source_schema)
        for what, columns in flows:
            if needs is None or columns is None or set(columns) == set(needs):
                continue
            missing = [c for c in needs if c not in columns]
            unknown = [c for c in columns if c not in needs]
            raise ConfigError(
                f"pipeline.outputs.{output.table}.{step}: {type(op).__name__} needs the "
                f"columns {list(needs)}, but {what} gives {list(columns)} (missing "
                f"{missing}, unknown {unknown})"
            )
        emits = getattr(op, "output_schema", None)
        if isinstance(emits, pa.Schema):
            flows = [(f"step {step!r} ({type(op).__name__})", tuple(emits.names))]
        elif getattr(op, "build", None) is not None or isinstance(op, StageOperator):
            flows = [(f"step {step!r}", None)]  # emits what it declares nowhere: unchecked


def _names(schema: pa.Schema | None) -> tuple[str, ...] | None:
    return None if schema is None else tuple(schema.names)


def store_tables(outputs: list[Output] | tuple[Output, ...]) -> dict[str, pa.Schema]:
    """The event store's tables (``actor_events``, ``actor_snapshots``) and their schemas
    when a chain has an actor stage with ``journal: true`` (else none)."""
    stages = [
        (f"pipeline.outputs.{o.table}.{step}", op.__dict__["_spec"])
        for o in outputs
        for step, op in zip(o.steps, o.operators, strict=True)
        if isinstance(op, ActorStage) and op.journal
    ]
    return store_schemas(stages)


def connect(
    subject: Observable[Item], output: Output, restore: dict[str, object] | None = None
) -> Observable[Item]:
    """The output's chain applied to the source flow.

    A stateful operator (one with ``build()``) runs as a stage named after its
    step, so its snapshot rides every barrier to the sink, and starts from
    ``restore[step]`` when a restart recovered one. Rows an operator finds too
    late for it travel on in the flow as ``SideOutput("late", step, rows)``, as
    they do from a chain built in Python with ``.pipe``: the runner's routing
    (``pipelines.routing``) sends them to ``late_readings`` and the dead letters.
    """
    flow: Observable[Item] = subject
    restore = restore or {}
    for step, op in zip(output.steps, output.operators, strict=True):
        if isinstance(op, StageOperator):  # its own stage (an actor's has side outputs)
            flow = flow.pipe(op.named(step, restore=restore.get(step)))
            continue
        build = getattr(op, "build", None)
        if build is not None:
            flow = flow.pipe(stage(build, name=step, restore=restore.get(step)))
        else:
            flow = flow.pipe(op)
    return flow


def chains(
    subject: Observable[Item],
    outputs: list[Output] | tuple[Output, ...],
    restored: dict[str, dict[str, object]] | None = None,
) -> dict[str, Observable[Item]]:
    """Every output's chain (``connect``), in order; a chain another output reads
    (``pipeline.inputs``) is shared, so it runs once. Subscribe them in this order."""
    restored = restored or {}
    read = {name for o in outputs for name in o.inputs}
    out: dict[str, Observable[Item]] = {}
    for output in outputs:
        flow = subject
        if output.inputs:
            flow = _merged(subject, [out[name] for name in output.inputs])
        chain = connect(flow, output, restored.get(output.table))
        out[output.table] = chain.pipe(ops.share()) if output.table in read else chain
    return out


def _merged(subject: Observable[Item], taps: list[Observable[Item]]) -> Observable[Item]:
    """The source's items and the rows of ``taps`` (earlier, shared chains): subscribed
    to the taps first, so their rows for an item come before the item itself."""

    def subscribe(
        observer: abc.ObserverBase[Item], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        def rows(item: Item) -> None:
            if isinstance(item, pa.RecordBatch):
                observer.on_next(item)

        def ignore(_error: Exception) -> None:
            """The earlier chain's own output reports it (and ends the run)."""

        subscriptions = [tap.subscribe(rows, ignore, scheduler=scheduler) for tap in taps]
        subscriptions.append(subject.subscribe(observer, scheduler=scheduler))
        return CompositeDisposable(subscriptions)

    return reactivex.create(subscribe)


def publishers_from_config(pipeline: DictConfig, tables: list[str]) -> dict[str, object]:
    """``pipeline.publish``: output table -> the options of the sink that publishes it
    (an ``AeronSinkOptions``: the output's rows out as SBE messages)."""
    publish = pipeline.get("publish")
    if not publish:
        return {}
    if not isinstance(publish, DictConfig):
        raise ConfigError(
            f"pipeline.publish: expected a mapping of table -> Aeron sink, got {publish!r}"
        )
    built = {}
    for key, node in publish.items():
        table = str(key)
        if table not in tables:
            raise ConfigError(
                f"pipeline.publish.{table}: no such output (outputs: {', '.join(tables)})"
            )
        built[table] = build(node, f"pipeline.publish.{table}")
    return built
