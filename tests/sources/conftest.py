"""Fixtures shared by the recorded-input tests: a real tcpdump capture, made once."""

from __future__ import annotations

from pathlib import Path

import pytest
from pcap_live import record_live_pcap


@pytest.fixture(scope="session")
def capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    """(pcap path, messages sent) of a live UDP run captured by tcpdump."""
    path = tmp_path_factory.mktemp("pcap") / "aeron.pcap"
    return path, record_live_pcap(path)
