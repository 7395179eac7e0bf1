"""CepPattern against the plain reference matcher, per construct, and as a pipeline stage."""

from __future__ import annotations

import dataclasses
import math
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import reactivex
from hypothesis import event, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from pattern_reference import pattern_reference
from reference import readings, schedules

from telepipe.config import build
from telepipe.errors import ConfigError
from telepipe.markers import MAX_WATERMARK, CheckpointBarrier, Watermark
from telepipe.operators.patterns.pattern import (
    PATTERN_MATCHES,
    SKIPS,
    CepPattern,
    Pattern,
    PatternStep,
)
from telepipe.schema import READINGS

MS = 1_000_000
CONF = Path(__file__).resolve().parents[2] / "conf" / "operator" / "pattern.yaml"


def batch(sid, ts, value, quality=None) -> pa.RecordBatch:
    n = len(ts)
    q = np.zeros(n, np.uint8) if quality is None else np.asarray(quality, np.uint8)
    return pa.RecordBatch.from_arrays(
        [
            pa.array(np.asarray(sid, np.int32)),
            pa.array(np.asarray(ts, np.int64), pa.timestamp("ns")),
            pa.array(np.asarray(value, np.float64)),
            pa.array(q),
        ],
        schema=READINGS,
    )


def rows(batches: list[pa.RecordBatch]) -> list[tuple]:
    """Output rows as reference tuples (timestamps as int ns)."""
    out = []
    for b in batches:
        assert b.schema == PATTERN_MATCHES
        cols = {name: b.column(name) for name in b.schema.names}
        for i in range(b.num_rows):
            out.append(
                (
                    cols["sensor_id"][i].as_py(),
                    cols["start_ts"][i].value,
                    cols["end_ts"][i].value,
                    cols["n_events"][i].as_py(),
                    tuple(cols["values"][i].as_py()),
                    tuple(x.value for x in cols["event_ts"][i]),
                    tuple(cols["steps"][i].as_py()),
                )
            )
    return out


def exact(matches: list[tuple]) -> list[tuple]:
    """Rows comparable with ==, in order (NaN values as their repr)."""
    return [(*m[:4], tuple(map(repr, m[4])), *m[5:]) for m in matches]


def canon(matches: list[tuple]) -> list[tuple]:
    return sorted(exact(matches))


def run(op: CepPattern, sid, ts, value, quality=None, plan=None, logic=None) -> list:
    logic = logic or op.build()
    plan = plan or [(0, len(ts), None)]
    out = []
    for lo, hi, wm in plan:
        q = None if quality is None else quality[lo:hi]
        assert logic.on_batch(batch(sid[lo:hi], ts[lo:hi], value[lo:hi], q)) == []
        if wm is not None:
            out += logic.on_watermark(wm)
    out += logic.on_watermark(MAX_WATERMARK)
    return out


# ------------------------------------------------------------ random patterns

CONDITIONS = [
    "value > 1",
    "value <= 1",
    "value == 2",
    "not (value == 0)",
    "1 <= value < 7.5",
    "quality == 192 or value < 0",
    "true",
]
QUANTS = ["once", "once", "once", "times(2)", "times(1, 3)", "one_or_more", "times_or_more(2)"]
# Conditions on earlier events of the match ({me}: the step's own name; s0 is always
# a positive step before or at it). Values are small (VALUES), ts in ms.
MATCH_CONDITIONS = [
    "value >= first(s0.value)",
    "value > previous(value)",
    "count({me}) < 3 or value == last({me}.value, 1)",
    "avg({me}.value) > 1",
    "sum(s0.value) <= 4 and max(s0.value) - min(s0.value) < 3",
    "ts - s0.ts < 3000000",
    "ts_ms - previous(ts_ms) >= 1 or quality == last(s0.quality)",
    "value < s0.value / count(s0) + 1",
]


