"""Hydra configuration: compose ``conf/config.yaml`` with overrides, build leaves.

Every failure becomes a ``ConfigError`` whose message is one line naming the
key, so the CLI can print it and exit 2 without a traceback. Leaves are built
one at a time (``build(node, "source")``), never the whole graph at once; a
leaf whose ``_target_`` is a dataclass is first merged into its structured
schema, which rejects unknown keys and values of the wrong type.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata
import importlib.resources
import os
import re
import tempfile
from collections.abc import Sequence
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
        overridden = re.search(r"Could not override '([^']+)'", text)
        key = overridden.group(1) if overridden else (full_key or head)
        return f"unknown config key '{key}'"
    if full_key and full_key not in head:
        return f"{full_key}: {head}"
    missing = re.search(r"Could not find '([\w/]+)/([^'/]+)'", head)
    if missing:
        group, name = missing.groups()
        listed = re.search(r"Available options in '[^']+':\n((?:\t.*\n?)*)", str(error))
        if listed:
            available = sorted(o.strip() for o in listed.group(1).splitlines() if o.strip())
        else:
            available = sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))
        close = difflib.get_close_matches(name, available, n=1, cutoff=0.6)
        hint = f"did you mean {group}={close[0]}? " if close else ""
        return f"{group}={name}: no such option ({hint}available: {', '.join(available)})"
    return head


# Where a key that is not in the config means something once added (Hydra's +key=):
# a new output, a step of an output, a publisher, an output's inputs.
_ADDABLE = {"pipeline.outputs": (3, 4), "pipeline.publish": (3,), "pipeline.inputs": (3,)}


def _keys(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a composed config (mappings only, not list items)."""
    keys: list[str] = []
    if isinstance(node, DictConfig):
        for key in node:
            path = f"{prefix}{key!s}"
            keys.append(path)
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                keys += _keys(child, path + ".")
    return keys


def unknown_key_hint(key: str, cfg: DictConfig | None) -> str:
    """What to say of an unknown key: the existing keys it is close to ("did you mean"),
    else ``+key=`` where Hydra would add it and telepipe would use it, else the keys
    that are there."""
    keys = _keys(cfg) if cfg is not None else []
    parent = key.rpartition(".")[0]
    siblings = [k for k in keys if k.rpartition(".")[0] == parent]
    names = {k.rpartition(".")[2]: k for k in siblings}
    close = [names[n] for n in difflib.get_close_matches(key.rpartition(".")[2], names, 3, 0.6)]
    if not siblings:  # a typo higher up (limt.readings): the closest key as deep
        deep = [k for k in keys if k.count(".") == key.count(".")]
        close = difflib.get_close_matches(key, deep, n=1, cutoff=0.8)
    if close:
        return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    parts = key.split(".")
    if len(parts) in _ADDABLE.get(".".join(parts[:2]), ()):
        return f"to add it to the pipeline, use +{key}=..."
    if siblings:
        shown = ", ".join(k.rpartition(".")[2] for k in siblings[:12])
        return f"keys there: {shown}{', ...' if len(siblings) > 12 else ''}"
    return "not a key telepipe reads"


_DETAIL = re.compile(r"^(full_key|object_type|reference_type|key|value)\b")


def _quote_uris(override: str) -> str:
    # Aeron channels carry '=' and '?' (aeron:udp?endpoint=host:port), which Hydra's
    # override grammar only takes quoted; quote them so users need not.
    key, sep, value = override.partition("=")
    if sep and value.startswith("aeron") and value[:1] not in "'\"":
        return f"{key}='{value}'"
    return override


#: The pipeline YAML file the last ``load`` composed (None: a packaged pipeline), for
#: errors found later in its nodes (``where``).
last_pipeline_file: Path | None = None

_FILE_OPTION = "file__"  # the option name a pipeline=path/to/x.yaml is composed as


