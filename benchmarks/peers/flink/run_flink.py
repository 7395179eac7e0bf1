"""Run telepipe's CEP reference patterns in Apache Flink as SQL ``MATCH_RECOGNIZE``.

Issue 22 (Step 13) part 2: Flink is the reference that ``CepPattern`` is compared
with, match by match. This script reads the adversarial data sets written by
``gen_data.py`` (``tests/operators/flink/inputs/*.csv``), runs every pattern of
``PATTERNS`` below in one local Flink (parallelism 1, one JVM) and writes

- ``tests/operators/flink/<pattern_id>.csv``: Flink's matches, one row per match,
  sorted by (sensor_id, start position, end position);
- ``tests/operators/flink/patterns.json``: the run (versions, mode, time semantics,
  data sets) and, per pattern, the SQL, the PATTERN/DEFINE text, the skip strategy,
  the WITHIN interval, what it covers, the telepipe equivalent in words, and
  whether Flink supports it (with Flink's error when it does not).

It must run inside the PyFlink venv (``setup.sh``)::

    .venv-peers/flink/bin/python benchmarks/peers/flink/run_flink.py [--mode streaming]
        [--compare-batch] [--only id1,id2]

Every query is ``PARTITION BY sensor_id ORDER BY rt, ts_ns, seq``: ``rt`` is the
event-time attribute, ``CAST(ts AS TIMESTAMP(3))`` (the nanosecond timestamp
truncated to the millisecond, which is all Flink's CEP operator sees: ``WITHIN`` is
compared in whole milliseconds), with the watermark ``rt - 100 ms`` (the data are at
most 30 ms out of order); ``ts_ns`` then ``seq`` (arrival) order rows with equal
``rt``, so the order is telepipe's ``(ts, arrival)``. Each match row has, per
pattern variable V, ``FIRST(V.ts_ns)``, ``LAST(V.ts_ns)``, ``COUNT(V.seq)`` and
``LISTAGG(V.seq)``; the script merges the variables' rows into the match's rows in
event order and checks that they are consecutive in the sensor's order (SQL patterns
are always contiguous). Flink has no ``MATCH_NUMBER()``: ``match_no`` is numbered
here, per sensor, in the output order.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
OUT = ROOT / "tests" / "operators" / "flink"
DATA = OUT / "inputs"  # not data/: the repo .gitignore ignores every data/
DATASETS = ("issue22", "within", "ties", "adv")
WATERMARK_DELAY = "INTERVAL '0.1' SECOND"
ORDER_BY = "rt, ts_ns, seq"
CSV_COLUMNS = ["seq", "sensor_id", "ts", "ts_ns", "value", "quality"]


@dataclass
class Spec:
    """One pattern: SQL pieces for Flink and, in words, the telepipe equivalent."""

    id: str
    data: str
    pattern: str
    define: dict[str, str]
    covers: str
    telepipe: str
    skip: str = "PAST LAST ROW"
    within: str | None = None  # e.g. "INTERVAL '5' SECOND"
    filler: tuple[str, ...] = ()  # variables standing for skipped (ignored) readings
    measures: dict[str, str] = field(default_factory=dict)  # extra MEASURES
    rows_per_match: str = "ONE ROW PER MATCH"
    expect: list[str] | None = None  # expected "sensor|events" of every match
    probe: bool = False  # a feature Flink may not have: an error is recorded, not fatal
    compare_with: str | None = None  # another pattern whose telepipe events should agree
    notes: str = ""

    def variables(self) -> list[str]:
        names = re.findall(r"\b[A-Z][A-Z0-9_]*\b", self.pattern)
        seen: list[str] = []
        for n in names:
            if n not in ("PERMUTE",) and n not in seen:
                seen.append(n)
        return seen


def q(sql: str) -> str:
    """Conditions are written with ``X.value``; ``value`` is reserved in Flink SQL."""
    return re.sub(r"\b([A-Z][A-Z0-9_]*)\.value\b", r"\1.`value`", sql)


HI = "value > 80"
MID = "40 <= value < 60"
LO = "value < 20"
S_HI, S_MID, S_LO = "A.value > 80", "B.value >= 40 AND B.value < 60", "C.value < 20"
ISSUE22 = {"A": "A.value > 70", "B": "B.value > 80"}
SKIP_DEFINE = {"S": "S.value > 50", "A": "A.value > 70", "B": "B.value < 60"}
RELAX = (
    "relaxed contiguity, FlinkCEP followedBy (skip till next): the filler variable N is "
    "defined as NOT (the next step's condition), so it takes exactly the readings followedBy "
    "ignores; telepipe's match holds only the non-filler rows"
)

PATTERNS: list[Spec] = [
    # --- issue 22: greedy vs reluctant --------------------------------------------------
    Spec(
        "issue22_greedy",
        "issue22",
        "A+ B",
        ISSUE22,
        "greedy one-or-more then a strict step, on the example of issue 22 "
        "(75, 85, 90, 60 at 0/10/20/30 ms)",
        "begin A 'value > 70' one_or_more, consecutive, GREEDY; next B 'value > 80'. "
        "Sketch: Pattern.begin('A', 'value > 70').one_or_more().consecutive().greedy()"
        ".next('B', 'value > 80')",
        expect=[],
        notes="greedy A+ takes 85 and 90 as A, then 60 is not B: no match (issue 22)",
    ),
    Spec(
        "issue22_reluctant",
        "issue22",
        "A+? B",
        ISSUE22,
        "reluctant one-or-more then a strict step, on the example of issue 22",
        "begin A 'value > 70' one_or_more, consecutive (reluctant, today's default); "
        "next B 'value > 80'. Today: Pattern.begin('A', 'value > 70').one_or_more()"
        ".consecutive().next('B', 'value > 80')",
        expect=["1|0:A 1:B"],
        notes="the match (0 ms, 10 ms): A = 75, B = 85",
    ),
    Spec(
        "greedy_plus",
        "adv",
        "A+ B",
        ISSUE22,
        "greedy A+ with overlapping conditions (every B is also an A) on the adversarial data",
        "as issue22_greedy (one_or_more consecutive greedy, then next)",
    ),
    Spec(
        "reluctant_plus",
        "adv",
        "A+? B",
        ISSUE22,
        "reluctant A+? with overlapping conditions on the adversarial data",
        "as issue22_reluctant (one_or_more consecutive reluctant, then next)",
    ),
    Spec(
        "greedy_plus_overlap",
        "adv",
        "A+ B",
        {"A": "A.value > 60 AND A.value < 90", "B": "B.value > 80"},
        "greedy A+ where B overlaps A only partly (80..90 is both; >= 90 is only B): "
        "Flink's greedy leaves the loop only on a row that A does not take",
        "begin A '60 < value < 90' one_or_more consecutive greedy; next B 'value > 80'",
    ),
    Spec(
        "reluctant_plus_overlap",
        "adv",
        "A+? B",
        {"A": "A.value > 60 AND A.value < 90", "B": "B.value > 80"},
        "reluctant counterpart of greedy_plus_overlap",
        "begin A '60 < value < 90' one_or_more consecutive; next B 'value > 80'",
    ),
    Spec(
        "bounded_greedy_overlap",
        "adv",
        "A{2,4} B",
        {"A": "A.value > 60 AND A.value < 90", "B": "B.value > 80"},
        "greedy {2,4} where B overlaps A partly",
        "begin A '60 < value < 90' times(2, 4) consecutive greedy; next B 'value > 80'",
    ),
    # --- sequences -----------------------------------------------------------------------
    Spec(
        "strict_seq",
        "adv",
        "A B C",
        {"A": S_HI, "B": S_MID, "C": S_LO},
        "strict contiguity (next) between single steps",
        f"begin A '{HI}'; next B '{MID}'; next C '{LO}'. Today: Pattern.begin('A', '{HI}')"
        f".next('B', '{MID}').next('C', '{LO}')",
    ),
    Spec(
        "relaxed_seq",
        "adv",
        "A N1*? B N2*? C",
        {
            "A": S_HI,
            "N1": f"NOT ({S_MID.replace('B.', 'N1.')})",
            "B": S_MID,
            "N2": f"NOT ({S_LO.replace('C.', 'N2.')})",
            "C": S_LO,
        },
        "relaxed contiguity (followedBy) between single steps, as exact SQL: "
        "N1/N2 take only readings that do not satisfy the awaited step. " + RELAX,
        f"begin A '{HI}'; followed_by B '{MID}'; followed_by C '{LO}'. Today: "
        f"Pattern.begin('A', '{HI}').followed_by('B', '{MID}').followed_by('C', '{LO}')",
        filler=("N1", "N2"),
    ),
    Spec(
        "relaxed_any",
        "adv",
        "A X*? B Y*? C",
        {"A": S_HI, "B": S_MID, "C": S_LO},
        "the textbook SQL form of a relaxed sequence: undefined (always true) X, Y, "
        "reluctant; X may also take readings that satisfy B",
        "the same telepipe pattern as relaxed_seq (flink.same_events_as says whether "
        "Flink's answers differ)",
        filler=("X", "Y"),
        compare_with="relaxed_seq",
    ),
    Spec(
        "mixed_seq",
        "adv",
        "A B N*? C",
        {"A": S_HI, "B": S_MID, "N": f"NOT ({S_LO.replace('C.', 'N.')})", "C": S_LO},
        "next then followedBy",
        f"begin A '{HI}'; next B '{MID}'; followed_by C '{LO}'",
        filler=("N",),
    ),
    # --- quantifiers ---------------------------------------------------------------------
    Spec(
        "bounded_greedy",
        "adv",
        "A{2,4} B",
        {"A": "A.value > 60", "B": "B.value > 75"},
        "bounded quantifier {2,4}, greedy, overlapping conditions",
        "begin A 'value > 60' times(2, 4), consecutive, greedy; next B 'value > 75'",
    ),
    Spec(
        "bounded_reluctant",
        "adv",
        "A{2,4}? B",
        {"A": "A.value > 60", "B": "B.value > 75"},
        "bounded quantifier {2,4}, reluctant",
        "begin A 'value > 60' times(2, 4), consecutive (reluctant); next B 'value > 75'. "
        "Today: Pattern.begin('A', 'value > 60').times(2, 4).consecutive()"
        ".next('B', 'value > 75')",
    ),
    Spec(
        "times_or_more_greedy",
        "adv",
        "A{3,} B",
        ISSUE22,
        "{3,} greedy",
        "begin A 'value > 70' times_or_more(3), consecutive, greedy; next B 'value > 80'",
    ),
    Spec(
        "times_or_more_reluctant",
        "adv",
        "A{3,}? B",
        ISSUE22,
        "{3,} reluctant",
        "begin A 'value > 70' times_or_more(3), consecutive; "
        "next B 'value > 80'. Today: .times_or_more(3).consecutive()",
    ),
    Spec(
        "times_exact",
        "adv",
        "A{3} B",
        {"A": S_HI, "B": "B.value < 20"},
        "exactly 3, strict",
        f"begin A '{HI}' times(3), consecutive; next B '{LO}'",
    ),
    Spec(
        "times_relaxed",
        "adv",
        "A1 N1*? A2 N2*? A3 N3*? B",
        {
            "A1": "A1.value > 80",
            "N1": "NOT (N1.value > 80)",
            "A2": "A2.value > 80",
            "N2": "NOT (N2.value > 80)",
            "A3": "A3.value > 80",
            "N3": "NOT (N3.value < 20)",
            "B": "B.value < 20",
        },
        "times(3) with relaxed repetitions (telepipe's and FlinkCEP's default), unrolled "
        "into A1 A2 A3 because Flink SQL has no group pattern. " + RELAX,
        f"begin A '{HI}' times(3) (not consecutive); followed_by B '{LO}'. Today: "
        f"Pattern.begin('A', '{HI}').times(3).followed_by('B', '{LO}'); the steps A1/A2/A3 "
        "are telepipe's step A",
        filler=("N1", "N2", "N3"),
    ),
    Spec(
        "optional_greedy",
        "adv",
        "A B? C",
        {"A": S_HI, "B": S_MID, "C": "C.value < 50"},
        "optional step, greedy (B and C overlap on [40, 50))",
        f"begin A '{HI}'; next B '{MID}' optional, greedy; next C 'value < 50'",
    ),
    Spec(
        "optional_reluctant",
        "adv",
        "A B?? C",
        {"A": S_HI, "B": S_MID, "C": "C.value < 50"},
        "optional step, reluctant",
        f"begin A '{HI}'; next B '{MID}' optional (reluctant); next C 'value < 50'. "
        f"Today: Pattern.begin('A', '{HI}').next('B', '{MID}').optional()"
        ".next('C', 'value < 50')",
        probe=True,
        notes="Flink 2.3 rejects it: 'Reluctant optional variables are not supported yet.'",
    ),
    Spec(
        "star_greedy",
        "adv",
        "A B* C",
        {"A": S_HI, "B": S_MID, "C": "C.value < 50"},
        "zero-or-more, greedy",
        f"begin A '{HI}'; next B '{MID}' one_or_more optional consecutive greedy; "
        "next C 'value < 50'",
    ),
    Spec(
        "star_reluctant",
        "adv",
        "A B*? C",
        {"A": S_HI, "B": S_MID, "C": "C.value < 50"},
        "zero-or-more, reluctant",
        f"begin A '{HI}'; next B '{MID}' one_or_more optional consecutive; "
        "next C 'value < 50'. Today: .next('B', ...).one_or_more().optional().consecutive()",
    ),
    # --- conditions on earlier events ------------------------------------------------------
    Spec(
        "cond_last",
        "adv",
        "A{2,} B",
        {
            "A": "A.value > 60 AND (LAST(A.value, 1) IS NULL OR A.value > LAST(A.value, 1))",
            "B": "B.value < LAST(A.value) - 20",
        },
        "LAST(A.value, 1) (the previous A) and LAST(A.value) (the last A) in conditions: "
        "a strictly rising run of >= 2 readings above 60, then a drop of more than 20",
        "begin A 'value > 60 and value > last(A.value)' (no previous A: true) "
        "times_or_more(2) consecutive greedy; next B 'value < last(A.value) - 20'",
    ),
    Spec(
        "cond_first",
        "adv",
        "A+ B",
        {
            "A": "A.value > 60 AND A.value >= FIRST(A.value) - 5",
            "B": "B.value < FIRST(A.value) - 30",
        },
        "FIRST(A.value) over a looping step: stay within 5 below the first A, then drop "
        "30 below it",
        "begin A 'value > 60 and value >= first(A.value) - 5' one_or_more consecutive "
        "greedy; next B 'value < first(A.value) - 30'",
    ),
    Spec(
        "cond_prev",
        "adv",
        "A B",
        {"A": "A.value > 80 AND PREV(A.value) < 50", "B": "B.value > PREV(B.value)"},
        "PREV(value): the physically previous reading of the sensor (also before the "
        "match starts; NULL, so false, at the sensor's first reading)",
        "begin A 'value > 80 and previous(value) < 50'; next B 'value > previous(value)' "
        "where previous is the sensor's reading just before, in (ts, arrival) order",
        probe=True,
        notes="Flink SQL has no physical navigation: PREV(x) with an offset "
        "(1 by default) and NEXT are rejected ('Flink does not support physical offsets "
        "within partition.'); FlinkCEP's IterativeCondition only sees the partial match, "
        "so 'previous' can only mean the previous event of the match (cond_prev_in_match)",
    ),
    Spec(
        "cond_prev_in_match",
        "adv",
        "A B{2,} C",
        {
            "A": "A.value < 50",
            "B": "B.value > COALESCE(LAST(B.value, 1), A.value)",
            "C": "C.value < LAST(B.value) - 20",
        },
        "the previous event of the match in a condition: LAST(B.value, 1) (the previous "
        "B), or A.value for the first B; greedy B{2,} (C never satisfies B)",
        "begin A 'value < 50'; next B 'value > previous(value)' times_or_more(2) "
        "consecutive greedy, previous = the match's event before this one; next C "
        "'value < last(B.value) - 20'",
    ),
    Spec(
        "cond_avg_greedy",
        "adv",
        "A+ B",
        {"A": "AVG(A.value) > 70", "B": "B.value < AVG(A.value) - 30"},
        "AVG over the looping step (running: includes the row being tested), greedy",
        "begin A 'avg(A.value) > 70' one_or_more consecutive greedy; "
        "next B 'value < avg(A.value) - 30'",
        measures={"avg_a": "AVG(A.`value`)"},
    ),
    Spec(
        "cond_avg_reluctant",
        "adv",
        "A+? B",
        {"A": "AVG(A.value) > 70", "B": "B.value < AVG(A.value) - 30"},
        "AVG over the looping step, reluctant",
        "as cond_avg_greedy, reluctant",
        measures={"avg_a": "AVG(A.`value`)"},
    ),
    Spec(
        "cond_aggs",
        "adv",
        "A{3,}? B",
        {
            "A": "A.value > 60 AND MAX(A.value) - MIN(A.value) <= 15",
            "B": "B.value < MIN(A.value) - 20 AND SUM(A.value) / COUNT(A.seq) > 70",
        },
        "MIN, MAX, SUM, COUNT over the looping step",
        "begin A 'value > 60 and max(A.value) - min(A.value) <= 15' times_or_more(3) "
        "consecutive; next B 'value < min(A.value) - 20 and sum(A.value)/count(A) > 70'",
        measures={"min_a": "MIN(A.`value`)", "max_a": "MAX(A.`value`)"},
    ),
    Spec(
        "cond_ts_ns",
        "adv",
        "A B",
        {"A": "A.value > 70", "B": "B.value > 70 AND B.ts_ns - A.ts_ns < 1000000"},
        "ts in a condition (nanoseconds, a plain BIGINT column): B less than 1 ms after A",
        "begin A 'value > 70'; next B 'value > 70 and ts - A.ts < 1 ms' (ns)",
    ),
    Spec(
        "cond_rowtime",
        "adv",
        "A B",
        {"A": "A.value > 70", "B": "B.value > 70 AND B.rt < A.rt + INTERVAL '0.001' SECOND"},
        "the rowtime attribute in a condition (milliseconds, truncated): compare with "
        "cond_ts_ns for the truncation",
        "as cond_ts_ns, with both timestamps truncated to the millisecond",
        compare_with="cond_ts_ns",
    ),
    Spec(
        "cond_or",
        "adv",
        "A B",
        {"A": "A.value > 90 OR A.quality = 0", "B": "NOT (B.value > 50) AND B.quality = 192"},
        "or / and / not and the quality column (chained where / or)",
        "begin A 'value > 90 or quality == 0'; next B 'not (value > 50) and quality == 192'. "
        "Today: Pattern.begin('A', 'value > 90 or quality == 0').next('B', "
        "'not (value > 50) and quality == 192')",
    ),
    # --- negations in the middle, as SQL ------------------------------------------------
    Spec(
        "not_followed_by_mid",
        "adv",
        "A N*? C",
        {
            "A": S_HI,
            "N": "NOT (N.value < 20) AND NOT (N.value >= 40 AND N.value < 60)",
            "C": "C.value < 20 AND NOT (C.value >= 40 AND C.value < 60)",
        },
        "notFollowedBy between two steps, encoded: a reading that satisfies the negated "
        "condition is neither N nor C, so it ends the partial match",
        f"begin A '{HI}'; not_followed_by X '{MID}'; followed_by C '{LO}'. Today: "
        f"Pattern.begin('A', '{HI}').not_followed_by('X', '{MID}').followed_by('C', '{LO}')",
        filler=("N",),
    ),
    Spec(
        "not_next_mid",
        "adv",
        "A N*? C",
        {
            "A": S_HI,
            "N": "NOT (N.value < 20) AND NOT (N.value > 90 AND COUNT(N.seq) = 1)",
            "C": "C.value < 20",
        },
        "notNext between two steps, encoded: the reading right after A (the first N, "
        "COUNT(N.seq) = 1 counting itself) must not satisfy 'value > 90' (a C right after "
        "A cannot: C and 'value > 90' are disjoint)",
        f"begin A '{HI}'; not_next X 'value > 90'; followed_by C '{LO}'. Today: "
        f"Pattern.begin('A', '{HI}').not_next('X', 'value > 90').followed_by('C', '{LO}')",
        filler=("N",),
    ),
    # --- within --------------------------------------------------------------------------
    Spec(
        "within_boundary",
        "within",
        "A N*? B",
        {"A": "A.value > 80", "N": "NOT (N.value < 20)", "B": "B.value < 20"},
        "WITHIN 5 s at its boundary: Flink compares millisecond rowtimes "
        "(rt_end - rt_start < 5000), so a match spanning 4999.6 ms that crosses a "
        "millisecond boundary (sensor 1: 0.6 ms -> 5000.2 ms) is expired",
        "begin A 'value > 80'; followed_by B 'value < 20'; within 5000 ms. telepipe today "
        "(nanoseconds, span < 5 s) matches sensors 1, 2, 4, 5, 6 (from the first A), 7 and 8",
        within="INTERVAL '5' SECOND",
        filler=("N",),
        expect=["2|0:A 12:B", "4|2:A 11:B", "6|8:A 18:B", "7|4:A 13:B", "8|3:A 14:B"],
        notes="Flink's answer: sensors 2, 4, 6 (from the second A, 1000 ms) 7, 8; sensors "
        "1 and 5 span < 5 s in ns but 5000 ms in rowtime; sensor 3 is exactly 5 s",
    ),
    Spec(
        "within_boundary_none",
        "within",
        "A N*? B",
        {"A": "A.value > 80", "N": "NOT (N.value < 20)", "B": "B.value < 20"},
        "control for within_boundary: the same without WITHIN (every sensor matches)",
        "begin A 'value > 80'; followed_by B 'value < 20'",
        filler=("N",),
    ),
    Spec(
        "within_relaxed",
        "adv",
        "A N*? B",
        {"A": S_HI, "N": "NOT (N.value < 20)", "B": "B.value < 20"},
        "WITHIN 100 ms on the adversarial data (sub-millisecond steps: some matches "
        "differ from a nanosecond within)",
        f"begin A '{HI}'; followed_by B '{LO}'; within 100 ms (Flink's millisecond semantics)",
        within="INTERVAL '0.1' SECOND",
        filler=("N",),
    ),
    Spec(
        "within_greedy",
        "adv",
        "A+ B",
        ISSUE22,
        "WITHIN 30 ms with a greedy loop: the greedy branch can time out",
        "as greedy_plus, within 30 ms (millisecond semantics)",
        within="INTERVAL '0.03' SECOND",
    ),
    # --- after match skip ----------------------------------------------------------------
    Spec(
        "skip_past_last_row",
        "adv",
        "S{2} A+ B",
        SKIP_DEFINE,
        "AFTER MATCH SKIP PAST LAST ROW (the default); S overlaps A",
        "begin S 'value > 50' times(2) consecutive; next A 'value > 70' one_or_more "
        "consecutive greedy; next B 'value < 60'; skip past last event",
    ),
    Spec(
        "skip_to_next_row",
        "adv",
        "S{2} A+ B",
        SKIP_DEFINE,
        "AFTER MATCH SKIP TO NEXT ROW",
        "as skip_past_last_row; skip to next",
        skip="TO NEXT ROW",
    ),
    Spec(
        "skip_to_first_a",
        "adv",
        "S{2} A+ B",
        SKIP_DEFINE,
        "AFTER MATCH SKIP TO FIRST A",
        "as skip_past_last_row; skip to first A",
        skip="TO FIRST A",
    ),
    Spec(
        "skip_to_last_a",
        "adv",
        "S{2} A+ B",
        SKIP_DEFINE,
        "AFTER MATCH SKIP TO LAST A",
        "as skip_past_last_row; skip to last A",
        skip="TO LAST A",
    ),
    Spec(
        "skip_to_next_reluctant",
        "adv",
        "A+? B",
        ISSUE22,
        "AFTER MATCH SKIP TO NEXT ROW with a reluctant loop (overlapping matches)",
        "as issue22_reluctant; skip to next",
        skip="TO NEXT ROW",
    ),
    Spec(
        "skip_to_first_at_start",
        "adv",
        "A+ B",
        {"A": "A.value > 70", "B": "B.value < 60"},
        "AFTER MATCH SKIP TO FIRST A where A is the match's first row",
        "begin A 'value > 70' one_or_more consecutive greedy; next B 'value < 60'; skip "
        "to first A (FlinkCEP skipToFirst('A'))",
        skip="TO FIRST A",
        probe=True,
        notes="the job fails at the first match: FlinkCEP refuses to skip to the match's "
        "own first row (it would find the same match again)",
    ),
    Spec(
        "skip_to_last_a_plus",
        "adv",
        "A+ B",
        {"A": "A.value > 70", "B": "B.value < 60"},
        "AFTER MATCH SKIP TO LAST A where A may be a single row (the match's first)",
        "as skip_to_first_at_start; skip to last A",
        skip="TO LAST A",
        probe=True,
        notes="fails like skip_to_first_at_start as soon as a match has a single A "
        "(its last A is the match's first row)",
    ),
    # --- equal timestamps ------------------------------------------------------------------
    Spec(
        "ties_strict",
        "ties",
        "A B C",
        {"A": S_HI, "B": S_MID, "C": S_LO},
        "strict sequence over runs of equal timestamps (order: ts, then arrival)",
        "as strict_seq",
    ),
    Spec(
        "ties_greedy",
        "ties",
        "A+ B",
        ISSUE22,
        "greedy A+ over equal timestamps",
        "as issue22_greedy",
    ),
    Spec(
        "ties_reluctant",
        "ties",
        "A+? B",
        ISSUE22,
        "reluctant A+? over equal timestamps",
        "as issue22_reluctant",
    ),
    Spec(
        "ties_within",
        "ties",
        "A N*? B",
        {"A": "A.value > 80", "N": "NOT (N.value < 20)", "B": "B.value < 20"},
        "WITHIN 3 ms over equal timestamps (a match may lie within one timestamp)",
        "begin A 'value > 80'; followed_by B 'value < 20'; within 3 ms",
        within="INTERVAL '0.003' SECOND",
        filler=("N",),
    ),
    # --- what Flink SQL may not have (recorded with Flink's error) ------------------------
    Spec(
        "probe_group",
        "adv",
        "(A B)+ C",
        {"A": "A.value > 80", "B": "B.value < 50", "C": "C.value < 20"},
        "group pattern (A B)+",
        "begin(Pattern) group: (A next B) one_or_more; next C",
        probe=True,
    ),
    Spec(
        "probe_relaxed_plus",
        "adv",
        "(A N*?)+ B",
        {"A": "A.value > 80", "N": "NOT (N.value > 80)", "B": "B.value < 20"},
        "one_or_more with relaxed repetitions (telepipe's default one_or_more) needs a group",
        f"begin A '{HI}' one_or_more (not consecutive); followed_by B '{LO}'",
        filler=("N",),
        probe=True,
    ),
    Spec(
        "probe_alternation",
        "adv",
        "(A | B) C",
        {"A": "A.value > 90", "B": "B.value < 10", "C": "C.value >= 40 AND C.value < 60"},
        "alternation (A | B)",
        "no telepipe step form (or() between steps)",
        probe=True,
    ),
    Spec(
        "probe_permute",
        "adv",
        "PERMUTE(A, B) C",
        {"A": "A.value > 90", "B": "B.value < 10", "C": "C.value >= 40 AND C.value < 60"},
        "PERMUTE",
        "none",
        probe=True,
    ),
    Spec(
        "probe_exclusion",
        "adv",
        "A {- N* -} B",
        {"A": "A.value > 80", "N": "NOT (N.value < 20)", "B": "B.value < 20"},
        "exclusion {- -} (rows matched but not output)",
        "none",
        filler=("N",),
        probe=True,
    ),
    Spec(
        "probe_match_number",
        "adv",
        "A B",
        {"A": S_HI, "B": "B.value < 50"},
        "MATCH_NUMBER() in MEASURES",
        "match_no",
        measures={"mn": "MATCH_NUMBER()"},
        probe=True,
    ),
    Spec(
        "probe_classifier",
        "adv",
        "A B",
        {"A": S_HI, "B": "B.value < 50"},
        "CLASSIFIER() in MEASURES",
        "steps",
        measures={"cls": "CLASSIFIER()"},
        probe=True,
    ),
    Spec(
        "probe_all_rows",
        "adv",
        "A B",
        {"A": S_HI, "B": "B.value < 50"},
        "ALL ROWS PER MATCH",
        "one row per reading of a match",
        rows_per_match="ALL ROWS PER MATCH",
        probe=True,
    ),
    Spec(
        "probe_next_nav",
        "adv",
        "A B",
        {"A": "A.value > 80 AND NEXT(A.value) < 50", "B": "B.value < 50"},
        "NEXT() (a look-ahead) in DEFINE",
        "none",
        probe=True,
    ),
]

NOT_IN_SQL = {
    "followed_by_any": "FlinkCEP followedByAny (skip till any match): every later reading "
    "that satisfies the step starts its own branch. A SQL pattern is contiguous and each "
    "row is taken by exactly one variable; relaxed contiguity can only be written with "
    "filler variables (A N*? B), which is skip-till-next; there is no way to let a "
    "satisfying row be skipped AND taken in different matches under SKIP PAST LAST ROW.",
    "allow_combinations": "FlinkCEP oneOrMore().allowCombinations() (skip till any "
    "between repetitions): needs a relaxed loop (a group (A N*)+) plus any-match; Flink "
    "SQL rejects group patterns.",
    "relaxed_loop": "one_or_more / times_or_more without consecutive (relaxed repetitions, "
    "the FlinkCEP default): needs (A N*?)+, a group pattern; only a bounded times(n) can "
    "be unrolled (times_relaxed).",
    "until": "FlinkCEP oneOrMore().until(cond): a stop condition for a loop; SQL has no "
    "such clause (a DEFINE can exclude the stop rows from the loop, but a stop row that "
    "does not satisfy the next step does not end the loop the same way).",
    "no_skip": "FlinkCEP AfterMatchSkipStrategy.noSkip(): every match; MATCH_RECOGNIZE "
    "has only SKIP PAST LAST ROW / TO NEXT ROW / TO FIRST|LAST var (TO NEXT ROW still "
    "reports one match per start row).",
    "timed_out_side_output": "FlinkCEP TimedOutPartialMatchHandler / PatternProcessFunction "
    "side output of partial matches that WITHIN expired: MATCH_RECOGNIZE drops them silently.",
    "trailing_negation": "notFollowedBy as the last step (completed by WITHIN) and notNext as "
    "the last step: SQL has no negation; a row pattern cannot end on the absence of rows.",
    "negation_first": "a negation as the first step: FlinkCEP rejects it too; SQL has no negation.",
    "group_and_alternation": "group patterns (A B)+ and alternation (A | B): rejected by "
    "Flink's planner (probe_group, probe_alternation).",
    "match_number_classifier": "MATCH_NUMBER() and CLASSIFIER() and ALL ROWS PER MATCH are "
    "not in Flink SQL (probes); this harness numbers matches and reconstructs each match's "
    "rows per variable with LISTAGG(V.seq).",
    "nanosecond_time": "Flink's rowtime is TIMESTAMP(3): ORDER BY and WITHIN see "
    "milliseconds; the nanosecond order is kept here with ORDER BY rt, ts_ns, seq, but WITHIN "
    "stays in milliseconds (within_boundary).",
}


# --- the FlinkCEP Java API (java/FlinkCepReference.java): what SQL cannot say ---------------

HERE = Path(__file__).resolve().parent
JAVA_SRC = HERE / "java" / "FlinkCepReference.java"
J_HI, J_MID, J_LO = "value > 80", "40 <= value < 60", "value < 20"
JAVA_PATTERNS: dict[str, dict] = {
    "cep_relaxed_seq": {
        "covers": "followedBy, skipPastLastEvent: the Java form of relaxed_seq",
        "telepipe": f"begin A '{J_HI}'; followed_by B '{J_MID}'; followed_by C '{J_LO}'",
        "compare_with": "relaxed_seq",
    },
    "cep_greedy_plus_overlap": {
        "covers": "oneOrMore().consecutive().greedy() then next: the Java form of "
        "greedy_plus_overlap",
        "telepipe": "as greedy_plus_overlap",
        "compare_with": "greedy_plus_overlap",
    },
    "cep_issue22_greedy": {
        "covers": "issue 22's example, greedy, in the Java API",
        "telepipe": "as issue22_greedy",
        "compare_with": "issue22_greedy",
    },
    "cep_issue22_default": {
        "covers": "issue 22's example with FlinkCEP's default (not greedy) loop",
        "telepipe": "as issue22_reluctant (telepipe today)",
        "compare_with": "issue22_reluctant",
    },
    "cep_relaxed_plus": {
        "covers": "oneOrMore() with relaxed repetitions (FlinkCEP's and telepipe's default), "
        "then followedBy; no SQL form (needs a group pattern)",
        "telepipe": f"begin A '{J_HI}' one_or_more; followed_by B '{J_LO}'. Today: "
        f"Pattern.begin('A', '{J_HI}').one_or_more().followed_by('B', '{J_LO}')",
    },
    "cep_relaxed_plus_within": {
        "covers": "cep_relaxed_plus within 100 ms",
        "telepipe": f"begin A '{J_HI}' one_or_more; followed_by B '{J_LO}'; within 100 ms "
        "(Flink's millisecond semantics)",
    },
    "cep_relaxed_times_or_more_greedy": {
        "covers": "timesOrMore(2).greedy() with relaxed repetitions, B overlapping A partly, "
        "within 100 ms",
        "telepipe": "begin A '60 < value < 90' times_or_more(2) greedy (not consecutive); "
        "followed_by B 'value > 80'; within 100 ms",
    },
    "cep_skip_past_last": {
        "covers": "S{2} A+ B with skipPastLastEvent: the Java form of skip_past_last_row",
        "telepipe": "as skip_past_last_row",
        "compare_with": "skip_past_last_row",
    },
    "cep_skip_no_skip": {
        "covers": "AfterMatchSkipStrategy.noSkip() (FlinkCEP's default; not in SQL) on the "
        "skip pattern S{2} A+ B",
        "telepipe": "as skip_past_last_row; no skip",
        "compare_with": "skip_to_next_row",
    },
    "cep_followed_by_any": {
        "covers": "followedByAny (skip till any match), skipPastLastEvent, within 100 ms",
        "telepipe": f"begin A '{J_HI}'; followed_by_any B '{J_MID}'; followed_by C '{J_LO}'; "
        "within 100 ms",
    },
    "cep_followed_by_any_noskip": {
        "covers": "followedByAny with noSkip (every combination), within 100 ms",
        "telepipe": "as cep_followed_by_any; no skip",
    },
    "cep_followed_by_noskip": {
        "covers": "followedBy with noSkip, within 100 ms (the control for "
        "cep_followed_by_any_noskip)",
        "telepipe": "as relaxed_seq; within 100 ms; no skip",
    },
    "cep_allow_combinations": {
        "covers": "times(2, 3).allowCombinations() (skip till any between repetitions), "
        "skipPastLastEvent, within 60 ms",
        "telepipe": f"begin A '{J_HI}' times(2, 3) allow_combinations; followed_by B "
        f"'{J_LO}'; within 60 ms",
    },
    "cep_allow_combinations_noskip": {
        "covers": "as cep_allow_combinations with noSkip",
        "telepipe": "as cep_allow_combinations; no skip",
    },
    "cep_until": {
        "covers": "oneOrMore().until(value < 30) (relaxed loop with a stop condition), "
        "within 200 ms",
        "telepipe": "begin A 'value > 60' one_or_more until 'value < 30'; followed_by B "
        "'value > 90'; within 200 ms",
    },
    "cep_until_consecutive": {
        "covers": "oneOrMore().consecutive().until(value >= 90), then next",
        "telepipe": "begin A 'value > 60' one_or_more consecutive until 'value >= 90'; next B "
        "'value > 85'",
    },
    "cep_group_plus": {
        "covers": "group pattern begin(A next B).oneOrMore().consecutive() then next C "
        "(SQL (A B)+ C, which Flink SQL rejects)",
        "telepipe": "a group step (A 'value > 70' next B 'value < 60') one_or_more "
        f"consecutive; next C '{J_LO}'",
    },
    "cep_group_times_relaxed": {
        "covers": "a group followedBy'd twice: S then (A followedBy B) times(2), relaxed, "
        "within 300 ms",
        "telepipe": f"begin S '{J_LO}'; followed_by group (A '{J_HI}' followed_by B "
        f"'{J_MID}') times(2); within 300 ms",
    },
    "cep_not_followed_by_end": {
        "covers": "notFollowedBy as the last step, completed by WITHIN 50 ms, with the side "
        "output of timed-out partial matches (kind=timeout)",
        "telepipe": f"begin A '{J_HI}'; not_followed_by X '{J_LO}'; within 50 ms. Today: "
        f"Pattern.begin('A', '{J_HI}').not_followed_by('X', '{J_LO}').within(ms=50)",
    },
    "cep_not_next_end": {
        "covers": "notNext as the last step",
        "telepipe": f"begin A '{J_HI}'; not_next X 'value < 50'. Today: "
        f"Pattern.begin('A', '{J_HI}').not_next('X', 'value < 50')",
    },
    "cep_not_followed_by_end_no_within": {
        "covers": "notFollowedBy last without WITHIN: FlinkCEP rejects it (as telepipe does)",
        "telepipe": "rejected with a ConfigError (needs within_ms)",
    },
    "cep_where_or_chain": {
        "covers": "chained where/or: where(value > 90).or(quality == 0).where(value > 50) "
        "is ((value > 90) or (quality == 0)) and (value > 50); next B "
        "where(value < 50).where(quality == 192)",
        "telepipe": "begin A '(value > 90 or quality == 0) and value > 50'; next B "
        "'value < 50 and quality == 192'",
    },
    "cep_iterative_avg": {
        "covers": "IterativeCondition over ctx.getEventsForPattern('A') (running average), "
        "FlinkCEP's default (not greedy) loop: the Java form of cond_avg_reluctant",
        "telepipe": "as cond_avg_reluctant",
        "compare_with": "cond_avg_reluctant",
    },
    "cep_timeouts": {
        "covers": "the side output of timed-out partial matches "
        "(TimedOutPartialMatchHandler): A followedBy B within 100 ms; kind=timeout rows are "
        "the partial matches WITHIN expired",
        "telepipe": f"begin A '{J_HI}'; followed_by B '{J_LO}'; within 100 ms; timed-out "
        "partial matches to a side output",
        "compare_with": "within_relaxed",
    },
    "cep_within_boundary": {
        "covers": "within_boundary in the Java API, with its timed-out partial matches",
        "telepipe": "as within_boundary",
        "compare_with": "within_boundary",
    },
    "cep_ties_relaxed": {
        "covers": "relaxed sequence over equal timestamps (EventComparator (ts_ns, seq))",
        "telepipe": f"begin A '{J_HI}'; followed_by B '{J_MID}'; followed_by C '{J_LO}'",
    },
}


def java_snippets() -> dict[str, str]:
    """Each pattern's Java text, as written in FlinkCepReference.specs()."""
    src = JAVA_SRC.read_text()
    out = {}
    for m in re.finditer(
        r'new Spec\("(\w+)", "\w+", \(\) ->\n(.*?)(?=\n\s*(?:s\.add\(|//|return s;))', src, re.S
    ):
        text = re.sub(r"\s+", " ", m.group(2)).strip()
        out[m.group(1)] = re.sub(r",\s*(true|false)\)\);$", "", text)
    return out


