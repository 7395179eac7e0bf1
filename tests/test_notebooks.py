"""Every notebook under notebooks/ runs top to bottom on a small demo run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory, telepipe_cli_module) -> Path:
    data = tmp_path_factory.mktemp("nb") / "demo"
    done = telepipe_cli_module("run", "limit.readings=200000", f"data_dir={data}")
    assert done.returncode == 0, done.stderr
    return data


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, demo_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEPIPE_DATA", str(demo_data))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(env=dict(os.environ))