@st.composite
def patterns(draw, greedy: bool = False) -> CepPattern:
    """Valid patterns by construction: negations follow a fixed-count step; with
    ``greedy``, a quantified step followed by a positive step may be greedy."""
    n = draw(st.integers(1, 4))
    steps: list[PatternStep] = []
    for i in range(n):
        kind = (
            "begin"
            if i == 0
            else draw(
                st.sampled_from(
                    ["next", "followed_by", "not_next", "not_followed_by", "not_followed_by"]
                )
            )
        )
        prev = steps[-1] if steps else None
        fixed = prev is not None and prev.quantifier in ("once", "times(2)") and not prev.optional
        if kind.startswith("not_") and (not fixed or prev.contiguity.startswith("not_")):
            kind = "followed_by"
        negated = kind.startswith("not_")
        after_negation = prev is not None and prev.contiguity.startswith("not_")
        condition = draw(st.sampled_from(CONDITIONS))
        if greedy and draw(st.booleans()):
            ok = [c for c in MATCH_CONDITIONS if not negated or "{me}" not in c]
            condition = draw(st.sampled_from(ok)).format(me=f"s{i}")
        steps.append(
            PatternStep(
                name=f"s{i}",
                condition=condition,
                contiguity=kind,
                quantifier="once" if negated else draw(st.sampled_from(QUANTS)),
                optional=not (negated or after_negation) and draw(st.integers(0, 3)) == 0,
                consecutive=not negated and draw(st.booleans()),
            )
        )
    if greedy:  # and followed_by_any
        for i, step in enumerate(steps):
            if step.contiguity == "followed_by" and draw(st.booleans()):
                steps[i] = dataclasses.replace(step, contiguity="followed_by_any")
        for i in range(len(steps) - 1):
            if not steps[i].contiguity.startswith("not_") and not steps[
                i + 1
            ].contiguity.startswith("not_"):
                steps[i] = dataclasses.replace(steps[i], greedy=draw(st.booleans()))
    within = draw(st.sampled_from([None, 1, 3, 10]))
    if steps[-1].contiguity == "not_followed_by" and within is None:
        within = 3
    cap = draw(st.sampled_from([3, 64, 64]))
    longest = draw(st.sampled_from([3, 6]))
    if greedy:  # the newer options too: Flink's millisecond clock, skip strategies
        clock = draw(st.sampled_from(["ns", "ms"]))
        skip = draw(st.sampled_from(SKIPS))
        positive = [s.name for s in steps if not s.contiguity.startswith("not_")]
        to = draw(st.sampled_from(positive)) if skip in ("skip_to_first", "skip_to_last") else None
        return CepPattern(
            "p",
            tuple(steps),
            within,
            within_clock=clock,
            after_match=skip,
            after_match_step=to,
            max_partial_matches=cap,
            max_match_events=longest,
            end_of_input=draw(st.sampled_from(["flink", "report_held"])),
        )
    return CepPattern("p", tuple(steps), within, max_partial_matches=cap, max_match_events=longest)


VALUES = st.sampled_from([0.0, 1.0, 2.0, 2.0, 2.0, 7.5, -1.0, math.nan])


@st.composite
def cases(draw, greedy: bool = False):
    op = draw(patterns(greedy))
    sid, ts, value = draw(readings(MS, VALUES, max_rows=60))
    quality = draw(st.lists(st.sampled_from([0, 192]), min_size=len(ts), max_size=len(ts)))
    return op, sid, ts, value, quality, draw(schedules(ts))


@settings(max_examples=300, deadline=None)
@given(cases())
def test_matches_reference_under_any_batching(case) -> None:
    op, sid, ts, value, quality, plan = case
    logic = op.build()
    got = rows(run(op, sid, ts, value, quality, plan, logic))
    want, dropped, overflow = pattern_reference(op, sid, ts, value, quality)
    assert canon(got) == canon(want)
    assert (logic.dropped_partial_matches, logic.overflow_matches) == (dropped, overflow)
    event(f"matches: {min(len(want), 3)}{'+' if len(want) >= 3 else ''}")
    event(f"dropped: {dropped > 0}, overflow: {overflow > 0}")
    event(f"ends with {op.steps[-1].contiguity}")
    event(f"has {' '.join(sorted({s.contiguity for s in op.steps[1:]}))}")
    assert logic.late_rows == 0


