"""Fuzzing the recorded inputs (issue 17 item 6): a real tcpdump pcap, an Aeron Archive
and a telepipe capture of the same live messages, each mutated several times at random
(bits flipped, ranges zeroed, overwritten with noise or with bytes from elsewhere,
repeated, deleted, swapped, the file cut). ``telepipe inspect``'s report and a full
replay (``ReplaySource``, decoding included) of every mutant, in process, and a few
through the CLI, must show:

- no traceback: only the project's one-line errors (``SourceError``/``ConfigError``);
- no hang: a deadline per example (``HANG_S``);
- the damage accounted: a mutant that yields fewer messages than the good input
  counts some damage (a changed payload byte is not seen: pcap and archive frames
  carry no checksum of their own, so only losses are asserted).

The default run is bounded (< ~30 s here); ``-m slow`` runs many more examples.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from archive_builder import archive_of
from capture_builder import write_capture
from helpers import ROOT, SCHEMA_XML
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telepipe.errors import ConfigError, SourceError
from telepipe.pipelines.inspect import build_report
from telepipe.sbe import SbeCodec
from telepipe.sources.decoder import DecoderOptions
from telepipe.sources.frames import FrameAssembler
from telepipe.sources.pcap import PcapReader
from telepipe.sources.replay import ReplayOptions, ReplaySource, open_input

HANG_S = 20.0  # per example: reading a few MB must never take this long
CODEC = SbeCodec.from_xml(SCHEMA_XML)
KINDS = ("pcap", "archive", "capture")


class Inputs(dict[str, tuple[Path, int]]):
    """kind -> (good input, its message count); a short repr for hypothesis."""

    def __repr__(self) -> str:
        return f"Inputs({sorted(self)})"


@pytest.fixture(scope="module")
def inputs(capture: tuple[Path, list[bytes]], tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    """The tcpdump pcap; an archive and a capture holding the same messages as a live
    publisher and the recorder lay them out."""
    pcap, sent = capture
    base = tmp_path_factory.mktemp("fuzz")
    archive_of(base / "archive", [(1001, 77, [(p, 0) for p in sent])], 64 << 10, 256 << 10)
    frames = list(PcapReader(pcap).frames())
    write_capture(base / "capture", frames, segment_bytes=400_000, index_every_bytes=50_000)
    found = Inputs(pcap=(pcap, len(sent)))
    for kind in ("archive", "capture"):
        found[kind] = (base / kind, count(base / kind))
        assert found[kind][1] == len(sent)
    return found


def count(path: Path) -> int:
    return sum(1 for _ in FrameAssembler().assemble(open_input(path).frames()))


class Hang(Exception):
    pass


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    def expired(*_: object) -> None:
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- mutations ---------------------------------------------------------------------------

Mutation = Callable[[bytearray, random.Random], None]


def _span(raw: bytearray, rng: random.Random, most: int = 4096) -> tuple[int, int]:
    at = rng.randrange(len(raw))
    return at, min(len(raw), at + rng.randint(1, most))


def flip(raw: bytearray, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 8)):
        raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)


def zero(raw: bytearray, rng: random.Random) -> None:
    a, b = _span(raw, rng)
    raw[a:b] = bytes(b - a)


def noise(raw: bytearray, rng: random.Random) -> None:
    a, b = _span(raw, rng, 256)
    raw[a:b] = rng.randbytes(b - a)


def copy(raw: bytearray, rng: random.Random) -> None:  # bytes from elsewhere, in place
    a, b = _span(raw, rng)
    at = rng.randrange(len(raw))
    raw[at : at + b - a] = raw[a:b]


def repeat(raw: bytearray, rng: random.Random) -> None:
    a, b = _span(raw, rng)
    raw[b:b] = raw[a:b]


def delete(raw: bytearray, rng: random.Random) -> None:
    a, b = _span(raw, rng)
    del raw[a:b]


def swap(raw: bytearray, rng: random.Random) -> None:
    a, b = _span(raw, rng, 2048)
    c, d = _span(raw, rng, 2048)
    if b <= c:
        raw[a:d] = raw[c:d] + raw[b:c] + raw[a:b]


def cut(raw: bytearray, rng: random.Random) -> None:
    del raw[rng.randrange(len(raw)) :]


MUTATIONS: dict[str, Mutation] = {
    f.__name__: f for f in (flip, zero, noise, copy, repeat, delete, swap, cut)
}


def files_of(path: Path) -> list[Path]:
    """The files a mutation may hit: the pcap; segments and catalog (archive); segments
    and index (capture). Pre-sized archive segments: only their written part."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.suffix in (".rec", ".catalog", ".tpcap", ".tpidx"))


