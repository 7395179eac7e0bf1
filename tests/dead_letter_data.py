"""Dead letters made by a real pipeline run, for the store's and the replay's tests: a
telepipe capture of good and malformed SBE messages, replayed into a data dir. The
fixtures those tests share are in tests/dead_letter_fixtures.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
from deltalake import CommitProperties, write_deltalake
from helpers import ROOT, SCHEMA_XML

from telepipe.dead_letters import DeadLetter, dead_letters_batch
from telepipe.sbe import SbeCodec
from telepipe.sources.capture import CaptureWriter
from telepipe.sources.frames import align

T0 = 1_767_225_600_000_000_000
STREAM, SESSION = 1001, 7
MTU_PAYLOAD = 1376
CODEC = SbeCodec.from_xml(SCHEMA_XML)


def telemetry(seq: int, n: int = 10, sensor0: int = 0) -> bytes:
    return CODEC.encode(
        {
            "sensor_id": np.arange(sensor0, sensor0 + n, dtype=np.int32),
            "ts": np.full(n, T0 + seq * 1_000_000, np.int64),
            "value": np.linspace(1.0, 50.0, n),
            "quality": np.zeros(n, np.uint8),
        },
        source_id=1,
        batch_seq=seq,
    )


def messages() -> tuple[list[bytes], dict[int, str]]:
    """20 messages; the ones at the keys are malformed with that reason (one fragmented)."""
    payloads = [telemetry(i) for i in range(20)]
    payloads[3] = payloads[3][:-5]
    payloads[7] = payloads[7] + b"junk"
    wrong = bytearray(payloads[11])
    wrong[4:6] = (999).to_bytes(2, "little")
    payloads[11] = bytes(wrong)
    payloads[13] = payloads[13][:3]
    payloads[15] = telemetry(15, n=300)[:-7]  # 6317 bytes: five fragments on the wire
    reasons = {
        3: "truncated_group",
        7: "trailing_bytes",
        11: "wrong_schema_id",
        13: "truncated_header",
        15: "truncated_group",
    }
    return payloads, reasons


def write_capture(directory: Path, payloads: list[bytes]) -> list[int]:
    """Frames as Aeron delivers them (<= 1376-byte fragments); the end position of each."""
    ends, position = [], 0
    with CaptureWriter(directory, channel="aeron:ipc", stream_id=STREAM) as writer:
        for i, payload in enumerate(payloads):
            chunks = [payload[k : k + MTU_PAYLOAD] for k in range(0, len(payload), MTU_PAYLOAD)]
            for k, chunk in enumerate(chunks):
                flags = (0x80 if k == 0 else 0) | (0x40 if k == len(chunks) - 1 else 0)
                start, position = position, position + align(len(chunk) + 32)
                writer.append(
                    chunk, received_ns=T0 + i * 1000, position=position, flags=flags,
                    term_offset=start, session_id=SESSION, stream_id=STREAM,
                )  # fmt: skip
            ends.append(position)
    return ends


#: What a run's commit carries (sinks/delta.py): what the audit check takes for a run's.
RUN_COMMIT = CommitProperties(custom_metadata={"telepipe.app_id": "telepipe"})


def add_letters(data_dir: Path, letters: list[DeadLetter]) -> None:
    """Dead letters written as the pipeline's sink writes them (kudu/sink row errors)."""
    write_deltalake(
        str(data_dir / "dead_letters"),
        dead_letters_batch(letters),
        mode="append",
        commit_properties=RUN_COMMIT,
    )


def good_letter(position: int = 4096) -> DeadLetter:
    """A valid message that was dead-lettered by a sink (it decodes on replay)."""
    payload = telemetry(1, n=10, sensor0=5000)
    return DeadLetter("sink_row_error", "kudu: timed out", STREAM, 99, position, T0, payload)


def colliding_pair() -> list[DeadLetter]:
    """Two letters whose ids share their first 4 hex digits (for ambiguous prefixes)."""
    seen: dict[str, DeadLetter] = {}
    for k in range(1, 100_000):
        letter = DeadLetter("sink_row_error", "x", STREAM, 98, k * 1024, T0, b"\0" * 8)
        if letter.id[:4] in seen:
            return [seen[letter.id[:4]], letter]
        seen[letter.id[:4]] = letter
    raise AssertionError("no collision")


def replayed_into(base: Path) -> tuple[Path, list[int]]:
    """``messages()`` captured under ``base`` and replayed through the demo pipeline into
    ``base/data``: (the data dir, the end position of each message)."""
    payloads, _ = messages()
    ends = write_capture(base / "capture", payloads)
    done = subprocess.run(
        [sys.executable, "-m", "telepipe.cli", "replay", "pipeline=demo",
         f"input={base / 'capture'}", f"data_dir={base / 'data'}", "ui=never"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return base / "data", ends


def readings(data_dir: Path) -> pl.DataFrame:
    return pl.read_delta(str(data_dir / "readings"))
