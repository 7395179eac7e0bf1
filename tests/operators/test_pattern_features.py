"""CepPattern's Step 13 features against the plain reference and on small examples:
greedy quantifiers, skip strategies, within clocks, followed_by_any, conditions on
earlier events of the match, end of input, and limits that never change a match."""

from __future__ import annotations

import numpy as np
import pytest
import test_pattern as tp
from hypothesis import event, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from pattern_reference import Reference, pattern_reference
from test_pattern import MS, batch, canon, cases, matches, rows, run

from telepipe.config import build
from telepipe.errors import ConfigError
from telepipe.operators.patterns.pattern import PATTERN_DEAD_LETTERS, CepPattern, Pattern


@settings(max_examples=300, deadline=None)
@given(cases(greedy=True))
def test_greedy_matches_reference_under_any_batching(case) -> None:
    op, sid, ts, value, quality, plan = case
    logic = op.build()
    got = rows(run(op, sid, ts, value, quality, plan, logic))
    want, dropped, overflow = pattern_reference(op, sid, ts, value, quality)
    assert canon(got) == canon(want)
    assert (logic.dropped_partial_matches, logic.overflow_matches) == (dropped, overflow)
    event(f"greedy: {any(s.greedy for s in op.steps)}, matches: {min(len(want), 3)}")
    event(f"within clock: {op.within_clock if op.within_ms else None}")
    event(f"after match: {op.after_match}")
    event(f"followed_by_any: {any(s.contiguity == 'followed_by_any' for s in op.steps)}")
    event(f"conditions on the match: {logic._match_conditions}")
    assert logic.held_at_end == pattern_reference_held(op, sid, ts, value, quality)


def pattern_reference_held(op, sid, ts, value, quality) -> int:
    ref = Reference(op)
    ref.run(sid, ts, value, quality)
    return ref.held_at_end


@settings(max_examples=60, deadline=None)
@given(cases(greedy=True), st.data())
def test_match_conditions_survive_snapshot_and_fast_paths(case, data) -> None:
    """The newer options (conditions on the match among them: their aggregates ride
    on the event nodes) through a snapshot mid-stream, and with the fast paths off."""
    tp.test_snapshot_restore_mid_stream.hypothesis.inner_test(case, data)  # type: ignore[attr-defined]
    tp.test_passing_over_idle_rows_changes_nothing.hypothesis.inner_test(case)  # type: ignore[attr-defined]


def test_greedy_and_reluctant_on_the_issue_22_example() -> None:
    """75, 85, 90, 60 at 0/10/20/30 ms; A > 70 one_or_more consecutive, next B > 80:
    reluctant (FlinkCEP's default, MATCH_RECOGNIZE A+? B) matches (0, 10); greedy
    (greedy(), A+ B) takes 85 and 90 as A and then 60 is no B: no match, as Flink."""
    value = [75.0, 85.0, 90.0, 60.0]
    ts = [0, 10 * MS, 20 * MS, 30 * MS]
    a = Pattern.begin("A", "value > 70").one_or_more().consecutive()
    for pattern, want in [
        (a.next("B", "value > 80"), [(0, 10 * MS)]),
        (a.greedy(False).next("B", "value > 80"), [(0, 10 * MS)]),
        (a.greedy().next("B", "value > 80"), []),
        (a.greedy().next("B", "value < 70"), [(0, 30 * MS)]),
    ]:
        got = rows(run(pattern.operator(), [1] * 4, ts, value))
        assert [(m[1], m[2]) for m in got] == want


def test_greedy_from_yaml_and_its_errors() -> None:
    steps = [
        {"name": "a", "condition": "value > 70", "contiguity": "begin",
         "quantifier": "one_or_more", "consecutive": True, "greedy": True},
        {"name": "b", "condition": "value > 80", "contiguity": "next"},
    ]  # fmt: skip
    op = build(
        OmegaConf.create({"_target_": "telepipe.operators.CepPattern", "steps": steps}), "op"
    )
    assert op.steps[0].greedy and not op.steps[1].greedy
    value = [75.0, 85.0, 90.0, 60.0]
    assert rows(run(op, [1] * 4, [0, 1, 2, 3], value)) == []
    with pytest.raises(ConfigError, match="greedy step needs a following positive step"):
        Pattern.begin("a", "value > 1").one_or_more().greedy().operator()
    with pytest.raises(ConfigError, match="greedy step needs a following positive step"):
        Pattern.begin("a").times(2).greedy().not_next("x", "value > 1").next("b").operator()
    with pytest.raises(ConfigError, match="takes no quantifier"):
        Pattern.begin("a").not_next("x", "value > 1").greedy().next("b").operator()
    with pytest.raises(ConfigError, match="greedy must be true or false"):
        Pattern.begin("a").one_or_more()._last(greedy="yes").next("b").operator()


