"""Shared fixtures: the repo's paths, the telepipe CLI as a subprocess, free UDP ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_XML = ROOT / "conf" / "schema" / "telemetry.xml"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def telepipe_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``telepipe ARGS`` in its own process and return the completed process."""

    def run(*args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env.pop("TELEPIPE_CONF", None)
        return subprocess.run(
            [sys.executable, "-m", "telepipe.cli", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=env,
        )

    return run