def load(
    overrides: list[str], config_name: str = "config", config_dirs: Sequence[str] = ()
) -> DictConfig:
    """Compose the config with command-line overrides (``key=value``, ``group=option``).

    ``config_dirs`` (and ``config_dir=DIR`` overrides) add directories of the user's
    own to Hydra's search path, after the packaged config: ``DIR/pipeline/x.yaml`` is
    ``pipeline=x``, ``DIR/operator/...`` likewise. ``pipeline=path/to/x.yaml`` (a
    value ending in .yaml/.yml or holding a /) composes that file as the pipeline."""
    global last_pipeline_file
    overrides = [_quote_uris(o) for o in overrides]
    dirs = [*config_dirs, *(o.split("=", 1)[1] for o in overrides if o.startswith("config_dir="))]
    overrides = [o for o in overrides if not o.startswith("config_dir=")]
    for override in overrides:
        try:
            OverridesParser.create().parse_override(override)
        except HydraException as error:
            raise ConfigError(f"bad override {override!r}: {_one_line(error)}") from None
    for extra in dirs:
        if not Path(extra).expanduser().is_dir():
            raise ConfigError(f"config_dir={extra}: no such directory")
    directory = conf_dir()
    if not (directory / f"{config_name}.yaml").is_file():
        raise ConfigError(
            f"no {config_name}.yaml in config directory {directory} (set TELEPIPE_CONF)"
        )
    with tempfile.TemporaryDirectory(prefix="telepipe-conf-") as scratch:
        overrides, user_file, renames = _pipeline_path(overrides, Path(scratch))
        search = [str(Path(d).expanduser().resolve()) for d in dirs]
        if user_file is not None:
            search.append(scratch)
        if search:
            paths = ",".join(f"'file://{d}'" for d in search)
            overrides = [*overrides, f"hydra.searchpath=[{paths}]"]
        last_pipeline_file = user_file
        try:
            cfg = _compose(directory, config_name, overrides)
            if last_pipeline_file is None:
                last_pipeline_file = _pipeline_file(cfg, overrides, [str(directory), *search])
            _check_pipeline_node(cfg, overrides, last_pipeline_file)
            _check_additions(directory, config_name, overrides)
            OmegaConf.resolve(cfg)
        except yaml.YAMLError as error:
            raise ConfigError(_renamed(_yaml_line(error), renames)) from None
        except (HydraException, OmegaConfBaseException, ValueError) as error:
            message = _one_line(error)
            if message.startswith("unknown config key '"):
                key = message.split("'")[1]
                base = _base(directory, config_name, overrides, key)
                message = f"{message} ({unknown_key_hint(key, base)})"
            raise ConfigError(_renamed(message, renames)) from None
    check_tree(cfg)  # every _target_, before anything is built or created
    check_top_level(cfg)
    return cfg


def _compose(directory: Path, config_name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(directory), version_base="1.3"):
        return compose(config_name, overrides=overrides)


def _base(directory: Path, config_name: str, overrides: list[str], key: str) -> DictConfig | None:
    """The config without the override of ``key`` (what "did you mean" looks in)."""
    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    try:
        return _compose(directory, config_name, rest)
    except Exception:
        return None


def _check_additions(directory: Path, config_name: str, overrides: list[str]) -> None:
    """A ``+key=`` only where telepipe reads what it adds: in the pipeline (an output, a
    step, a publisher, inputs) or in a component (its ``_target_`` refuses what it does
    not take); anywhere else Hydra would add a key nothing reads (``+limt.readings=1``)."""
    added = [o.split("=", 1)[0].lstrip("+") for o in overrides if o.startswith("+")]
    added = [k for k in added if k and not k.startswith("hydra.")]
    if not added:
        return
    base = _compose(directory, config_name, [o for o in overrides if not o.startswith("+")])
    for key in added:
        parts = key.split(".")
        node: Any = base
        depth = 0
        while depth < len(parts) and isinstance(node, DictConfig) and parts[depth] in node:
            node = node._get_node(parts[depth])
            depth += 1
        if depth == len(parts):
            continue  # there already: Hydra sets it
        where = ".".join(parts[:depth])
        if isinstance(node, DictConfig) and "_target_" in node:
            continue
        if len(parts) in _ADDABLE.get(".".join(parts[:2]), ()) or where.startswith("pipeline."):
            continue
        raise ConfigError(f"unknown config key '{key}' ({unknown_key_hint(key, base)})")