# ------------------------------------------------------------ within: unit and clock


def test_within_clock_ns_and_flinks_whole_milliseconds() -> None:
    """A match spanning 4999.6 ms: within 5 s on the exact (ns) clock, but 5000 ms on
    Flink's millisecond clock (rowtime is TIMESTAMP(3)), so expired there."""
    ts = [1_000_400_000, 6_000_000_000]  # 1000.4 ms, 6000.0 ms
    value = [90.0, 10.0]
    p = Pattern.begin("a", "value > 80").followed_by("b", "value < 20")
    exact = p.within(s=5)
    flink = p.within(ms=5000, clock="ms")
    assert exact.operator().within_ms == 5000 and exact.operator().within_clock == "ns"
    assert len(rows(run(exact.operator(), [1, 1], ts, value))) == 1
    assert rows(run(flink.operator(), [1, 1], ts, value)) == []
    # a span in any unit; below a millisecond it is kept in ns
    op = p.within(us=4_999_600).operator()
    assert (op.within_ms, op.within_ns, op.within_span_ns) == (None, 4_999_600_000, 4_999_600_000)
    assert rows(run(op, [1, 1], ts, value)) == []  # 4999.6 ms is not < 4999.6 ms
    op = p.within(ms=4999, us=601).operator()
    assert len(rows(run(op, [1, 1], ts, value))) == 1
    yaml = build(
        OmegaConf.create(
            {
                "_target_": "telepipe.operators.CepPattern",
                "steps": [
                    {"name": "a", "condition": "value > 80", "contiguity": "begin"},
                    {"name": "b", "condition": "value < 20"},
                ],
                "within_ms": 5000,
                "within_clock": "ms",
            }
        ),
        "op",
    )
    assert rows(run(yaml, [1, 1], ts, value)) == []
    with pytest.raises(ConfigError, match="within_clock must be 'ns' or 'ms'"):
        p.within(ms=5, clock="s").operator()
    with pytest.raises(ConfigError, match="whole number of milliseconds"):
        p.within(us=1500, clock="ms").operator()
    with pytest.raises(ConfigError, match="not both"):
        CepPattern("p", p.steps, within_ms=5, within_ns=5)


# ------------------------------------------------------------ after-match skip strategies


