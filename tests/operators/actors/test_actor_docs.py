"""docs/operators/actors.md runs: its Python examples in order in one module, its YAML
builds the stage it shows."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

from omegaconf import OmegaConf

from telepipe.config import build
from telepipe.operators import ActorStage

DOC = Path(__file__).resolve().parents[3] / "docs" / "operators" / "actors.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_python_examples_run() -> None:
    module = types.ModuleType("actors_doc_examples")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    try:
        blocks = _blocks("python")
        assert len(blocks) == 3
        for code in blocks:
            exec(compile(code, str(DOC), "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]


def test_the_yaml_example_builds() -> None:
    (text,) = _blocks("yaml")
    node = OmegaConf.create(text).outputs.machine_states.machines
    op = build(node, "pipeline.outputs.machine_states.machines")
    assert isinstance(op, ActorStage) and op.key == "equipment_id"
