"""``stage``: drive a stateful ``BatchLogic`` from an RxPY flow of batches and markers."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import reactivex
from reactivex import Observable, abc

from telepipe.markers import MAX_WATERMARK, BatchLogic, CheckpointBarrier, Item, Watermark


def stage(build: Callable[[], BatchLogic]) -> Callable[[Observable[Item]], Observable[Item]]:
    """An Rx operator that runs one ``BatchLogic`` per subscription.

    Record batches go to ``on_batch``; a watermark goes to ``on_watermark`` and is
    forwarded after the outputs it released; barriers are forwarded in place. On
    completion the logic is flushed with the maximal watermark. Errors raised by
    the logic go to ``on_error`` and end the flow.
    """

    def _stage(source: Observable[Item]) -> Observable[Item]:
        def subscribe(
            observer: abc.ObserverBase[Item], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            logic = build()
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


def _unknown(item: object) -> list[pa.RecordBatch]:
    raise TypeError(
        f"a flow carries RecordBatch, Watermark or CheckpointBarrier, not {type(item)!r}"
    )