def mutate(path: Path, names: list[str], rng: random.Random) -> list[str]:
    done = []
    files = files_of(path)
    for name in names:
        target = rng.choice(files)
        raw = bytearray(target.read_bytes())
        if target.suffix in (".rec", ".catalog"):  # the used part of a pre-sized file
            used = len(raw.rstrip(b"\0")) or 1
            head, tail = raw[:used], raw[used:]
            if head:
                MUTATIONS[name](head, rng)
            raw = head + tail if name not in ("cut", "delete") else head
        elif raw:
            MUTATIONS[name](raw, rng)
        target.write_bytes(bytes(raw))
        done.append(f"{name} {target.name}")
    return done


# -- what every mutant must show ------------------------------------------------------------


def one_line(error: Exception) -> None:
    assert isinstance(error, SourceError | ConfigError), repr(error)
    assert "\n" not in str(error) and str(error), repr(error)


def check(path: Path, good: int) -> None:
    """inspect's report and a full replay: one-line errors only, in time, losses counted."""
    with deadline(HANG_S):
        try:
            report = build_report(str(path))
        except (SourceError, ConfigError) as error:
            one_line(error)
            return
        damage = (
            sum(report.malformed.values()) + sum(report.unreadable.values()) + len(report.gaps)
            + report.dropped_fragments + report.out_of_place
        )  # fmt: skip
        if report.messages < good:
            assert damage > 0, report
        try:
            source = ReplaySource(path, ReplayOptions(), CODEC, DecoderOptions())
            while not source.exhausted:
                source.poll()
        except (SourceError, ConfigError) as error:
            one_line(error)
            return
        if source.assembler.counters.messages < good:
            assert source.damage, path


def fuzz(inputs: Inputs, tmp_path: Path, kind: str, names: list[str], seed: int) -> None:
    source, good = inputs[kind]
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    path = work / source.name
    if source.is_file():
        shutil.copyfile(source, path)
    else:
        shutil.copytree(source, path)
    mutate(path, names, random.Random(seed))
    check(path, good)
    shutil.rmtree(work)


EXAMPLE = (
    st.sampled_from(KINDS),
    st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=1, max_size=4),
    st.integers(0, 2**32),
)
SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    "derandomize": True,  # CI: the same examples every run (bounded, reproducible)
}


@settings(max_examples=250, **SETTINGS)  # type: ignore[arg-type]
@given(*EXAMPLE)
def test_mutated_inputs_give_one_line_errors_no_hang_and_count_their_losses(
    inputs: Inputs, tmp_path: Path, kind: str, names: list[str], seed: int
) -> None:
    fuzz(inputs, tmp_path, kind, names, seed)


@pytest.mark.slow
@settings(max_examples=1500, **{**SETTINGS, "derandomize": False})  # type: ignore[arg-type]
@given(*EXAMPLE)
def test_mutated_inputs_many_more(
    inputs: Inputs, tmp_path: Path, kind: str, names: list[str], seed: int
) -> None:
    fuzz(inputs, tmp_path, kind, names, seed)


# -- through the CLI ------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("TELEPIPE_CONF", None)
    return subprocess.run(
        [sys.executable, "-m", "telepipe.cli", *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )  # fmt: skip


def check_cli(path: Path, data_dir: Path, good: int) -> None:
    """``telepipe inspect --json`` and ``telepipe replay``: exit 0 or one ``telepipe:
    error:`` line, never a traceback; a replay that lost messages says so."""
    outcomes = []
    for args in (
        ["inspect", "--json", str(path)],
        ["replay", f"input={path}", f"data_dir={data_dir}", "ui=never"],
    ):
        done = cli(*args)
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode in (0, 1, 2), (args, done.returncode, done.stderr)
        if done.returncode:
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr
            assert done.stderr.startswith("telepipe: error: "), done.stderr
        outcomes.append(done)
    inspected, replayed = outcomes
    if (inspected.returncode, replayed.returncode) == (0, 0) and (
        json.loads(inspected.stdout)["messages"] < good
    ):
        assert "telepipe: input damage: " in replayed.stdout, replayed.stdout


@pytest.mark.parametrize("kind", KINDS)
def test_mutants_through_the_cli(inputs: Inputs, tmp_path: Path, kind: str) -> None:
    source, good = inputs[kind]
    path = tmp_path / source.name
    if source.is_file():
        shutil.copyfile(source, path)
    else:
        shutil.copytree(source, path)
    rng = random.Random(17)
    mutate(path, ["flip", "repeat", "zero", "copy"], rng)
    check_cli(path, tmp_path / "out", good)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(12))
def test_more_mutants_through_the_cli(inputs: Inputs, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    kind = KINDS[seed % 3]
    source, good = inputs[kind]
    path = tmp_path / source.name
    if source.is_file():
        shutil.copyfile(source, path)
    else:
        shutil.copytree(source, path)
    mutate(path, rng.sample(sorted(MUTATIONS), 3), rng)
    check_cli(path, tmp_path / "out", good)
