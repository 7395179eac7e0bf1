"""Assemble a pipeline's dataflow from its YAML: one output table per chain of operators.

``pipeline.outputs`` maps a table name to an ordered mapping of named operator
leaves; an empty mapping is the source's readings as they arrive. Each leaf is
built on its own (``telepipe.config.build``) and applied with ``.pipe``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
from omegaconf import DictConfig, OmegaConf
from reactivex import Observable

from telepipe.config import build
from telepipe.errors import ConfigError
from telepipe.markers import Item
from telepipe.operators.runtime.stage import stage

Operator = Callable[[Observable[Item]], Observable[Item]]

RESERVED_TABLES = ("late_readings", "dead_letters")
RESERVED_STEPS = ("decoder",)


@dataclass(frozen=True)
class Output:
    table: str
    operators: tuple[Operator, ...]
    steps: tuple[str, ...] = ()

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
        if not table.isidentifier() or table in RESERVED_TABLES:
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
    return outputs


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
        build = getattr(op, "build", None)
        if build is not None:
            flow = flow.pipe(stage(build, name=step, restore=restore.get(step)))
        else:
            flow = flow.pipe(op)
    return flow


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
