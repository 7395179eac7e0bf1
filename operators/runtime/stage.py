"""``stage``: drive a stateful ``BatchLogic`` from an RxPY flow of batches and markers."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import reactivex
from reactivex import Observable, abc

from telepipe.markers import MAX_WATERMARK, BatchLogic, CheckpointBarrier, Item, Watermark


def stage(
    build: Callable[[], BatchLogic],
    name: str | None = None,
    restore: dict[str, object] | None = None,
    late: Callable[[pa.RecordBatch], None] | None = None,
) -> Callable[[Observable[Item]], Observable[Item]]:
    """An Rx operator that runs one ``BatchLogic`` per subscription.

    Record batches go to ``on_batch``; a watermark goes to ``on_watermark`` and is
    forwarded after the outputs it released. A barrier is forwarded in place,
    carrying the logic's snapshot under ``name`` when the stage is named. A
    ``restore`` snapshot is loaded into the logic before the first item. On
    completion the logic is flushed with the maximal watermark. Rows a logic sets
    aside as late (``take_late()``) go to ``late``, in order, before the item that
    follows. Errors raised by the logic go to ``on_error`` and end the flow.
    """

    def _stage(source: Observable[Item]) -> Observable[Item]:
        def subscribe(
            observer: abc.ObserverBase[Item], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            logic = build()
            if restore is not None:
                logic.restore(restore)
            failed = False

            def run(call: Callable[[], list[pa.RecordBatch]]) -> bool:
                nonlocal failed
                if failed:
                    return False
                try:
                    outputs = call()
                except Exception as error:
                    failed = True
                    observer.on_error(error)
                    return False
                take_late = getattr(logic, "take_late", None) if late is not None else None
                if take_late is not None:
                    for batch in take_late():
                        late(batch)  # type: ignore[misc]
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
                    if failed:
                        return
                    if name is not None:
                        taken: list[dict[str, object]] = []
                        if not run(lambda: _take(taken, logic.snapshot())):
                            return
                        item = item.with_state(name, taken[0])
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


def _take(into: list[dict[str, object]], snapshot: dict[str, object]) -> list[pa.RecordBatch]:
    into.append(snapshot)
    return []


def _unknown(item: object) -> list[pa.RecordBatch]:
    raise TypeError(
        f"a flow carries RecordBatch, Watermark or CheckpointBarrier, not {type(item)!r}"
    )


class StageOperator:
    """Base of operator options: a dataclass with ``build()`` is an Rx operator.

    ``flow.pipe(TumblingWindow(size_ms=1000))`` runs ``stage(options.build)``.
    """

    def build(self) -> BatchLogic:
        raise NotImplementedError

    def __call__(self, source: Observable[Item]) -> Observable[Item]:
        return stage(self.build)(source)
