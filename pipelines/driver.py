"""``telepipe driver``: a standalone Aeron media driver, like ``aeronmd``.

Several processes on one host (simulator, capture, pipeline, workers) share
streams through one driver: each points ``aeron.dir`` at this one's directory.
"""

from __future__ import annotations

import os
import signal
import threading

from telepipe.aeron import remove_private_parent, start_driver


def driver(directory: str | None, shared: bool = False) -> int:
    """Run a driver until SIGINT/SIGTERM. Its files are its owner's alone (umask 077:
    they hold every message) unless ``shared``: then other local users' clients
    (which need to write ``cnc.dat``) may connect, under the usual umask."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    if not shared:
        os.umask(0o077)  # this process runs the driver and nothing else
    media_driver = start_driver(directory)
    print(f"aeron.dir={media_driver.dir}", flush=True)
    try:
        stop.wait()
    finally:
        media_driver.close()
        remove_private_parent(media_driver.dir)
    return 0
