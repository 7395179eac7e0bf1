"""ActorStage's work done by a peer actor library (run inside its own venv; last line JSON).

    .venv-peers/pykka/bin/python benchmarks/peers/actors/peer_bench.py pykka
    .venv-peers/thespian/bin/python benchmarks/peers/actors/peer_bench.py thespian

The same work as ``benchmarks/actors.py``, one actor object per entity (what these
libraries offer), one message per row:

- ``spawn_us``: cost to create an actor (1,000 of them);
- ``messages_per_s``: a counter over ``rows`` rows spread at random over 1,000
  entities (a ``tell`` per row; then an ``ask`` each for its count, so every message
  was handled);
- ``recovery_entities_per_s`` / ``recovery_events_per_s``: ``entities`` actors each
  created and fed its 20 journaled events (the fold), then asked for its state: what
  recovery from a journal is for an actor-object runtime (neither library persists).
"""

from __future__ import annotations

import json
import random
import sys
import time


def pykka_runtime():  # type: ignore[no-untyped-def]
    import pykka

    class Count(pykka.ThreadingActor):
        def __init__(self) -> None:
            super().__init__()
            self.count = 0
            self.total = 0.0

        def on_receive(self, message):  # type: ignore[no-untyped-def]
            if message is None:
                return self.count
            self.count += 1
            self.total += message
            return None

    def spawn():  # type: ignore[no-untyped-def]
        return Count.start()

    def tell(ref, value):  # type: ignore[no-untyped-def]
        ref.tell(value)

    def ask(ref):  # type: ignore[no-untyped-def]
        return ref.ask(None)

    def stop() -> None:
        pykka.ActorRegistry.stop_all()

    from importlib.metadata import version

    return spawn, tell, ask, stop, version("pykka")


def thespian_runtime():  # type: ignore[no-untyped-def]
    from importlib.metadata import version

    from thespian.actors import Actor, ActorSystem

    class Count(Actor):
        def receiveMessage(self, message, sender):  # type: ignore[no-untyped-def]
            if not hasattr(self, "count"):
                self.count, self.total = 0, 0.0
            if message == "?":
                self.send(sender, self.count)
            elif isinstance(message, float):
                self.count += 1
                self.total += message

    system = ActorSystem("simpleSystemBase")

    def spawn():  # type: ignore[no-untyped-def]
        return system.createActor(Count)

    def tell(ref, value):  # type: ignore[no-untyped-def]
        system.tell(ref, value)

    def ask(ref):  # type: ignore[no-untyped-def]
        return system.ask(ref, "?", 10)

    def stop() -> None:
        system.shutdown()

    return spawn, tell, ask, stop, version("thespian")


def main() -> int:
    peer = sys.argv[1]
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    entities = int(sys.argv[3]) if len(sys.argv) > 3 else 2_000
    spawn, tell, ask, stop, ver = pykka_runtime() if peer == "pykka" else thespian_runtime()
    out: dict[str, object] = {"peer": peer, "version": ver, "rows": rows, "entities": entities}
    try:
        started = time.perf_counter()
        refs = [spawn() for _ in range(1000)]
        out["spawn_us"] = (time.perf_counter() - started) / 1000 * 1e6
        rng = random.Random(1)
        keys = [rng.randrange(1000) for _ in range(rows)]
        values = [rng.random() for _ in range(rows)]
        started = time.perf_counter()
        for k, v in zip(keys, values, strict=True):
            tell(refs[k], v)
        counted = sum(ask(r) for r in refs)
        out["messages_per_s"] = rows / (time.perf_counter() - started)
        assert counted == rows, (counted, rows)
        stop()
        spawn, tell, ask, stop, _ = pykka_runtime() if peer == "pykka" else thespian_runtime()
        started = time.perf_counter()
        fresh = []
        for _ in range(entities):
            ref = spawn()
            for e in range(20):
                tell(ref, float(e))
            fresh.append(ref)
        restored = sum(ask(r) for r in fresh)
        seconds = time.perf_counter() - started
        assert restored == 20 * entities
        out["recovery_entities_per_s"] = entities / seconds
        out["recovery_events_per_s"] = 20 * entities / seconds
    finally:
        stop()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
