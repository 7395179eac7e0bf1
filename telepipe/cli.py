"""The ``telepipe`` command line.

    telepipe run pipeline=demo limit.readings=1000000 data_dir=data/demo
    telepipe simulate simulator.sensors=100 source=aeron_udp
    telepipe validate pipeline=demo

Arguments after the command are Hydra overrides (``key=value``, ``group=option``).
Errors a user can cause print one line and exit 2; there is no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from telepipe.errors import ConfigError, TelepipeError

EXIT_FAILURE = 1
EXIT_USAGE = 2


def _run(overrides: list[str]) -> int:
    from telepipe.config import load
    from telepipe.pipelines.runner import run

    return run(load(overrides), overrides)


def _simulate(overrides: list[str]) -> int:
    from telepipe.config import load
    from telepipe.pipelines.simulate import simulate

    return simulate(load(overrides))


def _validate(overrides: list[str]) -> int:
    from telepipe.config import build, load
    from telepipe.pipelines.graph import outputs_from_config

    cfg = load(overrides)
    for key in ("aeron", "source", "sink", "schema"):
        build(cfg[key], key)
    if cfg.simulator.enabled:
        build(cfg.simulator.options, "simulator.options")
    outputs = outputs_from_config(cfg.pipeline)
    print(
        f"telepipe: config ok: pipeline {cfg.pipeline.name} -> tables "
        + ", ".join(o.table for o in outputs)
    )
    return 0


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "run": (_run, "run a pipeline on live Aeron (with the simulator unless simulator=none)"),
    "simulate": (_simulate, "publish simulated telemetry on the source's Aeron stream"),
    "validate": (_validate, "check a config and its overrides without running anything"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="telepipe", description="Reactive dataflow pipelines over Aeron sensor telemetry."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Hydra overrides")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        print(
            f"telepipe: error: {bad[0]!r} is not an override: use KEY=VALUE (for example limit.readings=1000)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    handler, _ = COMMANDS[args.command]
    try:
        return handler(args.overrides)
    except ConfigError as error:
        print(f"telepipe: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except TelepipeError as error:
        print(f"telepipe: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
