"""The Hydra config: every YAML leaf lists its component's options; bad YAML is one line."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import ROOT
from hydra.utils import get_object
from omegaconf import OmegaConf

from telepipe.config import build, load
from telepipe.errors import ConfigError

CONF = ROOT / "conf"


def leaves(node: object, path: str = ""):
    if isinstance(node, dict):
        if "_target_" in node:
            yield path, node
        for key, value in node.items():
            yield from leaves(value, f"{path}.{key}" if path else str(key))


YAMLS = sorted(p for p in CONF.rglob("*.yaml"))


@pytest.mark.parametrize("path", YAMLS, ids=[str(p.relative_to(CONF)) for p in YAMLS])
def test_each_leaf_lists_every_option_of_its_target(path: Path) -> None:
    for where, leaf in leaves(yaml.safe_load(path.read_text()) or {}):
        target = get_object(leaf["_target_"])
        if not dataclasses.is_dataclass(target):
            continue
        fields = {f.name for f in dataclasses.fields(target)}
        listed = set(leaf) - {"_target_"}
        assert listed == fields, (
            f"{path.name}:{where}: missing {fields - listed}, extra {listed - fields}"
        )


@pytest.mark.parametrize("pipeline", sorted(p.stem for p in (CONF / "pipeline").glob("*.yaml")))
def test_every_pipeline_builds(pipeline: str) -> None:
    from telepipe.pipelines.graph import outputs_from_config

    cfg = load([f"pipeline={pipeline}"])
    assert [o.table for o in outputs_from_config(cfg.pipeline)]
    for key in ("aeron", "source", "sink", "schema"):
        build(cfg[key], key)


@pytest.fixture
def conf_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy = tmp_path / "conf"
    shutil.copytree(CONF, copy)
    monkeypatch.setenv("TELEPIPE_CONF", str(copy))
    return copy


def test_broken_yaml_is_one_line_naming_the_file(conf_copy: Path) -> None:
    (conf_copy / "pipeline" / "broken.yaml").write_text("name: broken\noutputs: [unclosed\n")
    with pytest.raises(ConfigError) as error:
        load(["pipeline=broken"])
    message = str(error.value)
    assert "\n" not in message
    assert "broken" in message


def test_unknown_target_is_named(conf_copy: Path) -> None:
    (conf_copy / "pipeline" / "typo.yaml").write_text(
        "name: typo\noutputs:\n  w:\n    window:\n      _target_: telepipe.operators.nope.Window\n"
    )
    from telepipe.pipelines.graph import outputs_from_config

    with pytest.raises(ConfigError, match=r"pipeline.outputs.w.window._target_: cannot import"):
        outputs_from_config(load(["pipeline=typo"]).pipeline)


def test_missing_config_dir_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TELEPIPE_CONF", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"no config\.yaml in config directory"):
        load([])


@pytest.mark.parametrize("text", ["", "just a string\n", "outputs: {}\n"])
def test_a_pipeline_file_without_a_mapping_and_name_is_named(conf_copy: Path, text: str) -> None:
    (conf_copy / "pipeline" / "bare.yaml").write_text(text)
    with pytest.raises(ConfigError) as error:
        load(["pipeline=bare"])
    assert str(error.value) == (
        f"pipeline=bare: {conf_copy.resolve() / 'pipeline' / 'bare.yaml'} must be a mapping "
        "with a name and outputs"
    )


def test_an_output_of_null_is_the_rows_as_they_come(conf_copy: Path) -> None:
    from telepipe.pipelines.graph import outputs_from_config

    (conf_copy / "pipeline" / "raw.yaml").write_text("name: raw\noutputs:\n  readings: null\n")
    (output,) = outputs_from_config(load(["pipeline=raw"]).pipeline)
    assert output.table == "readings" and not output.operators


def test_an_old_operator_path_still_builds_with_a_deprecation_warning() -> None:
    from telepipe.config import TelepipeDeprecationWarning, build
    from telepipe.operators import ThresholdAlarm, TumblingWindow

    for old, cls in [
        ("telepipe.operators.tumbling_window.TumblingWindow", TumblingWindow),
        ("telepipe.operators.threshold_alarm.ThresholdAlarm", ThresholdAlarm),
    ]:
        node = OmegaConf.create({"_target_": old})
        if cls is TumblingWindow:
            node["size_ms"] = 1000
        else:
            node["threshold"] = 1.0
        with pytest.warns(TelepipeDeprecationWarning, match="use telepipe.operators."):
            assert isinstance(build(node, "x"), cls)


def test_the_codec_s_old_path_still_builds_with_a_deprecation_warning() -> None:
    """The SBE codec moved from telepipe.sources.sbe to telepipe.sbe (sinks use it too):
    a schema YAML naming the old path still builds, with a warning."""
    from telepipe.config import TelepipeDeprecationWarning, build, conf_dir
    from telepipe.sbe import SbeCodec

    node = OmegaConf.create(
        {
            "_target_": "telepipe.sources.sbe.SbeCodec.from_xml",
            "path": str(conf_dir() / "schema" / "telemetry.xml"),
            "message": "TelemetryBatch",
        }
    )
    with pytest.warns(TelepipeDeprecationWarning, match="use telepipe.sbe.SbeCodec.from_xml"):
        assert isinstance(build(node, "schema"), SbeCodec)