def test_skip_strategies_on_a_small_example() -> None:
    """b+ c over b1 b2 b3 c (one_or_more, relaxed): what each strategy reports."""
    value = [1.0, 1.0, 1.0, 2.0]
    ts = [0, MS, 2 * MS, 3 * MS]
    p = Pattern.begin("b", "value == 1").one_or_more().followed_by("c", "value == 2")

    def got(q: Pattern) -> list[tuple]:
        return sorted((m[1] // MS, m[3]) for m in rows(run(q.operator(), [1] * 4, ts, value)))

    assert got(p) == [(0, 4)]
    assert got(p.after("skip_past_last_event")) == [(0, 4)]
    assert got(p.after("skip_to_next")) == [(0, 4), (1, 3), (2, 2)]
    assert got(p.after("skip_to_last", "b")) == [(0, 4), (2, 2)]
    assert got(p.after("skip_to_first", "c")) == [(0, 4)]
    # every match: b1 c, b1 b2 c, b1 b2 b3 c, b2 c, b2 b3 c, b3 c (skip till next: a
    # loop never skips a reading that meets its condition)
    assert got(p.after("no_skip")) == [(0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (2, 2)]


def test_skip_strategy_from_yaml_and_its_errors() -> None:
    steps = [
        {"name": "a", "condition": "value > 1", "contiguity": "begin"},
        {"name": "b", "condition": "value > 1", "contiguity": "next"},
    ]
    conf = {"_target_": "telepipe.operators.CepPattern", "steps": steps}
    op = build(OmegaConf.create({**conf, "after_match": "skip_to_next"}), "op")
    assert len(rows(run(op, [1] * 3, [0, 1, 2], [2.0, 2.0, 2.0]))) == 2
    p = Pattern.begin("a", "value > 1").next("b", "value > 1")
    with pytest.raises(ConfigError, match="after_match must be one of"):
        p.after("skip_to_past").operator()
    with pytest.raises(ConfigError, match="needs after_match_step, one of a, b; got 'x'"):
        p.after("skip_to_first", "x").operator()
    with pytest.raises(ConfigError, match="only for skip_to_first / skip_to_last"):
        p.after("no_skip", "a").operator()


# ------------------------------------------------------------ followed_by_any


def test_followed_by_any_takes_and_skips() -> None:
    """a followed_by_any b, then c: every b after the a starts its own branch
    (FlinkCEP followedByAny); followed_by takes only the first b."""
    value = [9.0, 1.0, 1.0, 5.0]  # a b b c
    ts = [0, MS, 2 * MS, 3 * MS]
    any_ = Pattern.begin("a", "value == 9").followed_by_any("b", "value == 1")
    next_ = Pattern.begin("a", "value == 9").followed_by("b", "value == 1")
    for p, want in [
        (any_, [(0, 1 * MS), (0, 2 * MS)]),
        (next_, [(0, 1 * MS)]),
    ]:
        q = p.followed_by("c", "value == 5").after("no_skip")
        got = rows(run(q.operator(), [1] * 4, ts, value))
        assert sorted((m[1], m[5][1]) for m in got) == want
    yaml = build(
        OmegaConf.create(
            {
                "_target_": "telepipe.operators.CepPattern",
                "steps": [
                    {"name": "a", "condition": "value == 9", "contiguity": "begin"},
                    {"name": "b", "condition": "value == 1", "contiguity": "followed_by_any"},
                ],
                "after_match": "no_skip",
            }
        ),
        "op",
    )
    assert len(rows(run(yaml, [1] * 4, ts, value))) == 2


# ------------------------------------------------------------ limits


def test_limits_drop_partial_matches_as_dead_letters() -> None:
    p = Pattern.begin("a", "value == 1").followed_by("b", "value == 2")
    op = p.operator(max_partial_matches=3)
    logic = op.build()
    got = rows(run(op, [1] * 6, list(range(6)), [1.0] * 5 + [2.0], logic=logic))
    want, dropped, _ = pattern_reference(op, [1] * 6, list(range(6)), [1.0] * 5 + [2.0])
    assert logic.dropped_partial_matches == dropped == 2
    assert [(m[1], m[2]) for m in got] == [(m[1], m[2]) for m in want] == [(2, 5)]
    (dead,) = logic.take_dead_letters()
    assert dead.schema == PATTERN_DEAD_LETTERS
    d = dead.drop_columns(["start_ts"]).to_pydict()
    assert d["reason"] == ["pattern_max_partial_matches"] * 2
    assert [t.value for t in dead.column("start_ts")] == [0, 1]  # the oldest starts
    assert d["sensor_id"] == [1, 1] and d["start_value"] == [1.0, 1.0]
    assert d["partial_matches"] == [1, 1] and d["pattern"] == ["pattern"] * 2
    assert logic.stats()["dead_letters_max_partial_matches"] == 2 == logic.dead_letters
    assert logic.take_dead_letters() == []
    # a match that would take a 4th reading is dropped, with its whole start: never
    # emitted shorter (the old cap refused the take and matched 0..2 + b instead)
    long = Pattern.begin("a", "value == 1").one_or_more().consecutive().greedy()
    op = long.next("b", "value == 2").operator(max_match_events=3)
    logic = op.build()
    got = rows(run(op, [1] * 4, list(range(4)), [1, 1, 1, 2], logic=logic))
    want, _, overflow = pattern_reference(op, [1] * 4, list(range(4)), [1, 1, 1, 2])
    assert [(m[1], m[2]) for m in got] == [(m[1], m[2]) for m in want] == [(1, 3)]
    assert logic.overflow_matches == overflow == 1
    (dead,) = logic.take_dead_letters()
    assert dead.column("reason").to_pylist() == ["pattern_max_match_events"]
    assert dead.column("start_ts")[0].value == 0


def test_blocks_grow_by_key_up_to_the_limit() -> None:
    """A key holds as many partial matches as the pattern needs (its block doubles),
    so the matches are those of no limit; only past max_partial_matches do they drop."""
    p = (
        Pattern.begin("a", "value == 1")
        .followed_by_any("b", "value == 1")
        .followed_by("c", "value == 2")
    )
    n = 60
    sid, ts, value = [1] * n + [2] * 3, [*range(n), 0, 1, 2], [1.0] * (n - 1) + [2.0, 1.0, 1.0, 2.0]
    big = p.operator(max_partial_matches=100_000)
    logic = big.build()
    got = rows(run(big, sid, ts, value, logic=logic))
    want, dropped, _ = pattern_reference(big, sid, ts, value)
    assert canon(got) == canon(want) and dropped == 0 and logic.dead_letters == 0
    assert logic._kcap.max() > 16  # grew


def test_state_stays_bounded_on_an_endless_stream() -> None:
    p = Pattern.begin("a", "value > 5").one_or_more().followed_by("b", "value < -100")
    logic = p.within(ms=50).operator().build()
    rng = np.random.default_rng(1)
    sizes = []
    for k in range(200):
        ts = k * 20 * MS + np.arange(2000) * 10_000
        sid = rng.integers(0, 50, 2000)
        value = rng.choice([0.0, 6.0, 7.0], 2000)  # never a b: partial matches only end by time
        logic.on_batch(batch(sid, ts, value))
        assert logic.on_watermark(int(ts[-1]) + 1) == []
        sizes.append((int(logic.nslot.sum()), logic.n_nodes, len(logic.nd), len(logic.block)))
    assert max(s[0] for s in sizes[100:]) <= max(s[0] for s in sizes[:100]) + 50
    assert sizes[-1][2] == sizes[50][2]  # the node pool stopped growing
    # blocks grow by key (x4, ~4k partial matches each here) and are laid out
    # again when full: at most twice what the keys' blocks hold
    assert sizes[-1][3] <= 2 * (int(logic._kcap.sum()) + logic.maxcap)
    assert logic.dropped_partial_matches == 0 and logic.dead_letters == 0


# ------------------------------------------------------------ conditions on the match


def test_running_average_over_a_loop() -> None:
    """avg(A.value) in A's own condition counts the reading (running semantics); in
    B's, A's events only."""
    p = Pattern.begin("A", "avg(A.value) > 70").one_or_more().consecutive()
    p = p.next("B", "value < avg(A.value) - 30")
    got = matches(p, [80, 90, 75, 20, 50, 95, 10])
    assert [m[2] for m in got] == [(80.0, 90.0, 75.0, 20.0), (95.0, 10.0)]
    # greedy: the loop stops only where A's condition (with the reading) fails
    value = [80, 90, 75, 40, 20]
    assert [m[2] for m in matches(p, value)] == [(80.0, 90.0, 75.0, 40.0)]
    # (40 with the A's averages 71.25: still an A, so the greedy loop takes it)
    assert [m[2] for m in matches(_greedy_avg(), value)] == [(80.0, 90.0, 75.0, 40.0, 20.0)]


def _greedy_avg() -> Pattern:
    p = Pattern.begin("A", "avg(A.value) > 70").one_or_more().consecutive().greedy()
    return p.next("B", "value < avg(A.value) - 30")


def test_first_last_previous_count_and_time() -> None:
    rising = Pattern.begin("A", "value > 0 and (count(A) < 2 or value > last(A.value, 1))")
    p = rising.times_or_more(2).consecutive().greedy().next("B", "value < last(A.value) - 5")
    assert [m[2] for m in matches(p, [1, 2, 3, 9, 2, 5])] == [(1.0, 2.0, 3.0, 9.0, 2.0)]
    p = Pattern.begin("A", "value > 0").next("B", "value > previous(value)").times(2)
    assert [m[2] for m in matches(p, [1, 2, 3, 3, 4, 5])] == [(1.0, 2.0, 3.0), (3.0, 4.0, 5.0)]
    p = Pattern.begin("A", "value > 0").followed_by("B", "value >= first(A.value) * 2")
    assert [m[2] for m in matches(p, [3, 4, 5, 6])] == [(3.0, 6.0)]
    p = Pattern.begin("A", "value > 0").followed_by("B", "ts - A.ts >= 2 * 1000000")
    got = matches(p, [1, 1, 1, 1], ts=[0, MS, 2 * MS + 1, 3 * MS])
    assert [(m[0], m[1]) for m in got] == [(0, 2 * MS + 1)]
    p = Pattern.begin("A", "value > 0").next("B", "ts_ms - A.ts_ms >= 1")
    got = matches(p, [1, 1, 1], ts=[0, MS - 1, MS])
    assert [(m[0], m[1]) for m in got] == [(MS - 1, MS)]  # 0 -> 999999 ns: the same ms
    p = Pattern.begin("A", "quality == 192").next("B", "quality == A.quality and ts > 1")
    assert len(matches(p, [1, 1], ts=[0, 5], quality=[192, 192])) == 1


def test_sum_min_max_and_empty_aggregates() -> None:
    p = Pattern.begin("A", "value > 60 and max(A.value) - min(A.value) <= 15")
    p = p.times_or_more(3).consecutive()
    p = p.next("B", "value < min(A.value) - 20 and sum(A.value) / count(A) > 70")
    assert [m[2] for m in matches(p, [70, 80, 75, 40])] == [(70.0, 80.0, 75.0, 40.0)]
    # no B event yet: count 0, avg NaN (so false), first NaN
    p = Pattern.begin("A", "value > 0").followed_by("B", "count(B) == 1 and not (avg(A.value) > 5)")
    assert [m[2] for m in matches(p, [1, 2])] == [(1.0, 2.0)]
    p = Pattern.begin("A", "value > 0").followed_by("B", "value / 0 > 1e308")
    assert [m[2] for m in matches(p, [1, 2])] == [(1.0, 2.0)]  # inf, not an error


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("value > last(B.value)", "no step named 'B' at or before this one"),
        ("value > avg(A.ts)", "sum and avg are of numbers"),
        ("ts * 2 > 1", "only ts - ts, ts \\+- n"),
        ("value > A.speed", "an event's field is one of"),
        ("value > last(A.value, 2)", "n is 0"),
        ("value > previous(speed)", "the field is one of"),
        ("avg(A.value)", "must compare"),
        ("value + (value > 1) > 0", "needs numbers"),
    ],
)
def test_bad_match_conditions(condition: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Pattern.begin("A", condition).followed_by("B", "value > 1").operator()


def test_a_negation_is_referred_to_by_no_step() -> None:
    p = Pattern.begin("A", "value > 1").not_followed_by("N", "value > avg(A.value)")
    assert p.followed_by("B", "value < 0").operator()  # a negation refers to earlier steps
    with pytest.raises(ConfigError, match="later step or a negation"):
        p.followed_by("B", "value < N.value").operator()


def test_match_conditions_from_yaml() -> None:
    steps = [
        {"name": "A", "condition": "avg(A.value) > 70", "contiguity": "begin",
         "quantifier": "one_or_more", "consecutive": True},
        {"name": "B", "condition": "value < avg(A.value) - 30", "contiguity": "next"},
    ]  # fmt: skip
    op = build(
        OmegaConf.create({"_target_": "telepipe.operators.CepPattern", "steps": steps}), "op"
    )
    got = rows(run(op, [1] * 4, [0, 1, 2, 3], [80.0, 90.0, 75.0, 20.0]))
    assert [m[4] for m in got] == [(80.0, 90.0, 75.0, 20.0)]


# ------------------------------------------------------------ end of input


def test_end_of_input_as_flink_or_reporting_held_matches() -> None:
    """Without within, a partial match that never completes holds back a later start's
    complete match: Flink never reports it (the default), report_held does."""
    p = Pattern.begin("A", "value > 5").followed_by("B", "value < first(A.value) - 10")
    value = [9.0, 20.0, 5.0]  # start 0 waits for a B below -1; start 1 has 5
    flink = p.operator("t").build()
    assert rows(run(p.operator("t"), [1] * 3, [0, 1, 2], value, logic=flink)) == []
    assert flink.held_at_end == 1 == flink.stats()["held_at_end"]
    held = p.operator("t", end_of_input="report_held")
    assert [m[4] for m in rows(run(held, [1] * 3, [0, 1, 2], value))] == [(20.0, 5.0)]
    for end in ("flink", "report_held"):  # both checked against the reference
        assert len(matches(p, value, end_of_input=end)) == (end != "flink")
    with pytest.raises(ConfigError, match="end_of_input must be one of flink, report_held"):
        p.operator("t", end_of_input="drain")
