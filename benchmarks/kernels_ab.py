"""In-process A/B of the operators' numba kernels: an older tree's against this checkout's.

Two processes on these machines differ by up to ~40% on the same code (seen on
one kernel across runs minutes apart), which buries a 10-20% change. Here one
process holds both sets of kernels and alternates them on the same data: the
older tree's kernel modules (``operators/<family>/_*kernels.py``, ``_accumulators.py``)
are loaded beside this checkout's (as modules of their own, compiled without numba's
cache, whose files name the module they came from), and every operator module's
reference to a kernel of the same name is pointed at one set or the other before each
timed pass. Only the kernels differ between A and B: the operators' Python is this
checkout's, so the older kernels must take the same arguments; an operator that fails
with the older kernels (a signature changed) is left out and named.

    git archive REV | tar -x -C /tmp/telepipe-prev
    .venv/bin/python benchmarks/kernels_ab.py --tree /tmp/telepipe-prev --data ordered

With ``--whole`` the older tree's whole ``operators/`` package is loaded instead, as a
package of its own (``ab_old_operators``: its imports of itself rewritten; the core,
``telepipe.markers`` and the rest, is this checkout's), and each operator is built
twice from the same options, once from each package: Python and kernels both differ,
so signatures may change, and the alternation still cancels the machine's drift.

Prints, per operator, the medians of both and the median of the per-pass ratios
(new / old) with the rows out of each (they must be equal), then one JSON line.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import pkgutil
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pyarrow as pa
import reactivex
from reactivex.subject import Subject

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, rate
from demo_throughput import to_batches, with_watermarks
from operators_ab import ab_parser, emit_ab, load_data, make_ops

# The clock of the timed passes: ``--clock cpu`` counts this thread's CPU time only, so
# time the scheduler gives other processes (a shared machine: a load of 5 on 2 cores
# moved an A/A of one tree against itself by up to 25%) is not counted.
_CLOCK = [time.perf_counter]


def _is_kernels(dotted: str) -> bool:
    """A module of numba kernels (``windows._tumbling_kernels``, ``windows._accumulators``)."""
    leaf = dotted.rsplit(".", 1)[-1]
    return leaf.endswith("kernels") or leaf == "_accumulators"


def _modules() -> list[str]:
    """Every module of this checkout's ``telepipe.operators``, dotted below it."""
    import telepipe.operators

    prefix = "telepipe.operators."
    return [
        info.name.removeprefix(prefix)
        for info in pkgutil.walk_packages(telepipe.operators.__path__, prefix)
        if not info.ispkg
    ]


def _old_name(dotted: str) -> str:
    return "ab_old_" + dotted.replace(".", "__")


def _old_kernels(tree: Path, scratch: Path) -> dict[str, ModuleType]:
    """The tree's kernel modules (every family's), loaded under names of their own and
    compiled uncached; their imports of each other point at each other."""
    found = {}
    for dotted in _modules():
        source = tree / "operators" / (dotted.replace(".", "/") + ".py")
        if _is_kernels(dotted) and source.exists():
            found[dotted] = source
    for dotted, source in found.items():
        text = source.read_text().replace("cache=True", "cache=False")
        for other in found:
            text = text.replace(f"telepipe.operators.{other} import", f"{_old_name(other)} import")
        text = text.replace(
            "from __future__ import annotations\n",
            "from __future__ import annotations\nimport numba as _ab_numba\n",
            1,
        )
        text = re.sub(r"^@_jit$", "@_ab_numba.njit(nogil=True)", text, flags=re.M)
        (scratch / f"{_old_name(dotted)}.py").write_text(text)
    sys.path.insert(0, str(scratch))
    return {dotted: importlib.import_module(_old_name(dotted)) for dotted in found}