def run_java(only: set[str], raw: Path) -> tuple[str, str]:
    """Compile (if needed) and run FlinkCepReference; its raw output goes to ``raw``."""
    import shutil
    import subprocess

    import pyflink

    home = Path(pyflink.__file__).parent
    classes = Path(sys.prefix) / "cep-classes"
    cp = f"{home / 'lib'}/*"
    if shutil.which("javac") is None:
        raise SystemExit(
            "run_flink: javac not found (a JDK 17 is needed for the FlinkCEP part; "
            "or pass --no-java)"
        )
    target = classes / "FlinkCepReference.class"
    if not target.exists() or target.stat().st_mtime < JAVA_SRC.stat().st_mtime:
        classes.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["javac", "-nowarn", "-cp", cp, "-d", str(classes), str(JAVA_SRC)], check=True
        )
    opts = re.search(r"^\s*all:\s*(.+)$", (home / "conf" / "config.yaml").read_text(), re.M)
    log = raw / "log4j2.properties"
    log.write_text(
        "rootLogger.level = ERROR\nrootLogger.appenderRef.c.ref = c\n"
        "appender.c.type = Console\nappender.c.name = c\n"
        "appender.c.layout.type = PatternLayout\nappender.c.layout.pattern = %m%n\n"
    )
    cmd = [
        "java",
        "-Xmx1g",
        *(opts.group(1).split() if opts else []),
        f"-Dlog4j.configurationFile={log}",
        "-cp",
        f"{cp}:{classes}",
        "FlinkCepReference",
        str(DATA),
        str(raw),
        *sorted(only),
    ]
    subprocess.run(cmd, check=True)
    version = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    return cmd[0], version.splitlines()[0]


