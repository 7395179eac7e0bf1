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
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
from reactivex import Observable

from telepipe.errors import ConfigError
from telepipe.markers import Item
from telepipe.operators.detectors.base import check_int
from telepipe.operators.patterns import _compiler as pc
from telepipe.operators.patterns.logic import (
    DEAD_LETTER_REASONS,
    PATTERN_DEAD_LETTERS,
    PATTERN_DROPPED,
    PATTERN_MATCHES,
    SKIPS,
    CepPatternLogic,
)
from telepipe.operators.runtime.stage import StageOperator, side_stage
from telepipe.operators.windows.options import MAX_MS

__all__ = [
    "DEAD_LETTER_REASONS",
    "PATTERN_DEAD_LETTERS",
    "PATTERN_DROPPED",
    "PATTERN_MATCHES",
    "SKIPS",
    "CepPattern",
    "CepPatternLogic",
    "Pattern",
    "PatternStep",
]
# The limits' defaults: far above what any pattern of the docs and the Flink tests
# holds at once (measured: docs/operators/patterns.md, "Limits").
MAX_PARTIAL_MATCHES = 10_000
MAX_MATCH_EVENTS = 10_000
# At the end of input (the maximal watermark): as Flink (only ``within`` ends partial
# matches; a complete match held behind one that never completes is not reported), or
# every partial match ends and every held match is reported.
END_OF_INPUT = ("flink", "report_held")


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

    def operator(self, name: str = "pattern", **options: object) -> CepPattern:
        return CepPattern(
            name,
            self.steps,
            self.within_ms,
            self.within_ns,
            self.within_clock,
            self.after_match,
            self.after_match_step,
            **options,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class CepPattern(StageOperator):
    """Emit one ``PATTERN_MATCHES`` row per match of ``steps`` within a sensor's readings.

    Readings are buffered until the watermark passes them and taken per sensor in
    (ts, arrival) order; rows late at arrival are dropped and counted
    (``logic.late_rows``). Limits never change a match: per sensor at most
    ``max_partial_matches`` partial (and held complete) matches are kept, beyond that
    the partial matches of the oldest start reading are dropped; a match that would
    take more than ``max_match_events`` readings is dropped with every other partial
    match of its start reading. Each dropped start reading is a dead letter
    (``logic.take_dead_letters()``, counted in ``logic.stats()``); in a flow, a side
    output tagged ``PATTERN_DROPPED`` that a pipeline writes to ``dead_letters``.
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
    end_of_input: str = "flink"
    max_partial_matches: int = MAX_PARTIAL_MATCHES
    max_match_events: int = MAX_MATCH_EVENTS

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
        check_int("CepPattern", "max_partial_matches", self.max_partial_matches, 1, 1_000_000)
        check_int("CepPattern", "max_match_events", self.max_match_events, 1, 1_000_000)
        if self.end_of_input not in END_OF_INPUT:
            raise ConfigError(
                f"CepPattern.end_of_input must be one of {', '.join(END_OF_INPUT)}, "
                f"got {self.end_of_input!r}"
            )
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

    def named(
        self, name: str, restore: object = None
    ) -> Callable[[Observable[Item]], Observable[Item]]:
        """The step ``name``; its dead letters go downstream as
        ``SideOutput(PATTERN_DROPPED, step, rows)`` (``pipelines.routing``: ``dead_letters``)."""
        return side_stage(self.build, name=name, restore=restore)

    def __call__(self, source: Observable[Item]) -> Observable[Item]:
        return side_stage(self.build, name=self.step_name)(source)


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