def _swaps(old: dict[str, ModuleType]) -> list[tuple[ModuleType, str, object, object]]:
    """``(operator module, name, old kernel, new kernel)`` for every kernel reference of
    an operator module to a kernel the tree has under the same name."""
    new = {d: importlib.import_module(f"telepipe.operators.{d}") for d in _modules()}
    kernels = {d: m for d, m in new.items() if _is_kernels(d)}
    found = []
    for dotted, module in new.items():
        if _is_kernels(dotted):
            continue  # kernels calling kernels took theirs when they were compiled
        for attr, value in list(vars(module).items()):
            if not (attr.startswith("_") and attr.endswith("kernel")):
                continue
            for where, mod in kernels.items():
                if getattr(mod, attr, None) is not value:
                    continue
                # The same module of the tree, else any (a kernel that moved).
                homes = [old[where]] if where in old else []
                homes += [m for m in old.values() if m not in homes]
                for home in homes:
                    if hasattr(home, attr):
                        found.append((module, attr, getattr(home, attr), value))
                        break
    return found


def _old_package(tree: Path, scratch: Path) -> ModuleType:
    """The tree's ``operators/`` as the package ``ab_old_operators``, its imports of
    itself pointed at itself (files rewritten only when changed: numba's cache stays)."""
    dest = scratch / "ab_old_operators"
    for source in (tree / "operators").rglob("*.py"):
        target = dest / source.relative_to(tree / "operators")
        text = source.read_text().replace("telepipe.operators", "ab_old_operators")
        if not target.exists() or target.read_text() != text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    sys.path.insert(0, str(scratch))
    return importlib.import_module("ab_old_operators")


def _built_from(package: ModuleType, op: object) -> object:
    """``op``'s options as an instance of ``package``'s class of the same name (steps
    of dataclasses passed as mappings, as YAML gives them)."""
    values = {}
    for field in dataclasses.fields(op):  # type: ignore[arg-type]
        value = getattr(op, field.name)
        if isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            value = [dataclasses.asdict(v) for v in value]  # type: ignore[arg-type]
        values[field.name] = value
    return getattr(package, type(op).__name__)(**values)


def run_op(items: list[object], operator: object) -> tuple[float, list[pa.RecordBatch]]:
    """One operator through ``from_iterable(items).pipe(op)`` (as ``operators.run_op``,
    on ``_CLOCK``); (seconds, output batches)."""
    outputs: list[pa.RecordBatch] = []

    def on_next(item: object) -> None:
        if isinstance(item, pa.RecordBatch):
            outputs.append(item)

    flow = reactivex.from_iterable(items).pipe(operator)  # type: ignore[arg-type]
    start = _CLOCK[0]()
    flow.subscribe(on_next)
    return _CLOCK[0]() - start, outputs


def _run_pair(items: list[object], tumbling: object, alarm: object) -> float:
    """``tumbling`` and ``alarm`` fanned out from one Subject (as ``operators.run_both``)."""
    subject: Subject[object] = Subject()
    kept: list[pa.RecordBatch] = []

    def keep(item: object) -> None:
        if isinstance(item, pa.RecordBatch):
            kept.append(item)

    subject.pipe(tumbling).subscribe(keep)  # type: ignore[arg-type]
    subject.pipe(alarm).subscribe(keep)  # type: ignore[arg-type]
    start = _CLOCK[0]()
    for item in items:
        subject.on_next(item)
    subject.on_completed()
    return _CLOCK[0]() - start