def java_matches(lines: list[str], data: dict[int, dict]) -> list[dict]:
    out = []
    for line in lines:
        kind, sensor, events = line.split("\t")
        rows = []
        for e in events.split():
            s, v = e.split(":")
            rows.append((data[int(s)]["pos"], int(s), v))
            assert data[int(s)]["sensor_id"] == int(sensor), line
        rows.sort()
        first, last = rows[0], rows[-1]
        out.append(
            {
                "kind": kind,
                "sensor_id": int(sensor),
                "start_seq": first[1],
                "start_ts_ns": data[first[1]]["ts_ns"],
                "end_seq": last[1],
                "end_ts_ns": data[last[1]]["ts_ns"],
                "start_pos": first[0],
                "end_pos": last[0],
                "n_events": len(rows),
                "events": " ".join(f"{s}:{v}" for _, s, v in rows),
                "_key": [x[0] for x in rows],
            }
        )
    out.sort(key=lambda m: (m["sensor_id"], m["kind"], m["_key"]))
    number: dict[tuple, int] = {}
    for m in out:
        k = (m["sensor_id"], m["kind"])
        number[k] = number.get(k, 0) + 1
        m["match_no"] = number[k]
        del m["_key"]
    return out


JAVA_COLUMNS = [
    "kind",
    "sensor_id",
    "match_no",
    "start_seq",
    "start_ts_ns",
    "end_seq",
    "end_ts_ns",
    "start_pos",
    "end_pos",
    "n_events",
    "events",
]


