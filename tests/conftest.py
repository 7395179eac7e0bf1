"""Shared fixtures: the telepipe CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest
from helpers import ROOT


def _cli() -> Callable[..., subprocess.CompletedProcess[str]]:

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


@pytest.fixture
def telepipe_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``telepipe ARGS`` in its own process and return the completed process."""
    return _cli()


@pytest.fixture(scope="module")
def telepipe_cli_module() -> Callable[..., subprocess.CompletedProcess[str]]:
    return _cli()
