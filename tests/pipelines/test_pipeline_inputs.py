"""``pipeline.inputs`` mistakes are one-line ``ConfigError``s naming the key: an unknown
output on either side, an output reading itself or the raw readings, a cycle, and an
input listed after the output that reads it."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from telepipe.errors import ConfigError
from telepipe.pipelines.graph import outputs_from_config

ALARM = {"_target_": "telepipe.operators.HysteresisAlarm", "enter": 80.0, "exit": 70.0}
WINDOW = {"_target_": "telepipe.operators.TumblingWindow", "size_ms": 1000}


def _pipeline(inputs: object, order: tuple[str, ...] = ("readings", "a", "b", "c")) -> object:
    chains = {"readings": {}, "a": {"x": ALARM}, "b": {"y": ALARM}, "c": {"w": WINDOW}}
    return OmegaConf.create({"outputs": {t: chains[t] for t in order}, "inputs": inputs})


@pytest.mark.parametrize(
    ("inputs", "order", "says"),
    [
        ({"nope": ["a"]}, None, "pipeline.inputs.nope: no such output"),
        ({"b": ["nope"]}, None, "pipeline.inputs.b: 'nope' is no output"),
        ({"b": ["b"]}, None, "pipeline.inputs.b: an output cannot read its own rows"),
        ({"b": ["readings"]}, None, "pipeline.inputs.b: 'readings' is the readings"),
        ({"a": ["b"], "b": ["a"]}, None, "pipeline.inputs.a: a cycle (a -> b -> a)"),
        ({"a": ["c"], "b": ["a"], "c": ["b"]}, None, "a cycle (a -> c -> b -> a)"),
        ({"a": ["b"]}, None, "pipeline.inputs.a: 'b' comes after a in pipeline.outputs"),
        ({"b": "a"}, ("readings", "b", "a", "c"), "pipeline.inputs.b: 'a' comes after b"),
        ({"b": 3}, None, "pipeline.inputs.b: expected a list of earlier outputs"),
    ],
)
def test_a_mistake_is_one_line_naming_the_key(inputs: object, order: object, says: str) -> None:
    pipeline = _pipeline(inputs, *(() if order is None else (order,)))  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as error:
        outputs_from_config(pipeline)  # type: ignore[arg-type]
    message = str(error.value)
    assert "\n" not in message and says in message, message


def test_earlier_inputs_are_taken() -> None:
    outputs = outputs_from_config(_pipeline({"b": ["a"], "c": ["a", "b", "a"]}))  # type: ignore[arg-type]
    assert {o.table: o.inputs for o in outputs} == {
        "readings": (), "a": (), "b": ("a",), "c": ("a", "b"),
    }  # fmt: skip
