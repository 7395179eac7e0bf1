"""The layers' one rule (DESIGN.md): no module in sources/ or sinks/ imports pipelines/.
Sources and sinks are parts; pipelines assemble and run them (a sink that ran the
pipeline itself, as the dead-letter store's replay once did, is the other way round)."""

from __future__ import annotations

import ast

import pytest
from helpers import ROOT

FORBIDDEN = "telepipe.pipelines"


def imported_modules(text: str, package: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in a module of ``package`` (``telepipe.sinks``),
    inside functions too; relative imports resolved, ``from a import b`` also as ``a.b``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{module}" if module else base
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def forbidden(name: str) -> bool:
    return name == FORBIDDEN or name.startswith(FORBIDDEN + ".")


@pytest.mark.parametrize("folder", ["sources", "sinks"])
def test_no_source_or_sink_imports_pipelines(folder: str) -> None:
    modules = sorted((ROOT / folder).rglob("*.py"))
    assert modules
    offending = []
    for path in modules:
        parts = path.relative_to(ROOT).with_suffix("").parts
        package = ".".join(["telepipe", *parts[:-1]])
        for line, name in imported_modules(path.read_text(), package):
            if forbidden(name):
                offending.append(f"{path.relative_to(ROOT)}:{line}: imports {name}")
    assert not offending, "\n".join(offending)


@pytest.mark.parametrize(
    "source",
    [
        "import telepipe.pipelines.runner",
        "from telepipe.pipelines import runner",
        "from telepipe import pipelines",
        "def f():\n    from telepipe.pipelines.runner import run",
        "from ..pipelines import runner",
        "from .. import pipelines",
    ],
)
def test_the_check_sees_every_form_of_import(source: str) -> None:
    names = [name for _, name in imported_modules(source, "telepipe.sinks")]
    assert any(forbidden(n) for n in names)
    assert not any(forbidden(n) for _, n in imported_modules("import telepipe.sbe", "x"))
