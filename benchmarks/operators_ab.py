"""A/B of the CEP operators of this checkout against those of an older one, same data.

Extract the older tree first (never committed, never installed):

    git archive 48cacfd | tar -x -C /tmp/telepipe-48cacfd

then run one process per tree, alternating, and compare the medians:

    .venv/bin/python benchmarks/operators_ab.py --data simulator --batch-rows 65536
    .venv/bin/python benchmarks/operators_ab.py --tree /tmp/telepipe-48cacfd --data simulator ...

``--tree`` puts the older tree's ``telepipe/`` (whose ``operators`` link is its
``operators/`` package, every family sub-package with it) and ``benchmarks/`` in front
of this checkout's, so its operator modules (and what they import from
``telepipe.*``) are the ones timed. Data: ``ordered`` is ``operators.make_data``
(each sensor's rows in ts order, ts jittered across sensors); ``simulator`` is
what the demo publishes (``TelemetryGenerator`` with default options: every
reading jittered by up to 5 ms at 1 kHz, so each sensor's rows arrive out of
order), less the rows more than 50 ms behind the running maximum (the source
sets those aside). Batches of ``--batch-rows`` with a watermark after each, as
``benchmarks/operators.py``; each operator through ``reactivex.from_iterable(...)
.pipe(op)``, outputs kept. Last line: one JSON object (medians, row counts).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl

_REPO = Path(__file__).resolve().parent.parent


def _use_tree(tree: Path) -> None:
    """Import telepipe's core and operators (every family) from ``tree`` (an extracted
    checkout): its ``telepipe/`` goes first on the package path before
    ``telepipe.operators`` is imported, so the tree's ``operators`` package and all its
    sub-packages are the ones loaded."""
    sys.path.insert(0, str(tree / "benchmarks"))
    import telepipe

    loaded = [m for m in sys.modules if m.startswith("telepipe.operators")]
    assert not loaded, f"imported before the tree was put in front: {loaded}"
    telepipe.__path__.insert(0, str(tree / "telepipe"))
    import telepipe.operators

    where = Path(telepipe.operators.__file__ or "").resolve()
    assert where.is_relative_to(tree.resolve()), f"telepipe.operators from {where}"


def load_data(kind: str, readings: int) -> pl.DataFrame:
    """``ordered`` (``operators.make_data``) or ``simulator`` readings, as the docstring says."""
    import numpy as np
    import polars as pl

    from operators import make_data

    if kind == "ordered":
        return make_data(readings, 1000)
    from telepipe.sources.simulator import SimulatorOptions, TelemetryGenerator

    chunks = list(TelemetryGenerator(SimulatorOptions()).chunks(readings))
    ts = np.concatenate([c["ts"] for c in chunks])
    return pl.DataFrame(
        {
            "sensor_id": np.concatenate([c["sensor_id"] for c in chunks]),
            "ts_ns": ts,
            "value": np.concatenate([c["value"] for c in chunks]),
            "quality": np.zeros(len(ts), np.uint8),
        }
    ).filter(pl.Series(ts >= np.maximum.accumulate(ts) - 50_000_000))


def make_ops(only: str | None = None) -> dict[str, object]:
    """The operators timed, by name: ``benchmarks/operators.py``'s (new instances: each
    builds its own state), or those named in the comma list ``only``."""
    from operators import OPERATORS

    ops = {name: op for name, op, *_ in OPERATORS}
    if only:
        unknown = set(only.split(",")) - set(ops)
        if unknown:
            raise SystemExit(f"--ops: unknown {sorted(unknown)} (known: {', '.join(ops)})")
        ops = {name: op for name, op in ops.items() if name in only.split(",")}
    return ops


def emit_ab(
    benchmark: str, tree: str, args: argparse.Namespace, readings: int, results: list
) -> int:
    """The last line of an A/B script: its options, the machine and the medians."""
    from _common import emit, machine

    summary = {
        "benchmark": benchmark,
        "tree": tree,
        "data": args.data,
        "readings": readings,
        "batch_rows": args.batch_rows,
        "repeats": args.repeats,
        "clock": getattr(args, "clock", "wall"),
        "machine": machine(),
    }
    return emit(summary, results, None)


def ab_parser(
    description: str, tree_required: bool, data: str, repeats: int
) -> argparse.ArgumentParser:
    """The options both A/B scripts take: the older tree, the data and its size."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--tree", type=Path, required=tree_required, default=None,
        help="an extracted older checkout",
    )  # fmt: skip
    parser.add_argument("--data", choices=("ordered", "simulator"), default=data)
    parser.add_argument("--readings", type=int, default=2_000_000)
    parser.add_argument("--batch-rows", type=int, default=65_536)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--ops", default=None, help="comma list of operators (default: all)")
    parser.add_argument(
        "--whole", action="store_true",
        help="kernels_ab: the whole operators package of --tree, not only its kernels",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = ab_parser(__doc__.splitlines()[0], False, "simulator", 3)
    args = parser.parse_args(argv)
    if args.tree is not None:
        _use_tree(args.tree.resolve())
    else:
        sys.path.insert(0, str(_REPO / "benchmarks"))

    from _common import median, rate
    from demo_throughput import to_batches, with_watermarks

    from operators import run_both, run_op

    df = load_data(args.data, args.readings)
    items = with_watermarks(to_batches(df, args.batch_rows))
    ops = make_ops(args.ops)
    results: list[dict[str, float]] = []
    for op in ops.values():
        run_op(items[:40], op)  # load (or compile) its kernels
    run_both(items[:40])
    for _ in range(args.repeats):
        r: dict[str, float] = {}
        for name, op in ops.items():
            seconds, out = run_op(items, op)
            r[name] = rate(df.height, seconds)
            r[f"{name}_rows_out"] = sum(b.num_rows for b in out)
        # The windowed workload: TumblingWindow and ThresholdAlarm fanned out from one flow.
        seconds, _ = run_both(items)
        r["both"] = rate(df.height, seconds)
        results.append(r)
    tree = str(args.tree) if args.tree else "this checkout"
    print(f"{tree}: {args.data} data, {df.height:,} readings, {args.batch_rows}-row batches")
    for name in (*ops, "both"):
        print(f"  {name:<16} {median([r[name] for r in results]) / 1e6:7.1f} M/s")
    return emit_ab("operators_ab", tree, args, df.height, results)


if __name__ == "__main__":
    sys.exit(main())
