"""Helpers shared by the benchmarks: timing, machine description, a markdown table."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def machine() -> str:
    """One line naming the machine the figures came from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def repeat(fn: Callable[[], object], n: int) -> list[float]:
    return [timed(fn) for _ in range(n)]


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(cmd, check=True, capture_output=True, env=env)


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return (
        f"median {statistics.median(samples) * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms "
        f"(n={len(samples)})"
    )


def table(rows: list[tuple[str, str, str]]) -> str:
    lines = ["| measurement | result | target |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def start_embedded(home: Path) -> str:
    """Start an embedded server in ``home``; the conninfo of its ``postgres`` database (for
    `fresh_database`). Stop it with ``embedded.stop(home)``."""
    from lora_tracker import embedded

    embedded.start(home)
    info = embedded.read_postmaster_pid(embedded.pgdata_path(home))
    assert info is not None
    return embedded.conninfo_for(info, "postgres")


def spread(samples: list[float], unit: str = "s") -> str:
    """``median 0.62 s (0.58-0.66 s, n=9)``."""
    return (f"median {statistics.median(samples):.2f} {unit} "
            f"({min(samples):.2f}-{max(samples):.2f} {unit}, n={len(samples)})")  # fmt: skip


def fresh_database(admin: str, name: str) -> str:
    """A new database ``name`` on the server ``admin`` reaches, with lora-tracker's schema."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from psycopg.rows import dict_row

    from lora_tracker.migrations import migrate

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(admin)
    params["dbname"] = name
    url = make_conninfo(**params)  # type: ignore[arg-type]
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        migrate(conn)
    return url
