"""Hydra configuration: compose ``conf/config.yaml`` with overrides, build leaves.

Every failure becomes a ``ConfigError`` whose message is one line naming the
key, so the CLI can print it and exit 2 without a traceback. Leaves are built
one at a time (``build(node, "source")``), never the whole graph at once; a
leaf whose ``_target_`` is a dataclass is first merged into its structured
schema, which rejects unknown keys and values of the wrong type.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.resources
import os
import re
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from telepipe.errors import ConfigError, TelepipeError
from telepipe.targets import PLUGIN_GROUP as PLUGIN_GROUP
from telepipe.targets import TelepipeDeprecationWarning as TelepipeDeprecationWarning
from telepipe.targets import canonical_copy, check_tree
from telepipe.top_level import check_top_level


def conf_dir() -> Path:
    """The Hydra config root: ``TELEPIPE_CONF`` if set, else the package's own
    ``telepipe.conf`` (YAML and SBE XML shipped in the wheel)."""
    env = os.environ.get("TELEPIPE_CONF")
    if env:
        return Path(env).resolve()
    return Path(str(importlib.resources.files("telepipe.conf"))).resolve()


if not OmegaConf.has_resolver("telepipe.conf"):
    OmegaConf.register_new_resolver("telepipe.conf", lambda: str(conf_dir()))


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    if error.__cause__ is not None:
        text += "\n" + str(error.__cause__)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    full_key = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("full_key:")), "")
    head = lines[0] if lines else type(error).__name__
    # A sentence wrapped over lines (Hydra's target policy) is one line here, shortened.
    for line in lines[1:]:
        if head.endswith((".", ":")) or _DETAIL.match(line):
            break
        head += " " + line
    head = head if len(head) <= 200 else head[:197] + "..."

    if "is not in struct" in text or "not in '" in text:
        key = full_key or head
        return (
            f"unknown config key '{key}' (to add a key that is not in the config, use +{key}=...)"
        )
    if full_key and full_key not in head:
        return f"{full_key}: {head}"
    missing = re.search(r"Could not find '([\w/]+)/([^'/]+)'", head)
    if missing:
        group, name = missing.groups()
        available = sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))
        return f"{group}={name}: no such option (available: {', '.join(available)})"
    return head


_DETAIL = re.compile(r"^(full_key|object_type|reference_type|key|value)\b")


def _quote_uris(override: str) -> str:
    # Aeron channels carry '=' and '?' (aeron:udp?endpoint=host:port), which Hydra's
    # override grammar only takes quoted; quote them so users need not.
    key, sep, value = override.partition("=")
    if sep and value.startswith("aeron") and value[:1] not in "'\"":
        return f"{key}='{value}'"
    return override


def load(overrides: list[str], config_name: str = "config") -> DictConfig:
    """Compose the config with command-line overrides (``key=value``, ``group=option``)."""
    overrides = [_quote_uris(o) for o in overrides]
    for override in overrides:
        try:
            OverridesParser.create().parse_override(override)
        except HydraException as error:
            raise ConfigError(f"bad override {override!r}: {_one_line(error)}") from None
    directory = conf_dir()
    if not (directory / f"{config_name}.yaml").is_file():
        raise ConfigError(
            f"no {config_name}.yaml in config directory {directory} (set TELEPIPE_CONF)"
        )
    try:
        with initialize_config_dir(config_dir=str(directory), version_base="1.3"):
            cfg = compose(config_name, overrides=overrides)
        _check_pipeline_node(cfg, overrides, directory)
        OmegaConf.resolve(cfg)
    except yaml.YAMLError as error:
        raise ConfigError(_yaml_line(error)) from None
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        raise ConfigError(_one_line(error)) from None
    check_tree(cfg)  # every _target_, before anything is built or created
    check_top_level(cfg)
    return cfg


def _check_pipeline_node(cfg: DictConfig, overrides: list[str], directory: Path) -> None:
    """The selected pipeline YAML is a mapping with a name (an empty or scalar file made
    the first error an interpolation of ``pipeline.name`` that named no file)."""
    if "pipeline" not in cfg:
        return
    node = cfg._get_node("pipeline")
    if isinstance(node, DictConfig) and not node._is_none() and "name" in node:
        return
    choice = next(
        (o.split("=", 1)[1] for o in reversed(overrides) if o.startswith("pipeline=")), "demo"
    )
    raise ConfigError(
        f"pipeline={choice}: {directory / 'pipeline' / (choice + '.yaml')} must be a mapping "
        "with a name and outputs"
    )


def _yaml_line(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    if mark is None:
        return f"bad YAML: {problem}"
    return f"bad YAML in {mark.name} line {mark.line + 1} column {mark.column + 1}: {problem}"


def build(node: Any, path: str) -> Any:
    """Instantiate one leaf (a node with ``_target_``), naming ``path`` in any error."""
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(f"{path}: expected a component with a _target_, got {node!r}")
    node = canonical_copy(node, path)  # every _target_ checked, named as checked
    target_name = str(node["_target_"])
    try:
        target = _import(target_name)
    except Exception:
        raise ConfigError(f"{path}._target_: cannot import {target_name!r}") from None
    try:
        if dataclasses.is_dataclass(target) and isinstance(target, type):
            values = {k: v for k, v in node.items() if k != "_target_"}
            schema = OmegaConf.structured(target)
            _writable(schema)
            merged = OmegaConf.merge(schema, values)
            return OmegaConf.to_object(merged)
        return instantiate(node)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    except (OmegaConfBaseException, HydraException, TypeError, ValueError) as error:
        cause = error.__cause__
        if isinstance(cause, TelepipeError):  # the target's own one-line error
            message = str(cause)
            prefix = f"{path}: "
            raise ConfigError(message if message.startswith(prefix) else prefix + message) from None
        message = _one_line(error)
        if message.startswith("unknown config key '"):
            key = message.split("'")[1]
            message = f"unknown key '{key}'"
        if message.startswith(f"{path}: "):
            message = message[len(path) + 2 :]
        raise ConfigError(f"{path}: {message}") from None


def _import(name: str) -> Any:
    """The object a dotted ``_target_`` names (hydra's ``get_object`` logs its failures
    to stderr, three lines before ours)."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            found = getattr(found, attr)
        return found
    raise ImportError(name)


def _writable(node: Any) -> None:
    # Frozen dataclasses make read-only nodes at every depth; merging needs them open.
    OmegaConf.set_readonly(node, False)
    if isinstance(node, DictConfig):
        for key in node:
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                _writable(child)


def option(cfg: DictConfig, key: str) -> Any:
    """A plain value from the composed config, by dotted key (None if absent)."""
    return OmegaConf.select(cfg, key)
