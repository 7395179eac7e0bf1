"""``CepPattern``: per-sensor event patterns in the spirit of FlinkCEP / MATCH_RECOGNIZE.

A pattern is a sequence of steps (``begin``, ``next``, ``followed_by``,
``followed_by_any``, ``not_next``, ``not_followed_by``) with quantifiers
(``times(n)``, ``times(n, m)``, ``one_or_more``, ``times_or_more(n)``,
``optional``; reluctant or ``greedy``) and a ``within`` time bound (exact ns or
Flink's whole-ms clock), over conditions on the reading's columns
(``value > 80 and quality == 192``). It is compiled to an NFA whose transition
table a numba kernel runs per sensor in event-time order, with an after-match skip
strategy (past the last event by default; to next, to first/last of a step, none).
The exact semantics, and each feature's FlinkCEP / MATCH_RECOGNIZE equivalent, are
in ``docs/operators/patterns.md``.

Python::

    Pattern.begin("high", "value > 80").times(3).followed_by("low", "value < 20")
        .within(ms=5000).operator("spike_then_drop")
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from telepipe.errors import ConfigError
from telepipe.markers import MAX_WATERMARK, State
from telepipe.operators.detectors.base import DetectorLogic, check_int
from telepipe.operators.patterns import _compiler as pc
from telepipe.operators.patterns import _nfa_kernels as pk
from telepipe.operators.patterns import _store_kernels as ps
from telepipe.operators.runtime.key_index import KeyIndex, grown_state
from telepipe.operators.runtime.snapshot import as_array, as_int
from telepipe.operators.runtime.stage import StageOperator
from telepipe.operators.windows.options import MAX_MS
from telepipe.schema import TS_NS, arrow_column

SKIPS = ("skip_past_last_event", "skip_to_next", "skip_to_first", "skip_to_last", "no_skip")
PATTERN_MATCHES = pa.schema(
    [
        pa.field("pattern", pa.string(), nullable=False),
        pa.field("sensor_id", pa.int32(), nullable=False),
        pa.field("start_ts", TS_NS, nullable=False),
        pa.field("end_ts", TS_NS, nullable=False),
        pa.field("n_events", pa.int32(), nullable=False),
        pa.field("values", pa.list_(pa.float64()), nullable=False),
        pa.field("event_ts", pa.list_(TS_NS), nullable=False),
        pa.field("steps", pa.list_(pa.string()), nullable=False),
    ]
)


@dataclass(frozen=True)
class PatternStep:
    """One step: ``contiguity`` to the step before (``begin`` for the first one),
    a ``condition`` on ``value``/``quality``/``sensor_id``, a ``quantifier``
    (``once``, ``times(n)``, ``times(n, m)``, ``one_or_more``, ``times_or_more(n)``),
    ``optional`` (also zero times), ``consecutive`` (repeated events strictly
    contiguous; relaxed by default, as FlinkCEP) and ``greedy`` (a variable count
    takes every reading it can: the next step's first event must not meet this
    step's condition, as FlinkCEP ``greedy()`` and MATCH_RECOGNIZE ``A+``; reluctant
    by default, as FlinkCEP's API and MATCH_RECOGNIZE ``A+?``)."""

    name: str
    condition: str = "true"
    contiguity: str = "followed_by"
    quantifier: str = "once"
    optional: bool = False
    consecutive: bool = False
    greedy: bool = False


@dataclass(frozen=True)
class Pattern:
    """Immutable builder: each call returns a new pattern (quantifiers apply to the last step)."""

    steps: tuple[PatternStep, ...]
    within_ms: int | None = None
    within_ns: int | None = None
    within_clock: str = "ns"
    after_match: str = "skip_past_last_event"
    after_match_step: str | None = None

    @classmethod
    def begin(cls, name: str, condition: str = "true") -> Pattern:
        return cls((PatternStep(name, condition, "begin"),))

    def _add(self, name: str, condition: str, contiguity: str) -> Pattern:
        return dataclasses.replace(
            self, steps=(*self.steps, PatternStep(name, condition, contiguity))
        )

    def next(self, name: str, condition: str = "true") -> Pattern:
        return self._add(name, condition, "next")

    def followed_by(self, name: str, condition: str = "true") -> Pattern:
        return self._add(name, condition, "followed_by")

    def followed_by_any(self, name: str, condition: str = "true") -> Pattern:
        """Relaxed, skip till any match (FlinkCEP ``followedByAny``): a reading that
        meets the step is taken and also skipped, so later ones start other branches."""
        return self._add(name, condition, "followed_by_any")

    def not_next(self, name: str, condition: str) -> Pattern:
        return self._add(name, condition, "not_next")

    def not_followed_by(self, name: str, condition: str) -> Pattern:
        return self._add(name, condition, "not_followed_by")

    def _last(self, **changes: object) -> Pattern:
        last = dataclasses.replace(self.steps[-1], **changes)  # type: ignore[arg-type]
        return dataclasses.replace(self, steps=(*self.steps[:-1], last))

    def times(self, n: int, m: int | None = None) -> Pattern:
        return self._last(quantifier=f"times({n})" if m is None else f"times({n}, {m})")

    def one_or_more(self) -> Pattern:
        return self._last(quantifier="one_or_more")

    def times_or_more(self, n: int) -> Pattern:
        return self._last(quantifier=f"times_or_more({n})")

    def optional(self) -> Pattern:
        return self._last(optional=True)

    def consecutive(self) -> Pattern:
        return self._last(consecutive=True)

    def greedy(self, greedy: bool = True) -> Pattern:
        """The last step's quantifier greedy (``A+``) or, ``False``, reluctant (``A+?``)."""
        return self._last(greedy=greedy)

    def within(
        self, ms: int = 0, s: int = 0, *, us: int = 0, ns: int = 0, clock: str = "ns"
    ) -> Pattern:
        """A match spans less than ``s + ms + us + ns``. ``clock="ns"``: exact
        nanosecond timestamps; ``"ms"``: both floored to whole milliseconds (Flink)."""
        span = ((s * 1000 + ms) * 1000 + us) * 1000 + ns
        if span % 1_000_000 == 0:
            return dataclasses.replace(
                self, within_ms=span // 1_000_000, within_ns=None, within_clock=clock
            )
        return dataclasses.replace(self, within_ms=None, within_ns=span, within_clock=clock)

    def after(self, strategy: str, step: str | None = None) -> Pattern:
        """The after-match skip strategy (FlinkCEP's ``AfterMatchSkipStrategy``):
        ``skip_past_last_event`` (default), ``skip_to_next``, ``skip_to_first`` /
        ``skip_to_last`` (with ``step``) or ``no_skip``."""
        return dataclasses.replace(self, after_match=strategy, after_match_step=step)

    def operator(self, name: str = "pattern", **options: int) -> CepPattern:
        return CepPattern(
            name,
            self.steps,
            self.within_ms,
            self.within_ns,
            self.within_clock,
            self.after_match,
            self.after_match_step,
            **options,
        )


@dataclass(frozen=True)
class CepPattern(StageOperator):
    """Emit one ``PATTERN_MATCHES`` row per match of ``steps`` within a sensor's readings.

    Readings are buffered until the watermark passes them and taken per sensor in
    (ts, arrival) order; rows late at arrival are dropped and counted
    (``logic.late_rows``). Per sensor at most ``max_partial_matches`` partial (and
    held complete) matches are kept: beyond that those of the oldest start event
    are dropped (``logic.dropped_partial_matches``); a match is never extended past
    ``max_match_events`` events (refused takes: ``logic.overflow_matches``).
    Partial matches end when ``within_ms`` (or ``within_ns``) has passed since their
    first event: ``within_clock="ns"`` (default) compares exact nanosecond
    timestamps, ``"ms"`` compares them floored to whole milliseconds, as Flink does
    (its rowtime is ``TIMESTAMP(3)``).
    """

    name: str = "pattern"
    steps: tuple[PatternStep, ...] = ()
    within_ms: int | None = None
    within_ns: int | None = None
    within_clock: str = "ns"
    after_match: str = "skip_past_last_event"
    after_match_step: str | None = None
    max_partial_matches: int = 64
    max_match_events: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"CepPattern.name must be a non-empty string, got {self.name!r}")
        steps = _steps_tuple(self.steps)
        object.__setattr__(self, "steps", steps)
        if self.within_ms is not None:
            check_int("CepPattern", "within_ms", self.within_ms, 1, MAX_MS)
        if self.within_ns is not None:
            check_int("CepPattern", "within_ns", self.within_ns, 1, MAX_MS * 1_000_000)
            if self.within_ms is not None:
                raise ConfigError("CepPattern: give within_ms or within_ns, not both")
        if self.within_clock not in ("ns", "ms"):
            raise ConfigError(
                f"CepPattern.within_clock must be 'ns' or 'ms', got {self.within_clock!r}"
            )
        if self.within_clock == "ms" and self.within_span_ns % 1_000_000:
            raise ConfigError("CepPattern: within_clock 'ms' needs a whole number of milliseconds")
        check_int("CepPattern", "max_partial_matches", self.max_partial_matches, 1, 100_000)
        check_int("CepPattern", "max_match_events", self.max_match_events, 1, 100_000)
        if self.after_match not in SKIPS:
            raise ConfigError(
                f"CepPattern.after_match must be one of {', '.join(SKIPS)}, "
                f"got {self.after_match!r}"
            )
        positive = [st.name for st in steps if st.contiguity not in pc.NEGATIONS]
        if self.after_match in ("skip_to_first", "skip_to_last"):
            if self.after_match_step not in positive:
                raise ConfigError(
                    f"CepPattern.after_match {self.after_match} needs after_match_step, "
                    f"one of {', '.join(positive)}; got {self.after_match_step!r}"
                )
        elif self.after_match_step is not None:
            raise ConfigError(
                f"CepPattern.after_match_step is only for skip_to_first / skip_to_last, "
                f"not {self.after_match}"
            )
        span = self.within_ms if self.within_ns is None else self.within_ns
        object.__setattr__(self, "_compiled", pc.compile_steps(steps, span))

    @property
    def output_schema(self) -> pa.Schema:
        return PATTERN_MATCHES

    @property
    def within_span_ns(self) -> int:
        """``within`` in nanoseconds (0: none)."""
        if self.within_ns is not None:
            return self.within_ns
        return 0 if self.within_ms is None else self.within_ms * 1_000_000

    def build(self) -> CepPatternLogic:
        return CepPatternLogic(self)