@settings(max_examples=60, deadline=None)
@given(cases(), st.data())
def test_snapshot_restore_mid_stream(case, data) -> None:
    op, sid, ts, value, quality, plan = case
    cut = data.draw(st.integers(0, len(plan)))
    first = op.build()
    before = []
    for lo, hi, wm in plan[:cut]:
        first.on_batch(batch(sid[lo:hi], ts[lo:hi], value[lo:hi], quality[lo:hi]))
        if wm is not None:
            before += first.on_watermark(wm)
    snap = pickle.loads(pickle.dumps(first.snapshot()))
    second = op.build()
    second.restore(snap)
    rest = plan[cut:] or [(len(ts), len(ts), None)]
    a = run(op, sid, ts, value, quality, rest, first)
    b = run(op, sid, ts, value, quality, rest, second)
    assert exact(rows(a)) == exact(rows(b))
    want, _, _ = pattern_reference(op, sid, ts, value, quality)
    assert canon(rows(before + b)) == canon(want)


@settings(max_examples=200, deadline=None)
@given(cases())
def test_passing_over_idle_rows_changes_nothing(case) -> None:
    """Rows meeting no condition are passed over for sensors whose partial matches they
    leave as they are, and a row walks only the partial matches it changes; with both
    turned off (every partial match walks every row, timeouts and emits run at every
    row) the output and the counters are the same."""
    op, sid, ts, value, quality, plan = case
    fast, slow = op.build(), op.build()
    slow._idle_fixed[:] = 0
    slow._skip_fixed = False
    a = run(op, sid, ts, value, quality, plan, fast)
    b = run(op, sid, ts, value, quality, plan, slow)
    assert exact(rows(a)) == exact(rows(b))
    assert (fast.dropped_partial_matches, fast.overflow_matches) == (
        slow.dropped_partial_matches,
        slow.overflow_matches,
    )


