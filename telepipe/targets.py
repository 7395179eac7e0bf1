"""What a config's ``_target_`` may name, resolved here before anything is built.

A pipeline file or a command-line override must never run code of its author's
choosing. A name is therefore not handed to Hydra as it is: it is imported module
by module and attribute by attribute, never through a private name and never
through a module object that a module merely imported (``telepipe.config.os``), and
what it reaches must be a *component*:

- an options class or operator: a dataclass defined in a ``telepipe`` module
  (building one only validates values);
- a factory listed in ``FACTORIES`` (``SbeCodec.from_xml`` reads a schema file);
- an object an installed plugin registers, one entry point per object, in the group
  ``telepipe.targets`` (``MyWindow = "mypkg.ops:MyWindow"`` in its pyproject).

Hydra is then given the component's canonical name (module and qualified name), so
it imports exactly what was checked. ``check_tree`` checks every ``_target_`` of a
composed config at once, so a bad one refuses the config before any leaf is built.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import re
import types
import warnings
from typing import Any

from omegaconf import DictConfig, ListConfig

from telepipe.errors import ConfigError

PLUGIN_GROUP = "telepipe.targets"

FACTORIES = frozenset({"telepipe.sbe.SbeCodec.from_xml"})


class TelepipeDeprecationWarning(DeprecationWarning):
    """A name telepipe still takes but will stop taking in the next release."""


# Operator modules before the operators were grouped by family (0.1 -> 0.2): a
# ``_target_`` naming one still works, with a warning, until 0.3.
_MOVED_MODULES = (
    "tumbling_window|sliding_window|session_window|threshold_alarm|hysteresis_alarm|"
    "rate_of_change|flatline|heartbeat_timeout|ewma_zscore|dedup|resample|pattern|"
    "thread_boundary"
)
_MOVED = re.compile(rf"telepipe\.operators\.(?:{_MOVED_MODULES})\.(\w+)$")
# Other modules that moved in 0.2, by their old dotted path (a prefix of the target).
_MOVED_PREFIXES = {"telepipe.sources.sbe.": "telepipe.sbe."}
_warned: set[str] = set()


def moved_to(name: str) -> str | None:
    """Where a target that moved in 0.2 is now (None: it did not move)."""
    moved = _MOVED.match(name)
    if moved:
        return f"telepipe.operators.{moved.group(1)}"
    for old, new in _MOVED_PREFIXES.items():
        if name.startswith(old):
            return new + name.removeprefix(old)
    return None


def _plugins() -> dict[str, Any]:
    """Canonical name -> object, for every object plugins register (loaded lazily)."""
    found: dict[str, Any] = {}
    for entry in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        if ":" not in entry.value:
            continue  # a whole module is never a component
        try:
            obj = entry.load()
        except Exception:  # a broken plugin is not a reason to refuse telepipe's own
            continue
        found[entry.value.replace(":", ".")] = obj
        found[_canonical(obj)] = obj
    return found


def _canonical(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def resolve(name: str, path: str) -> str:
    """The canonical name of the component ``name`` names; ``ConfigError`` naming
    ``path`` if it names anything else."""
    new = moved_to(name)
    if new is not None:
        if name not in _warned:
            _warned.add(name)
            warnings.warn(
                f"{path}._target_: {name} is deprecated, use {new} (the old path goes in 0.3)",
                TelepipeDeprecationWarning,
                stacklevel=2,
            )
        name = new
    refused = ConfigError(
        f"{path}._target_: {name!r} is not a telepipe component (an operator or options "
        f"class; a plugin registers its own in the entry-point group {PLUGIN_GROUP!r})"
    )
    parts = name.split(".")
    if any(not p.isidentifier() or p.startswith("_") for p in parts):
        raise refused
    if parts[0] != "telepipe":
        plugin = _plugins().get(name)
        if plugin is None:
            raise refused
        return _canonical(plugin)
    obj = _locate(parts, path, name)
    if (
        isinstance(obj, type)
        and dataclasses.is_dataclass(obj)
        and obj.__module__.startswith("telepipe.")
    ):
        return _canonical(obj)
    if isinstance(obj, types.MethodType) and _canonical(obj) in FACTORIES:
        return _canonical(obj)
    raise refused


def _locate(parts: list[str], path: str, name: str) -> Any:
    module = None
    cut = len(parts)
    while cut > 1:
        try:
            module = importlib.import_module(".".join(parts[:cut]))
            break
        except ModuleNotFoundError as error:
            if error.name is None or not ".".join(parts[:cut]).startswith(error.name):
                raise ConfigError(f"{path}._target_: cannot import {name!r}: {error}") from None
            cut -= 1
        except Exception as error:
            raise ConfigError(f"{path}._target_: cannot import {name!r}: {error}") from None
    if module is None:
        raise ConfigError(f"{path}._target_: cannot import {name!r}")
    obj: Any = module
    for attr in parts[cut:]:
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise ConfigError(f"{path}._target_: cannot import {name!r}") from None
        if isinstance(obj, types.ModuleType) and obj.__name__ != f"{module.__name__}.{attr}":
            raise ConfigError(
                f"{path}._target_: {name!r} is not a telepipe component (it goes through "
                f"the module {obj.__name__})"
            )
        if isinstance(obj, types.ModuleType):
            module = obj
    return obj


def check_tree(node: Any, path: str = "") -> None:
    """Every ``_target_`` under ``node`` names a component (nothing is built)."""
    if isinstance(node, DictConfig):
        if node._is_none() or node._is_missing():
            return
        for key in node:
            child = node._get_node(key)
            where = f"{path}.{key!s}" if path else str(key)
            if key == "_target_":
                resolve(str(node[key]), path or "<root>")
            elif isinstance(child, DictConfig | ListConfig):
                check_tree(child, where)
    elif isinstance(node, ListConfig):
        if node._is_none() or node._is_missing():
            return
        for i in range(len(node)):
            check_tree(node._get_node(i), f"{path}[{i}]")


def canonical_copy(node: DictConfig, path: str) -> DictConfig:
    """A copy of ``node`` whose every ``_target_`` is the canonical name of the
    component it was checked to be, so Hydra imports exactly that."""
    copy = node.copy()
    _canonicalize(copy, path)
    return copy


def _canonicalize(node: Any, path: str) -> None:
    if isinstance(node, DictConfig):
        for key in list(node.keys()):
            child = node._get_node(key)
            if key == "_target_":
                node[key] = resolve(str(node[key]), path)
            elif isinstance(child, DictConfig | ListConfig):
                _canonicalize(child, f"{path}.{key!s}")
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            _canonicalize(node._get_node(i), f"{path}[{i}]")
