"""``telepipe simulate``: publish simulated telemetry on the configured Aeron stream."""

from __future__ import annotations

import json
import signal
import time
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig

from telepipe.aeron import AeronConnection
from telepipe.config import build, option
from telepipe.errors import ConfigError
from telepipe.sources.simulator import Simulator


def simulate(cfg: DictConfig) -> int:
    if not option(cfg, "simulator.enabled") or option(cfg, "simulator.options") is None:
        raise ConfigError("telepipe simulate needs a simulator: simulator=default, not none")
    options = build(cfg.simulator.options, "simulator.options")
    source = build(cfg.source, "source")
    codec = build(cfg.schema, "schema")
    limit = option(cfg, "limit.readings")
    stats_file = option(cfg, "stats_file")
    with AeronConnection(build(cfg.aeron, "aeron")) as connection:
        simulator = Simulator(options, codec, connection, source.channel, source.stream_id)

        def stop(_signum: int, _frame: object) -> None:
            simulator.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            counters = simulator.run(limit)
        finally:
            if stats_file:
                Path(stats_file).write_text(json.dumps(asdict(simulator.counters)))
        # Keep the publication until told to stop (or linger_s passes) so the
        # subscriber drains the log before the publication's image goes away.
        deadline = time.monotonic() + float(option(cfg, "simulator.linger_s") or 0.0)
        while not simulator.stopped and time.monotonic() < deadline:
            time.sleep(0.05)
        simulator.close()
    print(json.dumps(asdict(counters)))
    return 0
