"""In-process A/B of the operators' numba kernels: an older tree's against this checkout's.

Two processes on these machines differ by up to ~40% on the same code (seen on
one kernel across runs minutes apart), which buries a 10-20% change. Here one
process holds both sets of kernels and alternates them on the same data: the
older tree's ``operators/_*kernels.py`` are loaded beside this checkout's (as
modules of their own, compiled without numba's cache, whose files name the module
they came from), and every operator module's reference to a kernel of the same
name is pointed at one set or the other before each timed pass. Only the kernels
differ between A and B: the operators' Python is this checkout's, so the older
kernels must take the same arguments (a kernel whose signature changed fails).

    git archive REV | tar -x -C /tmp/telepipe-prev
    .venv/bin/python benchmarks/kernels_ab.py --tree /tmp/telepipe-prev --data ordered

Prints, per operator, the medians of both and the median of the per-pass ratios
(new / old) with the rows out of each (they must be equal), then one JSON line.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
import sys
import tempfile
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, rate
from demo_throughput import to_batches, with_watermarks
from operators_ab import ab_parser, emit_ab, load_data, make_ops

from operators import run_both, run_op


def _old_kernels(tree: Path, scratch: Path) -> dict[str, ModuleType]:
    """The tree's kernel modules, loaded under names of their own, compiled uncached."""
    import telepipe.operators

    modules = {}
    for info in pkgutil.iter_modules(telepipe.operators.__path__):
        name = info.name
        source = tree / "operators" / f"{name}.py"
        if not name.endswith("kernels") or not source.exists():
            continue
        text = source.read_text().replace("cache=True", "cache=False")
        text = text.replace(
            "from __future__ import annotations\n",
            "from __future__ import annotations\nimport numba as _ab_numba\n",
            1,
        )
        text = re.sub(r"^@_jit$", "@_ab_numba.njit(nogil=True)", text, flags=re.M)
        path = scratch / f"ab_old{name}.py"
        path.write_text(text)
        spec = importlib.util.spec_from_file_location(f"ab_old{name}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        modules[name] = module
    return modules


def _swaps(old: dict[str, ModuleType]) -> list[tuple[ModuleType, str, object, object]]:
    """``(operator module, name, old kernel, new kernel)`` for every kernel reference."""
    import telepipe.operators

    new = {name: importlib.import_module(f"telepipe.operators.{name}") for name in old}
    found = []
    for info in pkgutil.iter_modules(telepipe.operators.__path__):
        if info.name.endswith("kernels"):
            continue  # kernels calling kernels took theirs when they were compiled
        module = importlib.import_module(f"telepipe.operators.{info.name}")
        for attr, value in list(vars(module).items()):
            if not (attr.startswith("_") and attr.endswith("kernel")):
                continue
            for name, kernels in new.items():
                if getattr(kernels, attr, None) is value and hasattr(old[name], attr):
                    found.append((module, attr, getattr(old[name], attr), value))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = ab_parser(__doc__.splitlines()[0], True, "ordered", 5)
    args = parser.parse_args(argv)
    if not (args.tree / "operators").is_dir():
        parser.error(f"--tree {args.tree}: no operators/ in it (extract a checkout there)")

    with tempfile.TemporaryDirectory() as scratch:
        swaps = _swaps(_old_kernels(args.tree.resolve(), Path(scratch)))

        def use(which: int) -> None:  # 0: the tree's kernels, 1: this checkout's
            for module, attr, *kernels in swaps:
                setattr(module, attr, kernels[which])

        df = load_data(args.data, args.readings)
        items = with_watermarks(to_batches(df, args.batch_rows))
        ops = make_ops()
        for which in (0, 1):  # compile both sets outside the timings
            use(which)
            for op in ops.values():
                run_op(items[:40], op)
            run_both(items[:40])
        results: list[dict[str, float]] = []
        for _ in range(args.repeats):
            r: dict[str, float] = {}
            for name, op in ops.items():
                for which, side in enumerate(("old", "new")):
                    use(which)
                    seconds, out = run_op(items, op)
                    r[f"{name}_{side}"] = rate(df.height, seconds)
                    r[f"{name}_{side}_rows_out"] = sum(b.num_rows for b in out)
                r[f"{name}_ratio"] = r[f"{name}_new"] / r[f"{name}_old"]
            for which, side in enumerate(("old", "new")):
                use(which)
                seconds, _ = run_both(items)
                r[f"both_{side}"] = rate(df.height, seconds)
            r["both_ratio"] = r["both_new"] / r["both_old"]
            results.append(r)
        use(1)

    print(
        f"{len(swaps)} kernel references swapped; {args.data} data, {df.height:,} readings, "
        f"{args.batch_rows}-row batches, {args.repeats} alternating passes"
    )
    print(f"  {'operator':<16} {'old M/s':>8} {'new M/s':>8} {'new/old':>8}  rows out old/new")
    for name in (*ops, "both"):
        rows = ""
        if name != "both":
            rows = f"  {results[0][name + '_old_rows_out']:,.0f}/{results[0][name + '_new_rows_out']:,.0f}"
        print(
            f"  {name:<16} {median([r[name + '_old'] for r in results]) / 1e6:8.1f} "
            f"{median([r[name + '_new'] for r in results]) / 1e6:8.1f} "
            f"{median([r[name + '_ratio'] for r in results]):8.3f}{rows}"
        )
    return emit_ab("kernels_ab", str(args.tree), args, df.height, results)


if __name__ == "__main__":
    sys.exit(main())