def main(argv: list[str] | None = None) -> int:
    parser = ab_parser(__doc__.splitlines()[0], True, "ordered", 5)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args(argv)
    if args.clock == "cpu":
        _CLOCK[0] = time.thread_time
    if not (args.tree / "operators").is_dir():
        parser.error(f"--tree {args.tree}: no operators/ in it (extract a checkout there)")

    with tempfile.TemporaryDirectory() as scratch:
        new_ops = make_ops(args.ops)
        if args.whole:
            old = _old_package(args.tree.resolve(), Path(tempfile.gettempdir()) / "telepipe-ab")
            sides = [{n: _built_from(old, op) for n, op in new_ops.items()}, new_ops]
            pairs = [
                (_built_from(old, new_ops[name]), new_ops[name])
                for name in ("TumblingWindow", "ThresholdAlarm")
                if name in new_ops
            ]
            swaps: list[tuple[ModuleType, str, object, object]] = []
            what = "whole operators packages"
        else:
            swaps = _swaps(_old_kernels(args.tree.resolve(), Path(scratch)))
            sides = [new_ops, new_ops]
            pairs = []
            what = f"{len(swaps)} kernel references swapped"

        def use(which: int) -> None:  # 0: the tree's kernels, 1: this checkout's
            for module, attr, *kernels in swaps:
                setattr(module, attr, kernels[which])

        both: list[Callable[[list[object]], float]] = []
        if args.whole and len(pairs) == 2:
            both = [lambda it, w=w: _run_pair(it, pairs[0][w], pairs[1][w]) for w in (0, 1)]
        elif not args.whole and "TumblingWindow" in new_ops and "ThresholdAlarm" in new_ops:
            tw = new_ops["TumblingWindow"]
            ta = new_ops["ThresholdAlarm"]
            both = [lambda it: _run_pair(it, tw, ta)] * 2

        df = load_data(args.data, args.readings)
        items = with_watermarks(to_batches(df, args.batch_rows))
        left_out: dict[str, str] = {}
        for which in (1, 0):  # compile both sets outside the timings
            use(which)
            for name, op in list(sides[which].items()):
                try:
                    run_op(items[:40], op)
                except Exception as error:  # the older kernels take other arguments
                    left_out[name] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
                    for side in sides:
                        side.pop(name, None)
            if both:
                try:
                    both[which](items[:40])
                except Exception as error:  # TumblingWindow or ThresholdAlarm was left out
                    left_out["both"] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
                    both = []
        names = [*sides[1], *(["both"] if both else [])]
        results: list[dict[str, float]] = []
        for repeat in range(args.repeats):
            r: dict[str, float] = {}
            # Which side goes first alternates too: the second of a pair ran ~5% slower in
            # an A/A of one tree against itself here.
            order = ((0, "old"), (1, "new")) if repeat % 2 == 0 else ((1, "new"), (0, "old"))
            for name in sides[1]:
                for which, side in order:
                    use(which)
                    seconds, out = run_op(items, sides[which][name])
                    r[f"{name}_{side}"] = rate(df.height, seconds)
                    r[f"{name}_{side}_rows_out"] = sum(b.num_rows for b in out)
                r[f"{name}_ratio"] = r[f"{name}_new"] / r[f"{name}_old"]
            if both:
                for which, side in order:
                    use(which)
                    r[f"both_{side}"] = rate(df.height, both[which](items))
                r["both_ratio"] = r["both_new"] / r["both_old"]
            results.append(r)
        use(1)

    print(
        f"{what}; {args.data} data, {df.height:,} readings, "
        f"{args.batch_rows}-row batches, {args.repeats} alternating passes"
    )
    print(f"  {'operator':<16} {'old M/s':>8} {'new M/s':>8} {'new/old':>8}  rows out old/new")
    for name in names:
        rows = ""
        if name != "both":
            old_rows, new_rows = (results[0][f"{name}_{s}_rows_out"] for s in ("old", "new"))
            rows = f"  {old_rows:,.0f}/{new_rows:,.0f}" + (
                "" if old_rows == new_rows else " DIFFER"
            )
        print(
            f"  {name:<16} {median([r[name + '_old'] for r in results]) / 1e6:8.1f} "
            f"{median([r[name + '_new'] for r in results]) / 1e6:8.1f} "
            f"{median([r[name + '_ratio'] for r in results]):8.3f}{rows}"
        )
    for name, why in left_out.items():
        print(f"  {name:<16} left out: fails with the older kernels ({why[:100]})")
    return emit_ab("kernels_ab", str(args.tree), args, df.height, results)


if __name__ == "__main__":
    sys.exit(main())
