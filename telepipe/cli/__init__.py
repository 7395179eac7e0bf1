"""The ``telepipe`` command line.

    telepipe run pipeline=demo limit.readings=1000000 data_dir=data/demo
    telepipe replay pipeline=demo input=captures/night data_dir=data/night
    telepipe capture channel=aeron:ipc stream=1001 out=captures/night aeron.dir=/dev/shm/aeron
    telepipe inspect captures/night
    telepipe simulate simulator.options.sensors=100 source=aeron_udp
    telepipe driver --dir /dev/shm/aeron
    telepipe validate pipeline=demo
    telepipe config pipeline=press_line      (the composed config; --config-dir DIR adds yours)
    telepipe bench pipeline=press_line bench.readings=4000000
    telepipe dlq list --data-dir data/demo   (inspect, replay, purge, verify, resume)
    telepipe stop --data-dir data/demo [--drain]

Arguments after most commands are Hydra overrides (``key=value``,
``group=option``). Errors a user can cause print one line and exit 2; a run
that fails prints one line and exits 1; there is never a traceback.

This package is the command line only: it parses, dispatches to the command's
own module in ``telepipe.pipelines`` (the runner for run and replay, capture,
inspect, ...) and turns errors into exit codes. ``telepipe.cli.dlq`` is the
``dlq`` subcommand.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from telepipe import signals
from telepipe.errors import ConfigError, SourceError, TelepipeError

if TYPE_CHECKING:
    from omegaconf import DictConfig

EXIT_FAILURE = 1
EXIT_USAGE = 2


def _run(args: argparse.Namespace) -> int:
    signals.defer()
    from telepipe.config import load
    from telepipe.pipelines.runner import run

    cfg = load(args.overrides)
    _check_live(cfg)
    return run(cfg, args.overrides)


def _replay(args: argparse.Namespace) -> int:
    signals.defer()
    from telepipe.config import load
    from telepipe.pipelines.runner import run

    cfg = load(args.overrides)
    return run(cfg, args.overrides, input_path=_replay_input(cfg))


def _check_live(cfg: DictConfig) -> None:
    """What only `telepipe run` refuses (a live stream it could not read)."""
    if cfg.get("input"):
        raise ConfigError("input= is for `telepipe replay`; `telepipe run` reads live Aeron")
    channel = str(cfg.source.get("channel", ""))
    if not cfg.simulator.enabled and cfg.aeron.dir is None and channel.startswith("aeron:ipc"):
        raise ConfigError(
            "simulator=none on aeron:ipc with the embedded driver: nothing else can publish "
            "to it; give aeron.dir= of a running driver (telepipe driver), or a UDP source"
        )


def _replay_input(cfg: DictConfig) -> str:
    """The recorded input of `telepipe replay`, checked to be one."""
    from telepipe.sources.replay import input_kind

    path = cfg.get("input")
    if not path:
        raise ConfigError(
            "replay needs input=PATH (a capture dir, a pcap/pcapng file or an Aeron Archive dir)"
        )
    try:
        input_kind(path)
    except SourceError as error:
        raise ConfigError(f"input={path}: {error}") from None
    return str(path)


def _simulate(args: argparse.Namespace) -> int:
    from telepipe.config import load
    from telepipe.pipelines.simulate import simulate

    return simulate(load(args.overrides))


def _capture(args: argparse.Namespace) -> int:
    from telepipe.config import load
    from telepipe.pipelines.capture import capture

    return capture(load(args.overrides, config_name="capture"))


def _inspect(args: argparse.Namespace) -> int:
    from telepipe.pipelines.inspect import inspect
    from telepipe.sources.replay import input_kind

    try:
        input_kind(args.path)
    except SourceError as error:  # a bad path is a usage error, as for replay input=
        raise ConfigError(str(error)) from None
    return inspect(args.path, as_json=args.json)


def _driver(args: argparse.Namespace) -> int:
    from telepipe.pipelines.driver import driver

    return driver(args.dir, shared=args.shared)


def _validate(args: argparse.Namespace) -> int:
    """Every check `run` (or `replay`, with input=) makes before it starts, nothing run."""
    from telepipe.config import load
    from telepipe.pipelines.assembly import configure

    cfg = load(args.overrides)
    input_path = _replay_input(cfg) if cfg.get("input") else None
    if input_path is None:
        _check_live(cfg)
    plan = configure(cfg, args.overrides, input_path)
    if plan.needs_aeron and plan.aeron.dir is not None:
        import pyaeron

        timeout_ms = int(plan.aeron.driver_timeout_s * 1000)
        if not pyaeron.is_driver_active(plan.aeron.dir, timeout_ms):
            raise ConfigError(f"aeron.dir={plan.aeron.dir}: no Aeron media driver is running there")
    tables = [o.table for o in plan.outputs]
    print(f"telepipe: config ok: pipeline {cfg.pipeline.name} -> tables " + ", ".join(tables))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from telepipe.config import load
    from telepipe.pipelines.bench import bench

    bench(load(args.overrides))
    return 0


def _config(args: argparse.Namespace) -> int:
    from telepipe.cli import config_cmd

    return config_cmd.main(args)


Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[Handler, str, str]] = {
    "run": (
        _run,
        "overrides",
        "run a pipeline on live Aeron (with the simulator unless simulator=none)",
    ),
    "replay": (_replay, "overrides", "run a pipeline over a recorded input: input=PATH"),
    "capture": (
        _capture,
        "overrides",
        "record a live Aeron stream: channel=... stream=... out=DIR",
    ),
    "inspect": (_inspect, "path", "show what a capture, pcap/pcapng file or Aeron Archive holds"),
    "simulate": (
        _simulate,
        "overrides",
        "publish simulated telemetry on the source's Aeron stream",
    ),
    "driver": (_driver, "driver", "run a standalone Aeron media driver until Ctrl-C"),
    "validate": (
        _validate,
        "overrides",
        "check a config and its overrides without running anything",
    ),
    "bench": (
        _bench,
        "overrides",
        "time the pipeline's operators in process on simulated readings (no Aeron, no sink)",
    ),
    "config": (_config, "overrides", "print the composed config (pipeline=X and overrides)"),
}


def _parser(help_wanted: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="telepipe", description="Reactive dataflow pipelines over Aeron sensor telemetry."
    )
    from telepipe import __version__

    parser.add_argument("--version", action="version", version=f"telepipe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, kind, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if kind == "overrides":
            if help_wanted:  # the groups and keys, read only when asked for
                from telepipe.cli.config_cmd import help_epilog

                p.epilog = help_epilog("capture" if name == "capture" else "config")
                p.formatter_class = argparse.RawDescriptionHelpFormatter
            p.add_argument(
                "overrides",
                nargs="*",
                metavar="KEY=VALUE",
                help="Hydra overrides: KEY=VALUE, GROUP=OPTION (listed below)",
            )
            p.add_argument(
                "--config-dir",
                action="append",
                default=[],
                metavar="DIR",
                help="add DIR (DIR/pipeline/*.yaml, ...) to the config search path "
                "(as config_dir=DIR)",
            )
        elif kind == "path":
            p.add_argument("path", help="capture directory, pcap/pcapng file or Archive directory")
            p.add_argument("--json", action="store_true", help="print the report as JSON")
        else:
            p.add_argument(
                "--dir", default=None, help="Aeron directory (default: a new one in /dev/shm)"
            )
            p.add_argument(
                "--shared",
                action="store_true",
                help="let other local users connect (default: files readable by you only)",
            )
    from telepipe.cli import actors, dlq, stop

    actors.add_parser(sub)
    dlq.add_parser(sub)
    stop.add_parser(sub)
    return parser


def _die_with_parent() -> None:
    """A run's child (simulator, recorder) gets SIGTERM when the run dies, however it
    dies (a SIGKILL left them publishing and recording for seconds, holding the capture)."""
    parent = os.environ.pop("TELEPIPE_PARENT_PID", None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if str(os.getppid()) != parent:  # it died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    signals.install_early()  # first: a signal at any later moment is a clean exit
    try:
        _show_deprecations()
        return _main(argv)
    except signals.StoppedEarly as stopped:
        print(f"telepipe: stopped by {stopped.name}", file=sys.stderr)
        return 0


def entry() -> int:
    """The ``telepipe`` command (and ``python -m telepipe``): ``main``, then signals are
    ignored while Python shuts down (it restores the default actions, and a signal in
    the ~1 s of tearing down a run's threads ended a finished run with -15)."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # `telepipe dlq list | head -1`: the reader left, as it may
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python flushes stdout again at exit
        code = 128 + signal.SIGPIPE  # 141: what a shell shows for a SIGPIPE'd command
    signals.ignore_from_now()
    return code


def _show_deprecations() -> None:
    """A deprecated name a config uses is one ``telepipe: warning:`` line on stderr, once
    (Python hides DeprecationWarnings from users by default)."""
    import warnings

    from telepipe.targets import TelepipeDeprecationWarning

    def show(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
        if issubclass(category, TelepipeDeprecationWarning):
            print(f"telepipe: warning: {message}", file=sys.stderr)
        else:
            default_show(message, category, *_, **__)  # type: ignore[arg-type]

    default_show = warnings.showwarning
    warnings.simplefilter("default", TelepipeDeprecationWarning)
    warnings.showwarning = show


def _where(message: str) -> str:
    """The message, naming the user's pipeline file when it is about one of its keys."""
    config = sys.modules.get("telepipe.config")
    return message if config is None else config.where(message)


def _main(argv: list[str] | None) -> int:
    _die_with_parent()
    given = sys.argv[1:] if argv is None else argv
    args = _parser(help_wanted="-h" in given or "--help" in given).parse_args(argv)
    if getattr(args, "config_dir", None):
        args.overrides = [*(f"config_dir={d}" for d in args.config_dir), *args.overrides]
    bad = [o for o in getattr(args, "overrides", []) if "=" not in o and o[:1] != "~"]
    if bad:
        print(
            f"telepipe: error: {bad[0]!r} is not an override: use KEY=VALUE "
            "(for example limit.readings=1000)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    handler: Handler
    if args.command == "dlq":
        from telepipe.cli import dlq

        handler = dlq.main
    elif args.command == "stop":
        from telepipe.cli import stop

        handler = stop.main
    elif args.command == "actors":
        from telepipe.cli import actors

        handler = actors.main
    else:
        handler = COMMANDS[args.command][0]
    try:
        return handler(args)
    except ConfigError as error:
        print(f"telepipe: error: {_where(str(error))}", file=sys.stderr)
        return EXIT_USAGE
    except TelepipeError as error:
        print(f"telepipe: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
