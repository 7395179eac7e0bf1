"""Every notebook under notebooks/ runs top to bottom on a small demo run and its capture,
and the ones that draw show their figures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("matplotlib", reason="the notebooks extra: pip install -e '.[notebooks]'")

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory, telepipe_cli_module) -> tuple[Path, Path]:
    """A small demo run's data dir, and the capture of what it read plus a second, shorter
    run (two Aeron sessions in one capture)."""
    base = tmp_path_factory.mktemp("nb")
    data, capture = base / "demo", base / "capture"
    for n, into in [(200_000, data), (50_000, base / "second")]:
        done = telepipe_cli_module(
            "run", f"limit.readings={n}", f"data_dir={into}", f"capture_dir={capture}", "ui=never"
        )
        assert done.returncode == 0, done.stderr
    return data, capture


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(
    path: Path, demo_data: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, capture = demo_data
    monkeypatch.setenv("TELEPIPE_DATA", str(data))
    monkeypatch.setenv("TELEPIPE_CAPTURE", str(capture))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(env=dict(os.environ))
    if any("matplotlib" in cell.source for cell in notebook.cells if cell.cell_type == "code"):
        figures = [
            output
            for cell in notebook.cells
            for output in cell.get("outputs", [])
            if "image/png" in output.get("data", {})
        ]
        assert figures, f"{path.name} draws with matplotlib but shows no figure"
