"""``stage``: drive a stateful ``BatchLogic`` from an RxPY flow of batches and markers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import pyarrow as pa
import reactivex
from reactivex import Observable, abc

from telepipe.errors import ConfigError, SnapshotError
from telepipe.markers import (
    MAX_WATERMARK,
    BatchLogic,
    CheckpointBarrier,
    Item,
    SideOutput,
    Watermark,
)
from telepipe.operators.runtime import snapshot as snapshots

LATE = "late"  # the tag of late rows' side output


class SideLogic(BatchLogic, Protocol):
    """A ``BatchLogic`` with side outputs of its own besides late rows (``side_stage``).

    ``on_barrier(checkpoint_id)`` is called at each checkpoint barrier, before its
    snapshot is taken; ``take_side()`` after every call, as ``(tag, rows)`` in order:
    they go downstream as ``SideOutput(tag, step, rows)`` after the late rows and
    before the call's outputs (so before the barrier that asked for them).
    """

    def on_barrier(self, checkpoint_id: int) -> None: ...

    def take_side(self) -> list[tuple[str, pa.RecordBatch]]: ...


def side_stage(
    build: Callable[[], SideLogic],
    name: str | None = None,
    restore: object = None,
) -> Callable[[Observable[Item]], Observable[Item]]:
    """``stage`` for a logic with side outputs of its own (``SideLogic``)."""

    def side(logic: SideLogic, checkpoint_id: int | None) -> list[tuple[str, pa.RecordBatch]]:
        if checkpoint_id is not None:  # before the barrier's snapshot is taken
            logic.on_barrier(checkpoint_id)
            return []
        return logic.take_side()

    return _make(build, name, restore, None, side)


type Side[L] = Callable[[L, int | None], list[tuple[str, pa.RecordBatch]]]


def stage(
    build: Callable[[], BatchLogic],
    name: str | None = None,
    restore: object = None,
    late: Callable[[pa.RecordBatch], None] | None = None,
) -> Callable[[Observable[Item]], Observable[Item]]:
    """An Rx operator that runs one ``BatchLogic`` per subscription, as the step ``name``.

    Without a ``name`` the step is named after its operator (``step_name``). Record
    batches go to ``on_batch``; a watermark goes to ``on_watermark`` and is forwarded
    after the outputs it released. A barrier is forwarded in place, carrying the
    logic's ``Snapshot`` under the step's name (a barrier that already carries that
    name, from another step of the chain, is an error). A ``restore`` snapshot is
    checked (``snapshot.restore``) and loaded before the first item. On completion
    the logic is flushed with the maximal watermark.

    Rows the logic sets aside as late (``take_late()``) go, in order and before the
    outputs of the call that found them, to ``late`` if given, else downstream as
    ``SideOutput("late", step, rows)``. Side outputs of stages before are forwarded
    unchanged. Errors raised by the logic go to ``on_error`` and end the flow.
    """
    return _make(build, name, restore, late, None)


def _make[L: BatchLogic](
    build: Callable[[], L],
    name: str | None,
    restore: object,
    late: Callable[[pa.RecordBatch], None] | None,
    side: Side[L] | None,
) -> Callable[[Observable[Item]], Observable[Item]]:
    if name is not None and (not isinstance(name, str) or not name):
        raise ConfigError(f"a stage's name must be a non-empty string, got {name!r}")

    def _stage(source: Observable[Item]) -> Observable[Item]:
        def subscribe(
            observer: abc.ObserverBase[Item], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            logic = build()
            step = name if name is not None else snapshots.step_name(snapshots.identity(logic)[0])
            if restore is not None:
                snapshots.restore(logic, restore, step)
            failed = False

            def run(
                call: Callable[[], list[pa.RecordBatch]], checkpoint_id: int | None = None
            ) -> bool:
                nonlocal failed
                if failed:
                    return False
                try:
                    if side is not None and checkpoint_id is not None:
                        side(logic, checkpoint_id)
                    outputs = call()
                    aside = logic.take_late()
                    own = side(logic, None) if side is not None else []
                except Exception as error:
                    failed = True
                    if not step_of(error):  # the first stage it went through raised it
                        error.add_note(f"{STEP_NOTE}{step}")
                    observer.on_error(error)
                    return False
                for batch in aside:
                    if late is not None:
                        late(batch)
                    else:
                        observer.on_next(SideOutput(LATE, step, batch))
                for tag, batch in own:
                    observer.on_next(SideOutput(tag, step, batch))
                for out in outputs:
                    observer.on_next(out)
                return True

            def on_next(item: Item) -> None:
                if isinstance(item, pa.RecordBatch):
                    run(lambda: logic.on_batch(item))
                elif isinstance(item, Watermark):
                    if run(lambda: logic.on_watermark(item.ts_ns)):
                        observer.on_next(item)
                elif isinstance(item, CheckpointBarrier):
                    barrier: list[CheckpointBarrier] = []
                    call = lambda: _with_snapshot(barrier, item, step, logic)  # noqa: E731
                    if run(call, item.checkpoint_id):
                        observer.on_next(barrier[0])
                elif isinstance(item, SideOutput):
                    if not failed:
                        observer.on_next(item)
                else:
                    run(lambda: _unknown(item))

            def on_completed() -> None:
                if run(lambda: logic.on_watermark(MAX_WATERMARK)):
                    observer.on_completed()

            def on_error(error: Exception) -> None:
                if not failed:
                    observer.on_error(error)

            return source.subscribe(on_next, on_error, on_completed, scheduler=scheduler)

        return reactivex.create(subscribe)

    return _stage


STEP_NOTE = "telepipe step: "


def step_of(error: BaseException) -> str | None:
    """The step an error was raised in, as ``stage`` noted it (PEP 678 notes)."""
    notes = getattr(error, "__notes__", ())
    return next((n.removeprefix(STEP_NOTE) for n in notes if n.startswith(STEP_NOTE)), None)


def _with_snapshot(
    into: list[CheckpointBarrier], barrier: CheckpointBarrier, step: str, logic: BatchLogic
) -> list[pa.RecordBatch]:
    if step in barrier.state:
        raise SnapshotError(
            f"two steps named {step!r} in one chain (the barrier already carries its state): "
            f"name one apart, e.g. .pipe(op.named('other'))"
        )
    into.append(barrier.with_state(step, snapshots.Snapshot.take(logic)))
    return []


def _unknown(item: object) -> list[pa.RecordBatch]:
    raise TypeError(
        "a flow carries RecordBatch, Watermark, CheckpointBarrier or SideOutput, "
        f"not {type(item)!r}"
    )


class StageOperator:
    """Base of operator options: a dataclass with ``build()`` is an Rx operator.

    ``flow.pipe(TumblingWindow(size_ms=1000))`` runs ``stage(options.build)`` as the
    step ``tumbling_window``; ``.pipe(TumblingWindow(size_ms=1000).named("w1s"))`` as
    the step ``w1s``.
    """

    def build(self) -> BatchLogic:
        raise NotImplementedError

    @property
    def step_name(self) -> str:
        """The step's name when none is given: the class name in snake case."""
        return snapshots.step_name(type(self).__name__)

    def named(
        self, name: str, restore: object = None
    ) -> Callable[[Observable[Item]], Observable[Item]]:
        """This operator as the step ``name`` (optionally restored from a ``Snapshot``)."""
        return stage(self.build, name=name, restore=restore)

    def __call__(self, source: Observable[Item]) -> Observable[Item]:
        return stage(self.build, name=self.step_name)(source)
