"""The exit path (a short script's last events written or spooled at interpreter exit) with
the oldest dependency versions pyproject.toml allows, and with filelock 4.0.8, which imports
``concurrent.futures`` when the spool is first used (issue 17: at exit, that import failed
and the events were lost); and the events' way to the spool and back with those versions."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from .conftest import ROOT, rows

# the dependencies the exit path runs through, installed at these versions in a venv that
# borrows everything else from this one
EXIT_PATH_DEPENDENCIES = ("psycopg", "pydantic", "filelock", "safetensors", "platformdirs")

SCRIPT = textwrap.dedent(
    """
    import sys
    import lora_tracker

    run = lora_tracker.start_run("short_script", {"rank": 4, "hub_token": "hf_x"},
                                 database_url=sys.argv[1])
    run.log_epoch(1, loss=0.5)
    run.finish()
    """
)


def _lower_bounds() -> list[str]:
    text = (ROOT / "pyproject.toml").read_text()
    found = []
    for name in EXIT_PATH_DEPENDENCIES:
        match = re.search(rf'"{name}(\[\w+\])?>=([\w.]+)', text)
        assert match, f"{name} has no lower bound in pyproject.toml"
        found.append(f"{name}{match[1] or ''}=={match[2]}")
    return found


def _venv(where: Path, requirements: list[str]) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    python = where / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # this venv's packages come after the pinned ones
    Path(site, "zz_borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "--no-deps", *requirements],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if done.returncode != 0:
        if os.environ.get("CI"):
            raise AssertionError(done.stderr)
        pytest.skip(f"cannot install {requirements}: {done.stderr.strip()[-200:]}")
    return python


@pytest.fixture(scope="module", params=["lower-bounds", "filelock-4.0.8"])
def old_python(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    requirements = _lower_bounds()
    if request.param == "filelock-4.0.8":
        requirements = [r for r in requirements if not r.startswith("filelock")]
        requirements.append("filelock==4.0.8")
    if any(r.startswith("psycopg[binary]") for r in requirements):
        version = next(r for r in requirements if r.startswith("psycopg"))
        requirements.append("psycopg-binary==" + version.split("==")[1])
    if any(r.startswith("pydantic==") for r in requirements):
        requirements.append("pydantic-core")  # resolved below to the one that pydantic pins
    return _venv(tmp_path_factory.mktemp(request.param), _with_pydantic_core(requirements))


def _with_pydantic_core(requirements: list[str]) -> list[str]:
    """pydantic pins its pydantic-core exactly: ask pip for that one (and nothing else)."""
    pins = {"2.5": "2.14.1", "2.5.0": "2.14.1"}
    pydantic = next((r.split("==")[1] for r in requirements if r.startswith("pydantic==")), "")
    kept = [r for r in requirements if r != "pydantic-core"]
    if pydantic:
        assert pydantic in pins, f"add pydantic {pydantic}'s pydantic-core pin here"
        kept.append(f"pydantic-core=={pins[pydantic]}")
    return kept


def _run(python: Path, url: str, home: Path) -> subprocess.CompletedProcess[str]:
    script = home / "short.py"
    home.mkdir(parents=True, exist_ok=True)
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LORA_TRACKER_HOME": str(home)}
    return subprocess.run(
        [str(python), str(script), url], env=env, capture_output=True, text=True, timeout=120
    )


def test_events_written_at_exit(old_python: Path, tmp_path: Path, db_url: str) -> None:
    """A script that ends right after finish(): its events are in the database."""
    done = _run(old_python, db_url, tmp_path / "home")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr, done.stderr
    run = rows(db_url, "SELECT run_name, status, config FROM training_runs")
    assert [(r["run_name"], r["status"]) for r in run] == [("short_script", "completed")]
    assert run[0]["config"]["hub_token"] == "***"
    assert len(rows(db_url, "SELECT * FROM epoch_results")) == 1


def test_events_spooled_at_exit(old_python: Path, tmp_path: Path) -> None:
    """The database down: the same events wait in the spool, none lost."""
    home = tmp_path / "home"
    done = _run(old_python, "postgresql://nobody:pw@127.0.0.1:1/none", home)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = (home / "spool" / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == [
        "run_started", "epoch_logged", "run_finished",
    ]  # fmt: skip


ROUND_TRIP = textwrap.dedent(
    """
    import sys, warnings
    from pathlib import Path
    warnings.simplefilter("error")  # a serializer warning is a failure here
    from lora_tracker.capture import events as E
    from lora_tracker.capture.delivery import _identity

    made = [
        E.observe_checkpoint(Path(sys.argv[1])),
        E.validated(E.RunStarted, run_key="k", fields={"network_dim": 8},
                    config={"hub_token": "hf_x"}),
        E.validated(E.EpochLogged, run_key="k", epoch="2", loss=0.5),
        E.validated(E.RunFinished, run_key="k", status="failed", failure_reason="boom"),
        E.CheckpointRemoved(path="/gone.safetensors"),
    ]
    for event in made:
        line = E.event_to_json(event)
        assert E.event_from_json(line) == event, line
        assert "hf_x" not in line and len(_identity(event)) == 64
    print("round trip", len(made), made[2].epoch)
    """
)


def test_events_round_trip_the_spool_without_warnings(old_python: Path, tmp_path: Path) -> None:
    """The events are dataclasses that pydantic writes to the spool and reads back (issue
    14): with the oldest pydantic too, every kind goes out and comes back equal, without a
    warning on the way (pydantic 2.5 warned when the union of the events serialized one)."""
    from .kohya_sim import KohyaRun

    sim = KohyaRun(tmp_path / "out", epochs=1, save_last_n=None)
    sim.run()
    script = tmp_path / "round_trip.py"
    script.write_text(ROUND_TRIP)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LORA_TRACKER_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [str(old_python), str(script), str(sim.written[0])],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "round trip 5 2"