@pytest.mark.parametrize("within_ms", [None, 250, 1000])
def test_the_fixed_prefix_of_many_partial_matches_changes_nothing(within_ms) -> None:
    """The benchmark's shape, small: 3 sensors, a noisy sine at 1 kHz, `value > 80`
    times(3) followed_by `value < 20` (every high reading a start: hundreds of partial
    matches per sensor), batches with watermarks between. A row starts past the slots
    the sensor's last walked row with the same bits left in place (the fixed prefix),
    and knows the sensor's idle bound without a pass: the output and the counters are
    those of the kernel walking every slot at every row, and of the reference."""
    rng = np.random.default_rng(3)
    n = 6000
    sid = np.tile(np.arange(3), n // 3).tolist()
    tick = np.repeat(np.arange(n // 3), 3)
    ts = (tick * MS + rng.integers(0, MS // 5, n)).tolist()
    phase = np.array([0.0, 2.0, 4.0])[np.array(sid)]
    value = (50 + 35 * np.sin(2 * np.pi * tick / 700 + phase) + rng.normal(0, 4, n)).tolist()
    pattern = Pattern.begin("high", "value > 80").times(3).followed_by("low", "value < 20")
    if within_ms:
        pattern = pattern.within(ms=within_ms)
    for cap in (10_000, 40):
        op = pattern.operator("p", max_partial_matches=cap)
        plan = [
            (lo, min(lo + 700, n), ts[min(lo + 700, n) - 1] - 5 * MS) for lo in range(0, n, 700)
        ]
        fast, slow = op.build(), op.build()
        slow._idle_fixed[:] = 0
        slow._skip_fixed = False
        a = rows(run(op, sid, ts, value, None, plan, fast))
        b = rows(run(op, sid, ts, value, None, plan, slow))
        assert exact(a) == exact(b) and len(a) > 0
        assert fast.stats() == slow.stats()
        assert (fast.stats()["dead_letters"] > 0) == (cap == 40)  # the cap path too
        assert canon(a) == canon(pattern_reference(op, sid, ts, value)[0])


def test_idle_fixed_states() -> None:
    """A partial match waiting under relaxed contiguity is idle-fixed; under strict
    contiguity a row meeting no condition ends it."""
    relaxed = Pattern.begin("a", "value > 1").followed_by("b", "value < 0").operator("r")
    strict = Pattern.begin("a", "value > 1").next("b", "value < 0").operator("s")
    r, s = relaxed.build(), strict.build()
    # State 0 is the start; state 1 waits for "b".
    assert r._idle_fixed[1].tolist() == [1, 1]
    assert s._idle_fixed[1].tolist() == [0, 0]
    # And it pays: many partial matches, rows in between that meet no condition.
    value = [2.0, 0.5, 0.5, 2.0, 0.5, -1.0]
    assert matches(Pattern.begin("a", "value > 1").followed_by("b", "value < 0"), value) == [
        (0, 5, (2.0, -1.0))
    ]


# ------------------------------------------------------------ one per construct


def matches(p: Pattern, value, ts=None, sid=None, quality=None, **options) -> list[tuple]:
    op = p.operator("t", **options)
    value = [float(v) for v in value]
    ts = list(range(len(value))) if ts is None else ts
    sid = [1] * len(value) if sid is None else sid
    got = rows(run(op, sid, ts, value, quality))
    want, _, _ = pattern_reference(op, sid, ts, value, quality)
    assert canon(got) == canon(want)
    return [(m[1], m[2], m[4]) for m in sorted(got)]


def test_begin_and_skip_past_last_event() -> None:
    p = Pattern.begin("a", "value > 5")
    assert matches(p, [6, 1, 7, 8]) == [(0, 0, (6,)), (2, 2, (7,)), (3, 3, (8,))]
    two = Pattern.begin("a", "value > 5").next("b", "value > 5")
    # a a a a -> (a1 a2), (a3 a4): the partial match started at a2 is skipped.
    assert matches(two, [6, 6, 6, 6]) == [(0, 1, (6, 6)), (2, 3, (6, 6))]


def test_next_is_strict_and_followed_by_relaxed() -> None:
    strict = Pattern.begin("a", "value == 1").next("b", "value == 2")
    assert matches(strict, [1, 0, 2, 1, 2]) == [(3, 4, (1, 2))]
    relaxed = Pattern.begin("a", "value == 1").followed_by("b", "value == 2")
    # Relaxed takes the first b; the partial match from the second a is skipped.
    assert matches(relaxed, [1, 0, 1, 2, 2]) == [(0, 3, (1, 2))]


def test_not_next() -> None:
    p = Pattern.begin("a", "value == 1").not_next("x", "value == 9").followed_by("b", "value == 2")
    assert matches(p, [1, 9, 2, 1, 0, 2]) == [(3, 5, (1, 2))]
    trailing = Pattern.begin("a", "value == 1").not_next("x", "value == 9")
    # Completes at the next reading when it is not x; that reading is not part of it.
    assert matches(trailing, [1, 9, 1, 0, 1]) == [(2, 2, (1,))]


def test_not_followed_by_between_and_at_the_end() -> None:
    p = (
        Pattern.begin("a", "value == 1")
        .not_followed_by("x", "value == 9")
        .followed_by("b", "value == 2")
    )
    assert matches(p, [1, 0, 9, 2, 1, 0, 2]) == [(4, 6, (1, 2))]
    end = Pattern.begin("a", "value == 1").not_followed_by("x", "value == 9").within(ms=10)
    # a at 0 ms is followed by x at 5 ms: no match; a at 20 ms sees no x before 30 ms
    # (x at exactly 30 ms is too late to cancel it); a at 40 ms completes at the end.
    ts = [0, 5 * MS, 20 * MS, 30 * MS, 40 * MS]
    assert matches(end, [1, 9, 1, 9, 1], ts=ts) == [
        (20 * MS, 20 * MS, (1,)),
        (40 * MS, 40 * MS, (1,)),
    ]
    with pytest.raises(ConfigError, match=r"steps\[1\].*needs within_ms"):
        Pattern.begin("a", "value == 1").not_followed_by("x", "value == 9").operator()


def test_times_exact_and_range() -> None:
    p = Pattern.begin("a", "value > 5").times(3)
    # Relaxed between repetitions (as FlinkCEP): the 0 is skipped.
    assert matches(p, [6, 0, 7, 8, 9]) == [(0, 3, (6, 7, 8))]
    assert matches(Pattern.begin("a", "value > 5").times(3).consecutive(), [6, 0, 7, 8, 9]) == [
        (2, 4, (7, 8, 9))
    ]
    r = Pattern.begin("a", "value > 5").times(2, 3).next("b", "value == 0")
    assert matches(r, [6, 7, 8, 0]) == [(0, 3, (6, 7, 8, 0))]
    assert matches(r, [6, 7, 0]) == [(0, 2, (6, 7, 0))]
    assert matches(r, [6, 0]) == []


def test_one_or_more_prefers_earliest_start_then_earliest_events() -> None:
    p = Pattern.begin("b", "value > 5").one_or_more().followed_by("c", "value < 0")
    assert matches(p, [6, 7, 0, 8, -1]) == [(0, 4, (6, 7, 8, -1))]
    alone = Pattern.begin("b", "value > 5").one_or_more()
    assert matches(alone, [6, 7]) == [(0, 0, (6,)), (1, 1, (7,))]


def test_optional() -> None:
    p = (
        Pattern.begin("a", "value == 1")
        .followed_by("b", "value == 2")
        .optional()
        .followed_by("c", "value == 3")
    )
    assert matches(p, [1, 3]) == [(0, 1, (1, 3))]
    assert matches(p, [1, 2, 3]) == [(0, 2, (1, 2, 3))]
    assert matches(p, [1, 0, 2, 0, 3]) == [(0, 4, (1, 2, 3))]


def test_within_expiry_and_conditions_on_quality() -> None:
    p = Pattern.begin("a", "value > 80 and quality == 192").followed_by("b", "value < 20")
    ts = [0, 4 * MS, 10 * MS, 11 * MS, 14 * MS]
    value = [90, 10, 90, 90, 10]
    quality = [192, 192, 0, 192, 192]
    assert matches(p.within(ms=5), value, ts=ts, quality=quality) == [
        (0, 4 * MS, (90, 10)),
        (11 * MS, 14 * MS, (90, 10)),
    ]
    # 5 ms after its start a partial match is gone: b at exactly +5 ms is too late.
    assert matches(p.within(ms=4), value, ts=ts, quality=quality) == [(11 * MS, 14 * MS, (90, 10))]


def test_output_names_pattern_key_times_and_steps() -> None:
    op = Pattern.begin("high", "value > 80").times(2).next("low", "value < 20").operator("drop")
    logic = op.build()
    logic.on_batch(batch([7, 7, 3, 7], [10, 20, 25, 30], [90.0, 95.0, 50.0, 5.0]))
    (out,) = logic.on_watermark(31)
    assert out.schema == PATTERN_MATCHES
    d = out.drop_columns(["start_ts", "end_ts", "event_ts"]).to_pydict()
    assert d["pattern"] == ["drop"] and d["sensor_id"] == [7] and d["n_events"] == [3]
    assert out.column("start_ts")[0].value == 10 and out.column("end_ts")[0].value == 30
    assert d["values"] == [[90.0, 95.0, 5.0]] and d["steps"] == [["high", "high", "low"]]


# ------------------------------------------------------------ config, Rx, errors


def test_yaml_example_builds_and_runs_in_an_rx_flow() -> None:
    op = build(OmegaConf.load(CONF), "operator")
    assert isinstance(op, CepPattern) and op.within_ms == 5000
    assert [s.name for s in op.steps] == ["high", "low"]
    ts = [0, MS, 2 * MS, 3 * MS, 4 * MS]
    items, done, errors = [], [], []
    b = batch([4] * 5, ts, [85.0, 90.0, 99.0, 50.0, 10.0], [192] * 5)
    reactivex.from_iterable([b, Watermark(2 * MS), CheckpointBarrier(1), Watermark(10 * MS)]).pipe(
        op
    ).subscribe(items.append, errors.append, lambda: done.append(True))
    assert errors == [] and done == [True]
    kinds = [type(i).__name__ for i in items]
    assert kinds == ["Watermark", "CheckpointBarrier", "RecordBatch", "Watermark"]
    assert items[2].column("values").to_pylist() == [[85.0, 90.0, 99.0, 10.0]]


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("value >", "unexpected end"),
        ("temperature > 3", "unknown column 'temperature'"),
        ("value", "must compare"),
        ("value > 1 and 3", "need comparisons"),
        ("__import__('os')", "unexpected"),
        ("value.real > 1", "unexpected"),
        ("value > 1; x", "unexpected"),
        ("not " * 3000 + "value > 1", "nested too deeply"),
        ("(" * 400 + "value > 1" + ")" * 400, "nested too deeply"),
    ],
)
def test_bad_condition_is_one_line_naming_the_step(condition: str, message: str) -> None:
    node = OmegaConf.create(
        {
            "_target_": "telepipe.operators.patterns.pattern.CepPattern",
            "name": "p",
            "steps": [
                {"name": "a", "condition": "value > 1", "contiguity": "begin"},
                {"name": "spike", "condition": condition},
            ],
        }
    )
    with pytest.raises(ConfigError) as error:
        build(node, "operator")
    text = str(error.value)
    assert "\n" not in text and "steps[1] ('spike')" in text and message in text


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([PatternStep("a", contiguity="next")], "first step and only it"),
        ([PatternStep("a", contiguity="begin"), PatternStep("a")], "unique"),
        ([PatternStep("a", contiguity="begin", quantifier="times(0)")], "times"),
        ([PatternStep("a", contiguity="begin", quantifier="many")], "quantifier"),
        ([PatternStep("a", contiguity="begin", quantifier="times(99999999)")], "<= 1024"),
        ([PatternStep("a", contiguity="begin", quantifier="times(2, 5000)")], "<= 1024"),
        ([PatternStep("a", contiguity="begin", quantifier="times_or_more(2000)")], "<= 1024"),
        (
            [
                PatternStep("a", contiguity="begin", quantifier="one_or_more"),
                PatternStep("x", "value > 1", contiguity="not_next"),
            ],
            "fixed count",
        ),
        ([], "non-empty"),
    ],
)
def test_bad_steps(steps, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CepPattern("p", tuple(steps))


def test_of_two_matches_with_the_same_events_the_first_generated_wins() -> None:
    """Optional strict steps give two complete matches of rows 0, 1, 3 (under s1 or under
    s2): the reference emits the one its branches made first, so the kernel's slot order
    must stay the order the branches were made in (a hypothesis run found it did not
    when slots a row leaves as they are stayed in place ahead of walked ones)."""
    steps = [
        PatternStep("s0", "value <= 1", "begin", optional=True),
        PatternStep("s1", "value <= 1", "next", optional=True),
        PatternStep("s2", "value <= 1", "next", optional=True),
        PatternStep("s3", "value > 1", "followed_by"),
    ]
    op = CepPattern("p", tuple(steps), None, max_partial_matches=64, max_match_events=3)
    sid, ts, value, quality = [0, 0, 0, 0], [0, 0, 0, 0], [0.0, 0.0, 0.0, 2.0], [0, 0, 0, 0]
    for skip in (True, False):
        logic = op.build()
        logic._skip_fixed = skip
        got = rows(run(op, sid, ts, value, quality, [(0, 4, None)], logic))
        assert canon(got) == canon(pattern_reference(op, sid, ts, value, quality)[0])
        assert [r[-1] for r in got] == [("s0", "s1", "s3")]


# ------------------------------------------------------------ greedy quantifiers