def java_entries(
    raw: Path, only: set[str], data: dict[str, dict[int, dict]], done: dict[str, list]
) -> list[dict]:
    snippets = java_snippets()
    entries = []
    for jid, meta in JAVA_PATTERNS.items():
        if only and jid not in only:
            continue
        m = re.search(r'new Spec\("' + jid + r'", "(\w+)"', JAVA_SRC.read_text())
        assert m, jid
        entry = {
            "id": jid,
            "data": m.group(1),
            "covers": meta["covers"],
            "telepipe": meta["telepipe"],
            "java": snippets.get(jid, ""),
        }
        err = raw / f"{jid}.error"
        if err.exists():
            entry["flink"] = {"supported": False, "error": err.read_text().strip()}
            (OUT / f"{jid}.csv").unlink(missing_ok=True)
            print(f"{jid:34s} rejected: {entry['flink']['error'][:150]}")
            entries.append(entry)
            continue
        lines = [ln for ln in (raw / f"{jid}.tsv").read_text().splitlines() if ln]
        matches = java_matches(lines, data[entry["data"]])
        with (OUT / f"{jid}.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, JAVA_COLUMNS, lineterminator="\n")
            w.writeheader()
            w.writerows(matches)
        flink: dict = {
            "supported": True,
            "output": f"{jid}.csv",
            "matches": sum(m["kind"] == "match" for m in matches),
            "timed_out": sum(m["kind"] == "timeout" for m in matches),
        }
        other = meta.get("compare_with")
        if other:
            ours = [(m["sensor_id"], m["events"]) for m in matches if m["kind"] == "match"]
            theirs = done.get(other)
            flink["same_events_as"] = {other: None if theirs is None else ours == theirs}
        entry["flink"] = flink
        entries.append(entry)
        print(
            f"{jid:34s} {flink['matches']:6d} matches {flink['timed_out']:6d} timed out"
            + (f"  same as {other}: {flink['same_events_as'][other]}" if other else "")
        )
    return entries


# --- running -------------------------------------------------------------------------


def ddl(name: str) -> str:
    path = (DATA / f"{name}.csv").as_posix()
    return f"""CREATE TABLE r_{name} (
  seq BIGINT, sensor_id INT, ts TIMESTAMP(9), ts_ns BIGINT, `value` DOUBLE, quality INT,
  rt AS CAST(ts AS TIMESTAMP(3)),
  WATERMARK FOR rt AS rt - {WATERMARK_DELAY}
) WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'csv',
        'csv.allow-comments' = 'true')"""


def build_sql(p: Spec) -> str:
    measures = []
    for v in p.variables():
        measures += [
            f"FIRST({v}.ts_ns) AS {v}_first_ts_ns",
            f"LAST({v}.ts_ns) AS {v}_last_ts_ns",
            f"COUNT({v}.seq) AS {v}_n",
            f"LISTAGG(CAST({v}.seq AS STRING), ';') AS {v}_seqs",
        ]
    measures += [f"{expr} AS {alias}" for alias, expr in p.measures.items()]
    define = ",\n    ".join(f"{v} AS {q(c)}" for v, c in p.define.items())
    within = f" WITHIN {p.within}" if p.within else ""
    return (
        f"SELECT * FROM r_{p.data} MATCH_RECOGNIZE (\n"
        f"  PARTITION BY sensor_id\n  ORDER BY {ORDER_BY}\n"
        f"  MEASURES\n    " + ",\n    ".join(measures) + "\n"
        f"  {p.rows_per_match}\n  AFTER MATCH SKIP {p.skip}\n"
        f"  PATTERN ({p.pattern}){within}\n"
        f"  DEFINE\n    {define}\n)"
    )


def java_error(error: BaseException) -> str:
    """Flink's message: the first exception line and the root cause."""
    lines = [
        ln.strip().removeprefix(": ").removeprefix("Caused by: ")
        for ln in str(error).splitlines()
        if re.match(r"^(: |Caused by: )?[\w.$]+(Exception|Error)\b", ln.strip())
    ]
    if not lines:
        return str(error).splitlines()[0][:500]
    first, root = lines[0], lines[-1]
    return first[:400] if first == root else f"{first[:300]} ... root cause: {root[:400]}"


def is_java(error: BaseException) -> bool:
    """An error raised by Flink (py4j's, or PyFlink's translation of it)."""
    from py4j.protocol import Py4JJavaError
    from pyflink.util.exceptions import JavaException

    return isinstance(error, Py4JJavaError | JavaException)


def load_data(name: str) -> dict[int, dict]:
    rows = {}
    with (DATA / f"{name}.csv").open() as f:
        for rec in csv.reader(ln for ln in f if not ln.startswith("#")):
            seq, sensor, _ts, ts_ns, value, quality = rec
            rows[int(seq)] = {
                "sensor_id": int(sensor),
                "ts_ns": int(ts_ns),
                "value": float(value),
                "quality": int(quality),
            }
    order: dict[int, list[int]] = {}
    for seq in sorted(rows, key=lambda s: (rows[s]["ts_ns"], s)):
        order.setdefault(rows[seq]["sensor_id"], []).append(seq)
    for seqs in order.values():
        for pos, seq in enumerate(seqs):
            rows[seq]["pos"] = pos
    return rows


def to_matches(p: Spec, raw: list[dict], data: dict[int, dict]) -> list[dict]:
    """One dict per match: its rows in event order, checked to be consecutive."""
    out = []
    variables = p.variables()
    for r in raw:
        rows = []  # (pos, seq, var)
        for v in variables:
            seqs = r.get(f"{v}_seqs")
            for s in seqs.split(";") if seqs else []:
                seq = int(s)
                assert data[seq]["sensor_id"] == r["sensor_id"], (p.id, r)
                rows.append((data[seq]["pos"], seq, v))
            assert len([x for x in rows if x[2] == v]) == (r.get(f"{v}_n") or 0), (p.id, v, r)
        rows.sort()
        if not rows:
            raise AssertionError(f"{p.id}: a match without rows: {r}")
        positions = [x[0] for x in rows]
        if positions != list(range(positions[0], positions[0] + len(positions))):
            raise AssertionError(f"{p.id}: match rows are not consecutive: {rows}")
        events = [x for x in rows if x[2] not in p.filler]
        first, last = rows[0], rows[-1]
        m = {
            "sensor_id": r["sensor_id"],
            "start_pos": first[0],
            "end_pos": last[0],
            "start_seq": first[1],
            "end_seq": last[1],
            "start_ts_ns": data[first[1]]["ts_ns"],
            "end_ts_ns": data[last[1]]["ts_ns"],
            "n_rows": len(rows),
            "n_events": len(events),
            "events": " ".join(f"{s}:{v}" for _, s, v in events),
            "rows": " ".join(f"{s}:{v}" for _, s, v in rows),
        }
        for v in variables:  # FIRST/LAST(V.ts_ns) agree with the rebuilt rows
            mine = [data[s]["ts_ns"] for _, s, w in rows if w == v]
            want = (mine[0], mine[-1]) if mine else (None, None)
            got = (r.get(f"{v}_first_ts_ns"), r.get(f"{v}_last_ts_ns"))
            assert got == want, (p.id, v, got, want, r)
            m[f"{v}_n"] = r.get(f"{v}_n") or 0
        for alias in p.measures:
            m[alias] = r.get(alias)
        out.append(m)
    out.sort(key=lambda m: (m["sensor_id"], m["start_pos"], m["end_pos"]))
    number: dict[int, int] = {}
    for m in out:
        number[m["sensor_id"]] = number.get(m["sensor_id"], 0) + 1
        m["match_no"] = number[m["sensor_id"]]
    return out


def csv_columns(p: Spec) -> list[str]:
    cols = [
        "sensor_id",
        "match_no",
        "start_seq",
        "start_ts_ns",
        "end_seq",
        "end_ts_ns",
        "start_pos",
        "end_pos",
        "n_rows",
        "n_events",
        "events",
    ]
    if p.filler:  # otherwise rows == events
        cols.append("rows")
    return cols + [f"{v}_n" for v in p.variables()] + list(p.measures)


def write_csv(p: Spec, matches: list[dict]) -> None:
    with (OUT / f"{p.id}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, csv_columns(p), lineterminator="\n")
        w.writeheader()
        for m in matches:
            w.writerow({k: ("" if m[k] is None else m[k]) for k in csv_columns(p)})


def make_env(mode: str):  # type: ignore[no-untyped-def]
    from pyflink.table import EnvironmentSettings, TableEnvironment

    settings = (
        EnvironmentSettings.in_streaming_mode()
        if mode == "streaming"
        else EnvironmentSettings.in_batch_mode()
    )
    env = TableEnvironment.create(settings)
    conf = env.get_config()
    conf.set("parallelism.default", "1")
    conf.set("table.local-time-zone", "UTC")
    conf.set("table.exec.resource.default-parallelism", "1")
    for name in DATASETS:
        env.execute_sql(ddl(name))
    return env


def run_one(env, p: Spec, sql: str) -> list[dict]:  # type: ignore[no-untyped-def]
    result = env.execute_sql(sql)
    names = result.get_table_schema().get_field_names()
    with result.collect() as rows:
        return [dict(zip(names, tuple(r), strict=True)) for r in rows]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--mode",
        choices=["streaming", "batch"],
        default="streaming",
        help="the mode whose results are stored (default streaming)",
    )
    ap.add_argument(
        "--compare-batch",
        action="store_true",
        help="also run every pattern in batch mode and record whether it agrees",
    )
    ap.add_argument("--only", default="", help="comma-separated pattern ids (no patterns.json)")
    ap.add_argument(
        "--no-java",
        action="store_true",
        help="skip the FlinkCEP Java-API patterns (java/FlinkCepReference.java)",
    )
    args = ap.parse_args()
    only = {s for s in args.only.split(",") if s}
    unknown = only - {p.id for p in PATTERNS} - set(JAVA_PATTERNS)
    if unknown:
        ap.error(f"unknown pattern ids: {sorted(unknown)}")
    missing = [n for n in DATASETS if not (DATA / f"{n}.csv").exists()]
    if missing:
        print(f"run_flink: no data for {missing}: run gen_data.py first", file=sys.stderr)
        return 2

    import tempfile

    import pyflink.version

    t0 = time.monotonic()
    java_only = {i for i in only if i in JAVA_PATTERNS}
    run_java_part = not args.no_java and (not only or bool(java_only))
    raw_dir = tempfile.TemporaryDirectory(prefix="flink-cep-")
    raw = Path(raw_dir.name)
    if run_java_part:  # first, so that only one JVM runs at a time
        run_java(java_only, raw)
    env = make_env(args.mode)
    other = make_env("batch") if args.compare_batch and args.mode == "streaming" else None
    from pyflink.java_gateway import get_gateway

    gw = get_gateway().jvm
    flink_version = gw.org.apache.flink.runtime.util.EnvironmentInformation.getVersion()
    java_version = gw.java.lang.System.getProperty("java.version")
    data = {n: load_data(n) for n in DATASETS}

    entries = []
    failures = []
    done: dict[str, list] = {}
    for p in PATTERNS:
        if only and p.id not in only:
            continue
        sql = build_sql(p)
        entry: dict = {
            "id": p.id,
            "data": p.data,
            "covers": p.covers,
            "telepipe": p.telepipe,
            "pattern": p.pattern,
            "define": {v: q(c) for v, c in p.define.items()},
            "undefined_variables": [v for v in p.variables() if v not in p.define],
            "skip": f"AFTER MATCH SKIP {p.skip}",
            "within": p.within,
            "within_ms": None,
            "filler_variables": list(p.filler),
            "rows_per_match": p.rows_per_match,
            "sql": sql,
        }
        if p.within:
            n, unit = re.match(r"INTERVAL '([\d.]+)' (\w+)", p.within).groups()  # type: ignore[union-attr]
            entry["within_ms"] = round(float(n) * {"SECOND": 1000, "MINUTE": 60000}[unit])
        t = time.monotonic()
        try:
            found = run_one(env, p, sql)
            matches = to_matches(p, found, data[p.data])
        except Exception as error:  # a Flink error is a finding
            if not is_java(error):
                raise
            entry["flink"] = {"supported": False, "error": java_error(error)}
            print(f"{p.id:28s} unsupported: {entry['flink']['error'][:160]}", flush=True)
            if not p.probe:
                failures.append(p.id)
            (OUT / f"{p.id}.csv").unlink(missing_ok=True)
            entries.append(entry | {"notes": p.notes})
            continue
        write_csv(p, matches)
        flink = {
            "supported": True,
            "output": f"{p.id}.csv",
            "matches": len(matches),
            "sensors_with_matches": len({m["sensor_id"] for m in matches}),
        }
        if p.expect is not None:
            got = [f"{m['sensor_id']}|{m['events']}" for m in matches]
            flink["expected"] = p.expect
            flink["as_expected"] = got == p.expect
            if got != p.expect:
                failures.append(p.id)
                print(f"{p.id}: expected {p.expect}, Flink gave {got}", file=sys.stderr)
        if p.compare_with:
            ours = [(m["sensor_id"], m["events"]) for m in matches]
            theirs = done.get(p.compare_with)
            flink["same_events_as"] = {p.compare_with: None if theirs is None else ours == theirs}
        done[p.id] = [(m["sensor_id"], m["events"]) for m in matches]
        if other is not None:
            try:
                again = to_matches(p, run_one(other, p, sql), data[p.data])
                flink["batch_mode_equal"] = again == matches
            except Exception as error:
                if not is_java(error):
                    raise
                flink["batch_mode_equal"] = None
                flink["batch_mode_error"] = java_error(error)
        entry["flink"] = flink
        entries.append(entry | {"notes": p.notes})
        extra = "" if other is None else f" batch_equal={flink.get('batch_mode_equal')}"
        print(
            f"{p.id:28s} {len(matches):6d} matches  {time.monotonic() - t:5.1f}s{extra}", flush=True
        )

    java_entries_ = java_entries(raw, java_only, data, done) if run_java_part else []
    if not run_java_part and (OUT / "patterns.json").exists():  # --no-java keeps the last run's
        java_entries_ = json.loads((OUT / "patterns.json").read_text()).get(
            "datastream_cep_patterns", []
        )
    raw_dir.cleanup()
    failures += [
        e["id"]
        for e in java_entries_
        if not e["flink"]["supported"] and e["id"] != "cep_not_followed_by_end_no_within"
    ]
    if not only:
        doc = {
            "about": "Apache Flink MATCH_RECOGNIZE reference for telepipe's CepPattern "
            "(issue 22, Step 13). Written by benchmarks/peers/flink/run_flink.py; do not edit.",
            "flink_version": flink_version,
            "pyflink_version": pyflink.version.__version__,
            "java_version": java_version,
            "mode": args.mode,
            "parallelism": 1,
            "order_by": ORDER_BY,
            "time": "rt = CAST(ts AS TIMESTAMP(3)): the nanosecond ts truncated to the "
            "millisecond (floor); the event-time attribute, used by WITHIN and the "
            "watermark. ts_ns is the exact nanosecond timestamp (BIGINT); seq is the "
            "row's arrival index (its row number in the data file, and in the Parquet).",
            "watermark": f"rt - {WATERMARK_DELAY} (data out of order by at most 30 ms)",
            "csv_columns": {
                "sensor_id, match_no": "the key; Flink has no MATCH_NUMBER(), so matches are "
                "numbered per sensor from 1 in the file's order",
                "start_seq, end_seq, start_ts_ns, end_ts_ns": "first and last row of the "
                "whole match (filler rows included; they are never first or last here)",
                "start_pos, end_pos": "positions in the sensor's (ts_ns, seq) order, from 0",
                "n_rows, rows": "every row of the match as seq:VARIABLE in event order (the "
                "rows column only where the pattern has filler variables; else rows == events)",
                "n_events, events": "the rows telepipe's match holds: as rows without the "
                "filler variables (readings a relaxed step skipped)",
                "V_n": "per variable V: COUNT(V.seq). FIRST/LAST(V.ts_ns) are measured too "
                "and checked against the rebuilt rows, not stored (they follow from events)",
            },
            "data": {
                n: {
                    "csv": f"inputs/{n}.csv",
                    "parquet": f"inputs/{n}.parquet",
                    "rows": len(data[n]),
                    "sha256_csv": sha256(DATA / f"{n}.csv"),
                }
                for n in DATASETS
            },
            "not_expressible_in_match_recognize": NOT_IN_SQL,
            "datastream_cep": "PyFlink (apache-flink "
            f"{pyflink.version.__version__}) has no CEP module in pyflink.datastream (and no "
            "Python Pattern API): the FlinkCEP Pattern API is Java/Scala only. flink-cep's jar "
            "ships in the wheel, but its conditions are Java classes that py4j cannot "
            "implement from Python. MATCH_RECOGNIZE (patterns) is the main reference; the "
            "features it cannot express are run through the Java API by "
            "java/FlinkCepReference.java, compiled against the wheel's jars "
            "(datastream_cep_patterns; event time floor(ts_ns / 1e6) ms, watermark 100 ms, "
            "equal milliseconds ordered by (ts_ns, seq) with an EventComparator). Their CSVs "
            "have a kind column: match, or timeout for a timed-out partial match (side "
            "output). Skip strategy is stated in each pattern (FlinkCEP's own default is noSkip).",
            "patterns": entries,
            "datastream_cep_patterns": java_entries_,
        }
        (OUT / "patterns.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(
        f"run_flink: {len(entries)} SQL and {len(java_entries_)} Java-API patterns in "
        f"{time.monotonic() - t0:.0f}s, Flink "
        f"{flink_version}, Java {java_version}; failures: {failures or 'none'}",
        flush=True,
    )
    return 1 if failures else 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # PyFlink's gRPC server otherwise prints a traceback at shutdown
