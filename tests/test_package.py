"""The package as a user gets it: a wheel built from the repo, installed in a fresh
venv, run from a directory that has nothing of the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import polars as pl
import pytest
from helpers import ROOT

import telepipe


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "Deprecat" not in log and "deprecat" not in log, log[-3000:]
    (found,) = out.glob("telepipe-*.whl")
    return found


def test_the_wheel_carries_the_config_and_every_package(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {ROOT / "conf" / n.removeprefix("telepipe/conf/") for n in names if "/conf/" in n}
    conf = {p for p in (ROOT / "conf").rglob("*") if p.suffix in (".yaml", ".xml")}
    assert conf and conf <= shipped
    for package in ("sources", "operators", "sinks", "pipelines", "conf"):
        assert f"telepipe/{package}/__init__.py" in names
    for family in ("windows", "detectors", "patterns", "runtime"):
        assert f"telepipe/operators/{family}/__init__.py" in names
    assert "telepipe/py.typed" in names
    assert wheel.name.startswith(f"telepipe-{telepipe.__version__}-")
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


@pytest.mark.timeout(1200)
def test_installed_from_the_wheel_it_runs_the_demo_from_anywhere(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    assert "Deprecat" not in install.stderr, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TELEPIPE_CONF")}
    data_dir = tmp_path / "data"

    def telepipe_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(venv / "bin" / "telepipe"), *args],
            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    version = telepipe_cli("--version")
    assert version.stdout.strip() == f"telepipe {telepipe.__version__}", version.stderr
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import telepipe.config as c; print(c.conf_dir())"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert str(venv) in where.stdout, where.stdout + where.stderr  # not the checkout's conf/
    done = telepipe_cli("run", "pipeline=demo", "limit.readings=20000", f"data_dir={data_dir}")
    assert done.returncode == 0, done.stderr
    readings = pl.read_delta(str(data_dir / "readings")).height
    late = pl.read_delta(str(data_dir / "late_readings")).height
    assert readings + late == 20_000
    assert pl.read_delta(str(data_dir / "windows"))["count"].sum() == readings
    module = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "telepipe", "validate", "pipeline=press_line"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert module.returncode == 0 and "config ok" in module.stdout, module.stderr
