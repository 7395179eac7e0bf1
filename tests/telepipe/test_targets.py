"""A config's ``_target_`` names a telepipe component or a registered plugin's, and
nothing a pipeline file or an override says can run code, write or copy a file."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from telepipe.errors import ConfigError
from telepipe.targets import TelepipeDeprecationWarning, canonical_copy, check_tree, resolve


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("telepipe.operators.TumblingWindow", "telepipe.operators.windows.tumbling.TumblingWindow"),
        ("telepipe.operators.CepPattern", "telepipe.operators.patterns.pattern.CepPattern"),
        ("telepipe.operators.ThreadBoundary", "telepipe.operators.runtime.thread_boundary.ThreadBoundary"),
        ("telepipe.aeron.AeronOptions", "telepipe.aeron.AeronOptions"),
        ("telepipe.sinks.delta.DeltaSinkOptions", "telepipe.sinks.delta.DeltaSinkOptions"),
        ("telepipe.sbe.SbeCodec.from_xml", "telepipe.sbe.SbeCodec.from_xml"),
    ],
)  # fmt: skip
def test_components_resolve_to_their_canonical_name(name: str, canonical: str) -> None:
    assert resolve(name, "x") == canonical


@pytest.mark.parametrize(
    "name",
    [
        "os.system",
        "builtins.open",
        "subprocess.run",
        "telepipeX.evil",
        "telepipe.config._import",  # private
        "telepipe.config.Path.write_text",  # a class a telepipe module imported
        "telepipe.pipelines.child.shutil.copy",  # through a module a module imported
        "telepipe.operators.windows.tumbling.np.load",
        "telepipe.pipelines.runner.run",  # telepipe's, but a function that runs things
        "telepipe.sinks.delta.DeltaSink",  # telepipe's, but not an options class
        "telepipe.signals.ignore_from_now",
        "telepipe.operators.TumblingWindow.__init__",
    ],
)
def test_anything_else_is_refused_naming_the_key(name: str) -> None:
    with pytest.raises(ConfigError, match=r"^pipeline\.outputs\.w\.x\._target_: "):
        resolve(name, "pipeline.outputs.w.x")


def test_an_old_path_warns_once_and_resolves_to_the_new_one() -> None:
    with pytest.warns(TelepipeDeprecationWarning, match="use telepipe.operators.Flatline"):
        assert resolve("telepipe.operators.flatline.Flatline", "a").endswith(".Flatline")


def test_the_whole_tree_is_checked_nested_and_in_lists() -> None:
    good = OmegaConf.create({"a": {"_target_": "telepipe.aeron.AeronOptions"}, "b": [1, 2]})
    check_tree(good)
    for bad in (
        {"a": {"_target_": "telepipe.aeron.AeronOptions", "x": {"_target_": "os.system"}}},
        {"a": [{"y": {"_target_": "builtins.open"}}]},
        {"_target_": "telepipe.config.Path"},
    ):
        with pytest.raises(ConfigError, match="is not a telepipe component"):
            check_tree(OmegaConf.create(bad))


def test_a_checked_copy_names_exactly_what_was_checked() -> None:
    node = OmegaConf.create(
        {"_target_": "telepipe.operators.TumblingWindow", "inner": [{"_target_": "telepipe.aeron.AeronOptions"}]}
    )  # fmt: skip
    copy = canonical_copy(node, "n")
    assert copy._target_ == "telepipe.operators.windows.tumbling.TumblingWindow"
    assert copy.inner[0]._target_ == "telepipe.aeron.AeronOptions"
    assert node._target_ == "telepipe.operators.TumblingWindow"  # the config is untouched


# What an adversarial review ran against 0.2.0.dev0's first policy (a name prefix
# check): each wrote or copied a file, or ran a shell command through numpy.load.
EXPLOITS = [
    "+pipeline.outputs.evil.op={_target_: telepipe.config.Path.write_text, "
    "_args_: [{_target_: telepipe.config.Path, _args_: [%(out)s]}, owned]}",
    "schema.path={_target_: telepipe.pipelines.child.shutil.copy, _args_: [/etc/hostname, %(out)s]}",
    "+pipeline.outputs.b.step={_target_: telepipe.operators.windows.tumbling.np.load, "
    "_args_: [%(out)s], allow_pickle: true}",
    "pipeline.outputs.windows.window._target_=telepipe.config._import",
]


@pytest.mark.parametrize("exploit", EXPLOITS)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_no_override_writes_copies_or_runs_anything(
    telepipe_cli, tmp_path: Path, exploit: str, command: str
) -> None:
    out = tmp_path / "pwned"
    data_dir = tmp_path / "data"
    done = telepipe_cli(command, exploit % {"out": out}, f"data_dir={data_dir}", timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a telepipe component" in lines[0], done.stderr
    assert not out.exists()
    assert not data_dir.exists()  # refused before the data dir or its lock is made


def test_the_cli_shows_a_deprecated_path_once_in_one_line(telepipe_cli) -> None:
    old = "telepipe.operators.tumbling_window.TumblingWindow"
    done = telepipe_cli("validate", f"pipeline.outputs.windows.window._target_={old}", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"telepipe: warning: pipeline.outputs.windows.window._target_: {old} is deprecated, "
        "use telepipe.operators.TumblingWindow (the old path goes in 0.3)"
    ]
