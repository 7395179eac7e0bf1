"""``ThreadBoundary``: run the rest of a flow on its own thread, behind a bounded queue.

The replacement for ``observe_on`` in a flow that must not lose data or grow
without bound: the upstream ``on_next`` puts into a ``BoundedQueue`` whose
policy decides what a full queue does (``block`` stalls upstream, back to the
source's poll loop). Markers always pass; side outputs (``SideOutput``) count as the
rows they carry, and pass in order as batches do. Errors on either side end the flow.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pyarrow as pa
import reactivex
from reactivex import Observable, abc

from telepipe.boundary import BoundaryOptions, BoundedQueue
from telepipe.errors import ConfigError
from telepipe.markers import Item, SideOutput

_NEXT, _ERROR, _DONE = 0, 1, 2


@dataclass(frozen=True)
class ThreadBoundary:
    capacity: int = 16
    policy: str = "block"
    name: str = "thread boundary"

    def __post_init__(self) -> None:
        try:
            BoundaryOptions(self.capacity, self.policy)
        except ConfigError as error:
            raise ConfigError(f"ThreadBoundary: {error}") from None

    def __call__(self, source: Observable[Item]) -> Observable[Item]:
        def subscribe(
            observer: abc.ObserverBase[Item], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            queue: BoundedQueue[tuple[int, object]] = BoundedQueue(
                BoundaryOptions(self.capacity, self.policy), self.name
            )
            failure: list[BaseException] = []

            def work() -> None:
                while True:
                    entry = queue.get(timeout=1.0)
                    if entry is None:
                        continue
                    kind, value = entry
                    try:
                        if kind == _NEXT:
                            observer.on_next(value)
                            continue
                        if kind == _ERROR:
                            observer.on_error(value)  # type: ignore[arg-type]
                        else:
                            observer.on_completed()
                    except BaseException as error:
                        failure.append(error)
                        queue.close()
                    return

            thread = threading.Thread(target=work, name=self.name, daemon=True)
            thread.start()

            def raise_if_failed() -> None:
                if failure:
                    raise failure[0]

            def on_next(item: Item) -> None:
                raise_if_failed()
                rows = None
                if isinstance(item, pa.RecordBatch):
                    rows = item.num_rows
                elif isinstance(item, SideOutput):
                    rows = item.batch.num_rows
                queue.put((_NEXT, item), rows)

            def finish(entry: tuple[int, object]) -> None:
                queue.put(entry, None)
                thread.join()
                raise_if_failed()

            return source.subscribe(
                on_next,
                lambda error: finish((_ERROR, error)),
                lambda: finish((_DONE, None)),
                scheduler=scheduler,
            )

        return reactivex.create(subscribe)
