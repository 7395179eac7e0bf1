"""An ActorStage from YAML: the actor named as a telepipe component (targets policy), its
params, the mapping as a dict; bad values are one line naming the key."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from telepipe.config import build
from telepipe.errors import ConfigError
from telepipe.operators import ActorStage, EquipmentStateMachine

YAML = """
machines:
  _target_: telepipe.operators.ActorStage
  actor: telepipe.operators.EquipmentStateMachine
  params: {run_level: 20.0, fault_level: 85.0}
  key: equipment_id
  mapping: {1: 100, 2: 100, 3: 101}
  idle_ms: 60000
  strategy: one_for_all
"""


def test_an_actor_stage_builds_from_yaml_as_from_python() -> None:
    node = OmegaConf.create(YAML)
    op = build(node.machines, "pipeline.outputs.states.machines")
    same = ActorStage(
        EquipmentStateMachine(run_level=20.0, fault_level=85.0), key="equipment_id",
        mapping={1: 100, 2: 100, 3: 101}, idle_ms=60000, strategy="one_for_all",
    )  # fmt: skip
    assert op == same
    assert op.actor == "telepipe.operators.actors.builtins.EquipmentStateMachine"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("actor", "os.system", "is not a telepipe component"),
        ("params", {"run_level": 99.0}, "run_level must be <= fault_level"),
        ("params", {"speed": 1}, "unexpected keyword argument 'speed'"),
        ("mapping", {1: "x"}, "must map sensor ids to equipment_id integers"),
    ],
)
def test_bad_values_are_one_line(key, value, message) -> None:
    node = OmegaConf.create(YAML)
    node.machines[key] = value
    with pytest.raises(ConfigError, match=message) as error:
        build(node.machines, "pipeline.outputs.states.machines")
    assert "\n" not in str(error.value)
    assert str(error.value).startswith("pipeline.outputs.states.machines")
