"""`pip install .` (not editable) into a fresh venv gives a working `init --examples`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lora_tracker import embedded

from .conftest import ROOT

pytestmark = pytest.mark.slow  # a fresh venv and `pip install .`: ~30 s


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("lora_tracker-*.whl")
    return built


def test_wheel_ships_the_sql(wheel: Path) -> None:
    """The SQL migrations and example data are inside the wheel."""
    names = zipfile.ZipFile(wheel).namelist()
    assert "lora_tracker/sql/0001_initial_schema.sql" in names
    assert "lora_tracker/sql/example_data.sql" in names
    assert "lora_tracker/dashboard/page.html" in names


def test_installed_package_works_from_anywhere(tmp_path: Path) -> None:
    """A fresh venv with `pip install .` runs `init --examples` on the embedded default."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    done = subprocess.run([*pip, str(ROOT)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "LORA_TRACKER_DATABASE_URL"}
    env["LORA_TRACKER_HOME"] = str(home)
    exe = str(venv / "bin" / "lora-tracker")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    try:
        init = subprocess.run(
            [exe, "init", "--examples"],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert init.returncode == 0, init.stderr
        assert "Example data loaded" in init.stdout
        query = subprocess.run(
            [exe, "sql", "--json", "SELECT count(*) AS n FROM training_comparison"],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert json.loads(query.stdout) == [{"n": 3}]
        where = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import lora_tracker.migrations as m; print(m.sql_dir())",
            ],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert str(venv) in where.stdout, "the SQL must come from the installed wheel"
    finally:
        embedded.stop(home)
        shutil.rmtree(venv, ignore_errors=True)
