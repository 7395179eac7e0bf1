"""Helpers shared by the tests: repo paths and free UDP ports on loopback."""

from __future__ import annotations

import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_XML = ROOT / "conf" / "schema" / "telemetry.xml"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