def _steps_tuple(value: object) -> tuple[PatternStep, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"CepPattern.steps must be a non-empty list of steps, got {value!r}")
    steps = []
    for i, step in enumerate(value):
        if isinstance(step, dict):
            try:
                step = PatternStep(**step)
            except TypeError as error:
                raise ConfigError(f"CepPattern.steps[{i}]: {error}") from None
        if not isinstance(step, PatternStep):
            raise ConfigError(f"CepPattern.steps[{i}] must be a step, got {step!r}")
        steps.append(step)
    return tuple(steps)


_MIN_NODES = 4096


class CepPatternLogic(DetectorLogic):
    """Event-time buffer (``DetectorLogic``) + per-sensor NFA state (``_pattern_kernels``)."""

    def __init__(self, op: CepPattern) -> None:
        super().__init__(op, 0, 0, with_quality=True)
        compiled: pc.Compiled = op._compiled  # type: ignore[attr-defined]
        self.pattern = op.name
        self.trees = compiled.trees
        self.step_names = pa.array(compiled.names, pa.string())
        self.tab = compiled.nfa.table
        self._skip_idle = pc.idle_rows_do_nothing(self.tab)
        self._idle_fixed = pk._idle_fixed_kernel(self.tab)
        self._skip_fixed = True  # walk only the partial matches a row changes (tests: off)
        self.within = op.within_span_ns
        self.within_unit = 1_000_000 if op.within_clock == "ms" else 1
        kind = SKIPS.index(op.after_match)
        target = compiled.names.index(op.after_match_step) if op.after_match_step else -1
        self.skip = np.array([kind, target], np.int64)
        self.cap = op.max_partial_matches
        self.L = pc.max_events(compiled.nfa.elements, op.max_match_events)
        n_states = len(self.tab)
        self.chain = n_states
        self.pos = 0
        self.counters = np.zeros(2, np.int64)
        self._scratch = np.empty((self.cap + (self.cap + 1) * (2 * n_states + 1), 7), np.int64)
        self._o_meta = np.empty((2 * (self.cap + len(self._scratch)) + 1024, 5), np.int64)
        self._tmp = (np.empty(self.L, np.int64), np.empty(self.L, np.int64))
        self._set_slots(np.empty(0, np.int32), np.empty((0, 7), np.int64), *_no_events())

    # -- counters

    @property
    def dropped_partial_matches(self) -> int:
        return int(self.counters[pk.C_DROPPED])

    @property
    def overflow_matches(self) -> int:
        return int(self.counters[pk.C_OVERFLOW])

    # -- state

    def _set_slots(self, sids, meta, offsets, pos, ts, step, value) -> None:
        """Load entries (``meta`` rows without heads) and their events, keyed by ``sids``."""
        self._keys = KeyIndex()
        self.nslot = np.zeros(0, np.int64)
        # (known, until, earliest deadline, deadline known): see the kernel.
        self._idle = np.zeros((0, 4), np.int64)
        self._blk = np.zeros(0, np.int64)  # by key: its block of entries (-1: none)
        self.block = np.zeros((0, 7), np.int64)
        self._n_blocks = 0
        keys = self._add_keys(sids)
        self._add_blocks(keys)
        n_ev = len(pos)
        pool = _MIN_NODES
        while pool < 2 * n_ev:
            pool *= 2
        self.nd = np.zeros((pool, 4), np.int64)
        self.nd_val = np.zeros(pool, np.float64)
        lens = np.diff(offsets)
        self.nd[:n_ev, pk.N_POS] = pos
        self.nd[:n_ev, pk.N_TS] = ts
        self.nd[:n_ev, pk.N_STEP] = step
        self.nd[:n_ev, pk.N_PREV] = np.arange(-1, n_ev - 1)
        self.nd_val[:n_ev] = value
        if n_ev:
            self.nd[offsets[:-1][lens > 0], pk.N_PREV] = -1
        self.n_nodes = n_ev
        for r, k in enumerate(keys.tolist()):
            q = self._blk[k] * self.cap + self.nslot[k]
            self.block[q, :6] = meta[r, :6]
            self.block[q, pk.S_HEAD] = offsets[r + 1] - 1 if lens[r] else -1
            self.nslot[k] += 1

    def _add_keys(self, sids: np.ndarray) -> np.ndarray:
        """The ``KeyIndex`` slots of ``sids``, with per-key state to match."""
        slots = self._keys.slots(sids)
        n = self._keys.n
        self.nslot = grown_state(self.nslot, n, 0)
        self._idle = grown_state(self._idle, n, 0)
        self._blk = grown_state(self._blk, n, -1)
        return slots

    def _add_blocks(self, slots: np.ndarray) -> None:
        """A block of ``max_partial_matches`` entries for each of ``slots`` without one."""
        need = np.unique(slots[self._blk[slots] < 0])
        if len(need) == 0:
            return
        self._blk[need] = np.arange(self._n_blocks, self._n_blocks + len(need))
        self._n_blocks += len(need)
        by_block = self.block.reshape(-1, self.cap, 7)
        self.block = grown_state(by_block, self._n_blocks, 0).reshape(-1, 7)

    def _grow_nodes(self, need: int) -> None:
        self.n_nodes = ps._pattern_gc_kernel(
            self.nd,
            self.nd_val,
            self.n_nodes,
            self.cap,
            self._keys.n,
            self.nslot,
            self._blk,
            self.block,
        )
        pool = len(self.nd)
        while self.n_nodes * 2 > pool or self.n_nodes + need > pool:
            pool *= 2
        if pool != len(self.nd):
            self.nd = np.concatenate([self.nd, np.zeros((pool - len(self.nd), 4), np.int64)])
            self.nd_val = np.concatenate([self.nd_val, np.zeros(pool - len(self.nd_val))])

    def _collect(self, n_out: int, into: list) -> None:
        if n_out == 0:
            return
        meta = self._o_meta[:n_out].copy()
        events = ps._pattern_chains_kernel(
            meta[:, pk.O_HEAD], meta[:, pk.O_N], self.nd, self.nd_val
        )
        into.append((meta, events))

    # -- processing

    def _advance(self, sid, ts, val, q, watermark: int) -> list[pa.RecordBatch]:
        pieces: list = []
        n_out = 0
        n = len(ts)
        if n:
            cols = {"value": val, "quality": q, "sensor_id": sid}
            bits = pc.condition_bits(self.trees, cols, n)
            row = 0
            while True:
                row, self.n_nodes, n_out, status = pk._pattern_run_kernel(
                    self._skip_idle,
                    self._idle_fixed,
                    self._idle,
                    self._skip_fixed,
                    row,
                    sid,
                    ts,
                    val,
                    bits,
                    self.pos,
                    self.tab,
                    self.within,
                    self.within_unit,
                    self.skip,
                    self.cap,
                    self.L,
                    self.chain,
                    self._keys.lookup,
                    self.nslot,
                    self._blk,
                    self.block,
                    self._scratch,
                    self.nd,
                    self.nd_val,
                    self.n_nodes,
                    self._o_meta,
                    n_out,
                    self.counters,
                    *self._tmp,
                )
                if status == pk.ST_DONE:
                    break
                self._collect(n_out, pieces)
                n_out = 0
                if status == pk.ST_KEYS:
                    self._add_keys(sid[row:])
                elif status == pk.ST_BLOCK:
                    # Blocks for the sensors of the rows that may need one (with idle
                    # rows skipped, those meeting a condition).
                    rest = sid[row:] if not self._skip_idle else sid[row:][bits[row:] != 0]
                    self._add_blocks(self._keys.slots(rest))
                elif status == pk.ST_NODES:
                    self._grow_nodes((self.cap + 1) * self.chain)
            self.pos += n
        flush = watermark >= MAX_WATERMARK
        if self.within > 0 or flush:
            key = 0
            while key < self._keys.n:
                key, n_out = pk._pattern_advance_kernel(
                    key,
                    watermark,
                    flush,
                    self.tab,
                    self.within,
                    self.within_unit,
                    self.skip,
                    self.cap,
                    self._keys.keys,
                    self._keys.n,
                    self.nslot,
                    self._blk,
                    self.block,
                    self.nd,
                    self._o_meta,
                    n_out,
                    *self._tmp,
                )
                self._collect(n_out, pieces)
                n_out = 0
            self._idle[:] = 0  # timeouts and emissions changed slots
        self._collect(n_out, pieces)
        return self._batch(pieces)

    def _batch(self, pieces: list) -> list[pa.RecordBatch]:
        if not pieces:
            return []
        meta = np.concatenate([m for m, _ in pieces])
        lens = meta[:, pk.O_N]
        offsets = np.zeros(len(meta) + 1, np.int32)
        np.cumsum(lens, out=offsets[1:])
        flat = [np.concatenate([e[k] for _, e in pieces]) for k in (2, 3, 4)]
        ev_ts, ev_step, ev_val = flat
        n = len(meta)
        off = pa.array(offsets, pa.int32())
        batch = pa.RecordBatch.from_arrays(
            [
                pa.array([self.pattern] * n, pa.string()),
                pa.array(meta[:, pk.O_SID].astype(np.int32)),
                arrow_column(meta[:, pk.O_START_TS], TS_NS),
                arrow_column(meta[:, pk.O_END_TS], TS_NS),
                pa.array(lens.astype(np.int32)),
                pa.ListArray.from_arrays(off, pa.array(ev_val, pa.float64())),
                pa.ListArray.from_arrays(off, arrow_column(ev_ts, TS_NS)),
                pa.ListArray.from_arrays(off, self.step_names.take(pa.array(ev_step))),
            ],
            schema=PATTERN_MATCHES,
        )
        by = np.lexsort(
            (np.arange(n), meta[:, pk.O_START_TS], meta[:, pk.O_SID], meta[:, pk.O_END_TS])
        )
        if not np.array_equal(by, np.arange(n)):
            batch = batch.take(pa.array(by))
        return [batch]

    # -- snapshot

    def _extra_snapshot(self) -> State:
        n_keys = self._keys.n
        starts = self._blk[:n_keys] * self.cap
        rows = [np.arange(b, b + n) for b, n in zip(starts, self.nslot[:n_keys], strict=True)]
        idx = np.concatenate(rows) if rows else np.empty(0, np.int64)
        meta = self.block[idx]
        sids = np.repeat(self._keys.keys, self.nslot[:n_keys])
        offsets, pos, ts, step, value = ps._pattern_chains_kernel(
            meta[:, pk.S_HEAD].copy(), meta[:, pk.S_N].copy(), self.nd, self.nd_val
        )
        return {
            "position": self.pos,
            "counters": self.counters.copy(),
            "slot_sensor_id": sids.astype(np.int32),
            "slot_meta": meta[:, :6].copy(),
            "event_offsets": offsets,
            "event_pos": pos,
            "event_ts": ts,
            "event_step": step,
            "event_value": value,
        }

    def _restore_extra(self, snapshot: State) -> None:
        self.pos = as_int(snapshot["position"])
        self.counters = as_array(snapshot["counters"], np.int64).copy()
        self._set_slots(
            as_array(snapshot["slot_sensor_id"], np.int32),
            as_array(snapshot["slot_meta"], np.int64),
            *(
                as_array(snapshot[k], t)
                for k, t in (
                    ("event_offsets", np.int64),
                    ("event_pos", np.int64),
                    ("event_ts", np.int64),
                    ("event_step", np.int64),
                    ("event_value", np.float64),
                )
            ),
        )


def _no_events() -> tuple[np.ndarray, ...]:
    e = np.empty(0, np.int64)
    return np.zeros(1, np.int64), e, e, e, np.empty(0, np.float64)
