"""``telepipe driver``: a standalone Aeron media driver, like ``aeronmd``.

Several processes on one host (simulator, capture, pipeline, workers) share
streams through one driver: each points ``aeron.dir`` at this one's directory.
"""

from __future__ import annotations

import signal
import threading

from telepipe.aeron import start_driver


def driver(directory: str | None) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    media_driver = start_driver(directory)
    print(f"aeron.dir={media_driver.dir}", flush=True)
    try:
        stop.wait()
    finally:
        media_driver.close()
    return 0