def _pipeline_path(
    overrides: list[str], scratch: Path
) -> tuple[list[str], Path | None, dict[str, str]]:
    """``pipeline=path/to/x.yaml``: the file linked into ``scratch/pipeline/`` and
    selected by that name; what to write instead of the link's path in errors."""
    out, user_file, renames = [], None, {}
    for override in overrides:
        key, _, value = override.partition("=")
        if key == "pipeline" and (value.endswith((".yaml", ".yml")) or "/" in value):
            path = Path(value).expanduser().resolve()
            if not path.is_file():
                raise ConfigError(f"pipeline={value}: no such file")
            name = _FILE_OPTION + re.sub(r"\W", "_", path.stem)
            (scratch / "pipeline").mkdir(exist_ok=True)
            (scratch / "pipeline" / f"{name}.yaml").symlink_to(path)
            user_file = path
            renames = {str(scratch / "pipeline" / f"{name}.yaml"): str(path)}
            renames[f"pipeline={name}"] = f"pipeline={value}"
            override = f"pipeline={name}"
        out.append(override)
    return out, user_file, renames


def _renamed(message: str, renames: dict[str, str]) -> str:
    for old, new in renames.items():
        message = message.replace(old, new)
    return message


def _pipeline_choice(overrides: list[str]) -> str:
    return next(
        (o.split("=", 1)[1] for o in reversed(overrides) if o.startswith("pipeline=")), "demo"
    )


def _pipeline_file(cfg: DictConfig, overrides: list[str], search: list[str]) -> Path | None:
    """The YAML file of the selected pipeline: the first of the search path holding it."""
    choice = _pipeline_choice(overrides)
    for directory in search:
        path = Path(directory) / "pipeline" / f"{choice}.yaml"
        if path.is_file():
            return path.resolve()
    return None


def where(message: str) -> str:
    """``message`` with the user's pipeline file (and line) when it is about a
    ``pipeline.`` key of a pipeline YAML the last ``load`` composed from a file of
    the user's (``pipeline=path`` or a ``config_dir``), else unchanged."""
    path = last_pipeline_file
    if path is None or not message.startswith("pipeline.") or _is_packaged(path):
        return message
    key = message.split(":", 1)[0].split(" ", 1)[0]
    line = _line_of(path, key.split(".")[1:])
    at = f"{path} line {line}" if line else str(path)
    return f"{message} (in {at})"


def _is_packaged(path: Path) -> bool:
    try:
        path.relative_to(conf_dir())
    except ValueError:
        return False
    return True


def _line_of(path: Path, keys: list[str]) -> int | None:
    """The line of the deepest of ``keys`` (a path of mapping keys) found in the YAML."""
    try:
        node = yaml.compose(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    line = None
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            break
        found = next(((k, v) for k, v in node.value if getattr(k, "value", None) == key), None)
        if found is None:
            break
        line, node = found[0].start_mark.line + 1, found[1]
    return line


def _check_pipeline_node(cfg: DictConfig, overrides: list[str], path: Path | None) -> None:
    """The selected pipeline YAML is a mapping with a name (an empty or scalar file made
    the first error an interpolation of ``pipeline.name`` that named no file)."""
    if "pipeline" not in cfg:
        return
    node = cfg._get_node("pipeline")
    if isinstance(node, DictConfig) and not node._is_none() and "name" in node:
        return
    raise ConfigError(
        f"pipeline={_pipeline_choice(overrides)}: {path} must be a mapping with a name and outputs"
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
