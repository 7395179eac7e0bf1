"""``telepipe config``: the composed config, and what an overrides subcommand's
``--help`` lists (its config groups with their options, its keys with defaults).

    telepipe config pipeline=press_line sink=kudu
    telepipe config --config-dir ~/pipelines pipeline=mine
    telepipe config pipeline=path/to/mine.yaml
"""

from __future__ import annotations

import argparse
from typing import Any

import yaml  # type: ignore[import-untyped]


def main(args: argparse.Namespace) -> int:
    """Print the config ``run`` would use, composed and resolved, as YAML."""
    from omegaconf import OmegaConf

    from telepipe.config import load

    cfg = load(args.overrides)
    print(OmegaConf.to_yaml(cfg), end="")
    return 0


def help_epilog(config_name: str = "config") -> str:
    """The groups (options, default first marked) and the keys with their defaults of
    ``config_name``.yaml, for ``--help`` (read from the YAML: nothing composed)."""
    from telepipe.config import conf_dir

    root = conf_dir()
    try:
        top = yaml.safe_load((root / f"{config_name}.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return ""
    defaults: dict[str, str] = {}
    for entry in top.get("defaults", []):
        if isinstance(entry, dict):
            defaults.update({str(k): str(v) for k, v in entry.items()})
    lines = ["config groups (GROUP=OPTION, or pipeline=path/to/file.yaml):"]
    for group, chosen in defaults.items():
        options = sorted(p.stem for p in (root / group).glob("*.yaml"))
        shown = ", ".join(f"{o} (default)" if o == chosen else o for o in options)
        lines.append(f"  {group}: {shown}")
    lines.append("keys (KEY=VALUE; defaults shown):")
    for key, value in _leaves(top):
        lines.append(f"  {key}={_show(value)}")
    lines.append(
        "config_dir=DIR (or --config-dir DIR) adds DIR/<group>/*.yaml of your own; "
        "`telepipe config ...` prints the composed config."
    )
    return "\n".join(lines)


def _leaves(node: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in node.items():
        if key in ("defaults", "_target_"):
            continue
        if isinstance(value, dict):
            out += _leaves(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
